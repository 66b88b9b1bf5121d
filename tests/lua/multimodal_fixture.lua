-- multimodal_fixture.lua - the tiny models of tests/fixtures/multimodal.txt
-- (made by make_multimodal.py) for the specs of MVAE, MMVAE, MoPoE and the
-- gated-fusion VAE. Not a spec; specs load it with
--   local MF = dofile("tests/lua/multimodal_fixture.lua")
local tide = require("tide")
local MM = require("tide.models.multimodal")
local fixture = dofile("tests/lua/fixture.lua")

local has_luassert, luassert = pcall(require, "luassert")
local assert = has_luassert and luassert or assert

local F = {fixture = fixture}
F.B, F.D = 4, 3
local DIMS = {6, 3, 2}
local LIK = {"bernoulli", "categorical", "laplace"}
local LAMBDA = {1, 2, 1}

-- the modalities of the fixture: encoder Flatten-Linear(n,5)-ReLU + heads
-- Linear(5,3); decoder Linear(3,5)-ReLU-Linear(5,n)
function F.modalities(M)
  local mods = {}
  for m = 1, M do
    mods[m] = {name = "x" .. m, encoder = MM.MLPEncoder(DIMS[m], {5}, F.D),
               decoder = MM.mlp_decoder(F.D, {5}, DIMS[m]), likelihood = LIK[m], lambda = LAMBDA[m]}
  end
  return mods
end

-- The case's tensors: {xs = {...}, eps =, mask =, index =, loss =, ...}
function F.case(name)
  local c = fixture.load("multimodal")[name]
  assert(c, "no fixture case " .. name)
  local xs = {}
  for m = 1, 3 do xs[m] = c["x" .. m] end
  return c, xs
end

-- copies the case's parameters into the model (every parameter must be there)
function F.load_params(model, c)
  local n = 0
  for name, p in model:named_parameters() do
    local t = c[name]
    assert(t, "fixture has no parameter " .. name)
    p:copy_(t)
    n = n + 1
  end
  return n
end

-- compares every parameter's gradient with grad.<name>
function F.check_grads(model, c, tol, what)
  tol = tol or 2e-4
  for name, p in model:named_parameters() do
    fixture.assert_close(p:grad(), c["grad." .. name], tol, tol, (what or "") .. " grad " .. name)
  end
end

-- true when every parameter tensor of module m has a non-zero gradient
function F.all_nonzero(model)
  local bad = {}
  for name, p in model:named_parameters() do
    local g = p:grad()
    if not g or g:abs():sum():item() == 0 then bad[#bad + 1] = name end
  end
  return #bad == 0, table.concat(bad, ", ")
end

-- random inputs of the fixture's shapes
function F.random_inputs(M, B)
  B = B or F.B
  local xs = {tide.rand(B, 6), tide.one_hot(tide.ones(B), 3), tide.randn(B, 2)}
  local out = {}
  for m = 1, M do out[m] = xs[m] end
  return out
end

return F
