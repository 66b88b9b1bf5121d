-- MMVAE (tide.models.mmvae): the looser IWAE bound and the DReG gradients
-- against PyTorch (tests/fixtures/multimodal.txt, make_multimodal.py),
-- masks, gradients.
local tide = require("tide")
local MMVAE = require("tide.models.mmvae")
local MF = dofile("tests/lua/multimodal_fixture.lua")
local fixture = MF.fixture

local function loaded(case, M)
  local c, xs = MF.case(case)
  local model = MMVAE(MF.modalities(M), {zdim = MF.D, K = 2})
  MF.load_params(model, c)
  return model, c, xs
end

describe("MMVAE", function()
  it("looser IWAE (K = 2) matches PyTorch: loss and every gradient", function()
    local model, c, xs = loaded("mmvae_iwae", 2)
    local loss = model(xs, {eps = c.eps})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "iwae loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "iwae")
  end)

  it("DReG: the bound's value and Shi's hooked surrogate's gradients match PyTorch", function()
    local model, c, xs = loaded("mmvae_dreg", 2)
    model:zero_grad()
    local value = model:dreg_backward(xs, {eps = c.eps})
    fixture.assert_near(-value, c.bound:item(), 1e-4, 1e-4, "dreg bound")
    MF.check_grads(model, c, 2e-4, "dreg")
  end)

  it("DReG changes the encoders' gradients, not the decoders'", function()
    -- the decoders get sum_k wt d lw under both estimators; the encoders do not
    local model, c, xs = loaded("mmvae_dreg", 2)
    model:zero_grad()
    model:dreg_backward(xs, {eps = c.eps})
    local _, gdec = model.decoders:flat_parameters()
    local enc_d, dec_d = select(2, model.encoders:flat_parameters()):clone(), gdec:clone()
    model:zero_grad()
    model(xs, {eps = c.eps}):backward()
    local enc_i, dec_i = select(2, model.encoders:flat_parameters()), select(2, model.decoders:flat_parameters())
    assert.is_true((enc_d - enc_i):abs():max():item() > 1e-4)
    fixture.assert_close(dec_d, dec_i, 1e-5, 1e-4, "decoder gradients")
  end)

  it("3 modalities with a mask: mixture over the present experts, IWAE and DReG match PyTorch", function()
    local model, c, xs = loaded("mmvae3_mask", 3)
    local loss = model(xs, {eps = c.eps, mask = c.mask})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "mask loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "mask")
    local m2, c2, xs2 = loaded("mmvae3_dreg_mask", 3)
    m2:zero_grad()
    m2:dreg_backward(xs2, {eps = c2.eps, mask = c2.mask})
    MF.check_grads(m2, c2, 2e-4, "dreg mask")
  end)

  it("a missing modality's data changes neither the posterior nor the bound", function()
    tide.manual_seed(11)
    local model = MMVAE(MF.modalities(3), {zdim = MF.D, K = 3})
    local xs = MF.random_inputs(3)
    local mask = tide.from_table{{1, 1, 1, 1}, {1, 0, 1, 0}, {0, 0, 1, 1}}
    local eps = tide.randn(3, 3, MF.B, MF.D)
    local l1 = model(xs, {mask = mask, eps = eps}):item()
    local mu, lv = model:posterior(xs, mask)
    local ys = {xs[1], tide.one_hot(tide.zeros(MF.B), 3), tide.randn(MF.B, 2) * 5}
    ys[2] = tide.cat({xs[2]:narrow(1, 1, 1), ys[2]:narrow(1, 2, 1), xs[2]:narrow(1, 3, 1), ys[2]:narrow(1, 4, 1)}, 1)
    ys[3] = tide.cat({ys[3]:narrow(1, 1, 2), xs[3]:narrow(1, 3, 2)}, 1)
    fixture.assert_near(model(ys, {mask = mask, eps = eps}):item(), l1, 1e-6, 1e-6, "bound")
    local mu2, lv2 = model:posterior(ys, mask)
    fixture.assert_close(mu2, mu, 1e-7, 1e-6, "posterior mean")
    fixture.assert_close(lv2, lv, 1e-7, 1e-6, "posterior logvar")
  end)

  it("gradients reach every expert and decoder (IWAE and DReG)", function()
    tide.manual_seed(12)
    local model = MMVAE(MF.modalities(3), {zdim = MF.D, K = 2})
    local xs = MF.random_inputs(3)
    model:zero_grad()
    model(xs):backward()
    local ok, bad = MF.all_nonzero(model)
    assert.is_true(ok, "iwae, no gradient: " .. bad)
    model:zero_grad()
    model:dreg_backward(xs)
    ok, bad = MF.all_nonzero(model)
    assert.is_true(ok, "dreg, no gradient: " .. bad)
  end)

  it("the bound tightens with K on average (IWAE)", function()
    tide.manual_seed(13)
    local model = MMVAE(MF.modalities(2), {zdim = MF.D})
    local xs = MF.random_inputs(2, 16)
    local function bound(K)
      local s = 0
      for _ = 1, 20 do s = s - tide.no_grad(function() return model(xs, {K = K}) end):item() end
      return s / 20
    end
    assert.is_true(bound(20) > bound(1))
  end)
end)
