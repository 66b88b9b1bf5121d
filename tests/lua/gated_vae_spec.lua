-- The gated-fusion VAE (tide.models.gated_vae): the objective against
-- PyTorch (tests/fixtures/multimodal.txt, make_multimodal.py), the gate,
-- masks, gradients.
local tide = require("tide")
local X = require("tide.models.experts")
local Gated = require("tide.models.gated_vae")
local MF = dofile("tests/lua/multimodal_fixture.lua")
local fixture = MF.fixture

local function model_of(M)
  return Gated(MF.modalities(M), {zdim = MF.D, gate_hidden = {4}, joint_hidden = {5}})
end

describe("gated-fusion VAE", function()
  it("experts + joint expert, softmax gate, weighted pooling, ELBO (beta 0.9) match PyTorch", function()
    local c, xs = MF.case("gated2")
    local model = model_of(2)
    MF.load_params(model, c)
    local loss = model(xs, {eps = c.eps, beta = 0.9})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "gated loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "gated")
  end)

  it("3 modalities with a mask match PyTorch", function()
    local c, xs = MF.case("gated3_mask")
    local model = model_of(3)
    MF.load_params(model, c)
    local loss = model(xs, {eps = c.eps, beta = 0.9, mask = c.mask})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "gated mask loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "gated mask")
  end)

  it("gate weights are a softmax over M + 1 experts; a missing expert gets ~0", function()
    tide.manual_seed(17)
    local model = model_of(3)
    local xs = MF.random_inputs(3)
    local mask = tide.from_table{{1, 1, 0, 1}, {1, 0, 1, 0}, {0, 1, 1, 1}}
    local emu, elv, w = model:experts(xs, mask)
    assert.are.same({4, MF.B, MF.D}, emu:shape())
    fixture.assert_close(w:sum(1), tide.ones(MF.B), 1e-6, 1e-6, "simplex")
    local missing = (w:narrow(1, 1, 3) * (1 - mask)):max():item()
    assert.is_true(missing < 1e-20)
    -- the posterior is the pooling of the experts with those weights
    local qm, ql = model:posterior(xs, mask)
    local pm, pl = X.weighted_pool(emu, elv, w)
    fixture.assert_close(qm, pm, 0, 0, "pooled mean")
    fixture.assert_close(ql, pl, 0, 0, "pooled logvar")
  end)

  it("a missing modality's data changes neither the posterior nor the loss", function()
    tide.manual_seed(18)
    local model = model_of(3)
    local xs = MF.random_inputs(3)
    local mask = tide.from_table{{1, 1, 1, 1}, {0, 0, 0, 0}, {1, 1, 1, 1}}
    local eps = tide.randn(MF.B, MF.D)
    local l1 = model(xs, {mask = mask, eps = eps}):item()
    local mu = model:posterior(xs, mask)
    local ys = {xs[1], tide.one_hot(tide.zeros(MF.B), 3), xs[3]}
    fixture.assert_near(model(ys, {mask = mask, eps = eps}):item(), l1, 1e-6, 1e-6, "loss")
    fixture.assert_close(model:posterior(ys, mask), mu, 1e-6, 1e-6, "posterior")
  end)

  it("gradients reach every expert, the joint expert, the gate and every decoder", function()
    tide.manual_seed(19)
    local model = model_of(3)
    model(MF.random_inputs(3)):backward()
    local ok, bad = MF.all_nonzero(model)
    assert.is_true(ok, "no gradient: " .. bad)
  end)
end)
