-- MoPoE (tide.models.mopoe): the objective against PyTorch (tests/fixtures/
-- multimodal.txt, make_multimodal.py), masks, gradients.
local tide = require("tide")
local X = require("tide.models.experts")
local MoPoE = require("tide.models.mopoe")
local MF = dofile("tests/lua/multimodal_fixture.lua")
local fixture = MF.fixture

local function loaded(case)
  local c, xs = MF.case(case)
  local model = MoPoE(MF.modalities(3), {zdim = MF.D})
  MF.load_params(model, c)
  return model, c, xs
end

describe("MoPoE", function()
  it("mixture of the products of all 7 subsets matches PyTorch: loss and every gradient", function()
    local model, c, xs = loaded("mopoe3")
    local loss = model(xs, {eps = c.eps, index = c.index, beta = 0.8})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "mopoe loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "mopoe")
  end)

  it("with a mask: uniform over the subsets of the present modalities, matches PyTorch", function()
    local model, c, xs = loaded("mopoe3_mask")
    local loss = model(xs, {eps = c.eps, index = c.index, mask = c.mask})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "mopoe mask loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "mopoe mask")
  end)

  it("mixture weights: 1/7 each, or uniform over the present modalities' subsets", function()
    tide.manual_seed(14)
    local model = MoPoE(MF.modalities(3), {zdim = MF.D})
    local xs = MF.random_inputs(3)
    local _, _, w = model:subset_posteriors(xs)
    fixture.assert_close(w, tide.full(7, MF.B, 1 / 7), 1e-7, 1e-6, "weights")
    local mask = tide.from_table{{1, 1, 0, 1}, {1, 0, 1, 0}, {0, 0, 1, 1}}
    _, _, w = model:subset_posteriors(xs, mask)
    -- sample 1 has {1,2}: subsets {1}, {2}, {1,2}; sample 2 has {1}; sample 4 has {1,3}
    fixture.assert_close(w:select(2, 1), tide.from_table{1 / 3, 1 / 3, 0, 1 / 3, 0, 0, 0}, 1e-7, 1e-6, "w1")
    fixture.assert_close(w:select(2, 2), tide.from_table{1, 0, 0, 0, 0, 0, 0}, 1e-7, 1e-6, "w2")
    fixture.assert_close(w:select(2, 4), tide.from_table{1 / 3, 0, 1 / 3, 0, 1 / 3, 0, 0}, 1e-7, 1e-6, "w4")
    -- drawn subsets are always valid ones
    for _ = 1, 5 do
      local idx = X.sample_index(w)
      for b = 0, MF.B - 1 do
        assert.is_true(w.data[idx.data[b] * MF.B + b] > 0)
      end
    end
  end)

  it("a missing modality's data changes neither the posterior nor the loss", function()
    tide.manual_seed(15)
    local model = MoPoE(MF.modalities(3), {zdim = MF.D})
    local xs = MF.random_inputs(3)
    local mask = tide.from_table{{1, 1, 1, 1}, {1, 1, 1, 1}, {0, 0, 0, 0}}
    local eps = tide.randn(MF.B, MF.D)
    local idx = tide.from_table{0, 1, 3, 3}
    local l1 = model(xs, {mask = mask, eps = eps, index = idx}):item()
    local mu = model:posterior(xs, mask)
    local ys = {xs[1], xs[2], tide.randn(MF.B, 2) * 3}
    fixture.assert_near(model(ys, {mask = mask, eps = eps, index = idx}):item(), l1, 0, 0, "loss")
    fixture.assert_close(model:posterior(ys, mask), mu, 0, 0, "posterior")
    -- the posterior of the present pair is their product (no prior expert)
    local emu, elv = model:encode(xs)
    local pm = X.poe_noprior(emu:narrow(1, 1, 2), elv:narrow(1, 1, 2))
    fixture.assert_close(mu, pm, 1e-6, 1e-5, "product of the present")
  end)

  it("gradients reach every expert and decoder", function()
    tide.manual_seed(16)
    local model = MoPoE(MF.modalities(3), {zdim = MF.D})
    -- subsets {1}, {2}, {3}, {1,2,3}, {1,2} drawn: every expert gets a
    -- reconstruction gradient (5 samples: the Laplace bias gradient, a sum of
    -- signs, cannot cancel)
    model(MF.random_inputs(3, 5), {index = tide.from_table{0, 1, 2, 6, 3}}):backward()
    local ok, bad = MF.all_nonzero(model)
    assert.is_true(ok, "no gradient: " .. bad)
  end)
end)
