-- The tide side of the mvae benchmark (see mvae.py for the same model in
-- PyTorch): one training step (forward, backward, Adam) of the MVAE of
-- tide.models.mvae on image + label, batch 128, 2 threads:
--   image  encoder 784-512-512 -> 20 (mu, logvar), decoder 20-512-512-784, Bernoulli
--   label  encoder 10-64-64 -> 20, decoder 20-64-64-10, categorical
--   product of experts with the prior expert; loss = -(ELBO(x, y) + ELBO(x) + ELBO(y))
-- Prints tide_ms=<median> tide_peak_mb=<VmHWM>.
--   TIDE_LIB=build/libtide.so luajit bench/mvae.lua [steps | profile]
-- (steps: print the loss after that many steps, no timing; profile: the
-- time of each phase of the step; BENCH_THREADS=n changes the 2 threads)
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. here .. "/../bindings/?.lua;" .. package.path
local tide = require("tide")
local optim = tide.optim
local MM = require("tide.models.multimodal")
local MVAE = require("tide.models.mvae")

tide.set_num_threads(tonumber(os.getenv("BENCH_THREADS") or 2))
local B, Z = 128, 20

local T = dofile(here .. "/timing.lua")
local now_ms, median_ms, median, peak_mb = T.now_ms, T.median_ms, T.median, T.peak_mb

tide.manual_seed(0)
local model = MVAE({
  {name = "image", encoder = MM.MLPEncoder(784, {512, 512}, Z), decoder = MM.mlp_decoder(Z, {512, 512}, 784),
   likelihood = "bernoulli"},
  {name = "label", encoder = MM.MLPEncoder(10, {64, 64}, Z), decoder = MM.mlp_decoder(Z, {64, 64}, 10),
   likelihood = "categorical"},
}, {zdim = Z})
local opt = optim.Adam(model, {lr = 1e-3})
local x = tide.rand(B, 784)
local y = tide.one_hot(tide.categorical(tide.full(10, 0.1), B), 10)
local xs = {x, y}

local function step()
  opt:zero_grad()
  local loss = model(xs)
  loss:backward()
  opt:step()
  return loss
end

if arg and arg[1] == "profile" then
  -- the fastest of 41 runs of each phase (robust on a busy machine):
  -- encoders alone, the forward (recording the graph), forward + backward,
  -- the whole step; differences give backward and Adam + zero_grad
  local function min_ms(fn)
    for _ = 1, 5 do fn() end
    local best = math.huge
    for _ = 1, 41 do
      local s = now_ms()
      fn()
      best = math.min(best, now_ms() - s)
    end
    return best
  end
  local enc = min_ms(function() model:encode(xs) end)
  local fwd = min_ms(function() model(xs) end)
  local fb = min_ms(function() opt:zero_grad() model(xs):backward() end)
  local full = min_ms(step)
  print(("profile (min of 41, %d threads): encoders=%.2f forward=%.2f backward=%.2f adam+zero_grad=%.2f step=%.2f ms"):format(
    tide.get_num_threads(), enc, fwd, fb - fwd, full - fb, full))
  return
end
if arg and arg[1] then
  local loss
  for _ = 1, tonumber(arg[1]) do loss = step() end
  print(("loss=%.6f"):format(loss:item()))
  return
end
local ms = median_ms(step)
print(("tide_ms=%.4f tide_peak_mb=%.1f"):format(ms, peak_mb()))
