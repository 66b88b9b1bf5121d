-- MVAE (tide.models.mvae) and the fusion helpers it stands on
-- (tide.models.experts): the objective against PyTorch (tests/fixtures/
-- multimodal.txt, make_multimodal.py), masks, gradients.
local tide = require("tide")
local X = require("tide.models.experts")
local MVAE = require("tide.models.mvae")
local MF = dofile("tests/lua/multimodal_fixture.lua")
local fixture = MF.fixture

describe("experts", function()
  it("subsets: 2^M - 1, by size then lexicographic, min/max", function()
    local s = X.subsets(3)
    assert.are.equal(7, #s)
    assert.are.same({{1}, {2}, {3}, {1, 2}, {1, 3}, {2, 3}, {1, 2, 3}}, s)
    assert.are.equal(31, #X.subsets(5))
    assert.are.equal(20, #X.subsets(5, {min = 2, max = 3}))
    local m = X.subset_mask({{1, 3}, {2}}, 3)
    assert.are.same({{1, 0}, {0, 1}, {1, 0}}, m:to_table())
  end)

  it("poe: the closed form with the prior expert, masks drop experts", function()
    tide.manual_seed(3)
    local mu, lv = tide.randn(3, 4, 5), tide.randn(3, 4, 5)
    local m, l = X.poe(mu, lv)
    -- 1/s2 = 1 + sum_e 1/s2_e, mu = s2 sum_e mu_e/s2_e, written out
    local prec = (-lv):exp():sum(1) + 1
    fixture.assert_close(l, -prec:log(), 1e-5, 1e-5, "poe logvar")
    fixture.assert_close(m, (mu * (-lv):exp()):sum(1) / prec, 1e-5, 1e-5, "poe mean")
    -- expert 2 missing for every sample = the product of experts 1 and 3
    local mask = tide.from_table{{1}, {0}, {1}}
    local m2, l2 = X.poe(mu, lv, mask)
    local idx = tide.from_table{0, 2}
    local m3, l3 = X.poe(mu:index_select(1, idx), lv:index_select(1, idx))
    fixture.assert_close(m2, m3, 1e-6, 1e-5, "masked mean")
    fixture.assert_close(l2, l3, 1e-6, 1e-5, "masked logvar")
    -- nothing present: the prior
    local m0, l0 = X.poe(mu, lv, tide.zeros(3, 1))
    assert.are.equal(0, m0:abs():max():item())
    assert.are.equal(0, l0:abs():max():item())
  end)

  it("subset_poe equals one product per subset, with per-sample masks", function()
    tide.manual_seed(4)
    local mu, lv = tide.randn(3, 4, 2), tide.randn(3, 4, 2)
    local subs = X.subsets(3)
    local present = tide.from_table{{1, 1, 0, 1}, {1, 0, 1, 1}, {0, 1, 1, 1}}
    local fm, flv, valid = X.subset_poe(mu, lv, X.subset_mask(subs, 3), {present = present})
    for j, s in ipairs(subs) do
      local sm = tide.zeros(3, 1)
      for _, i in ipairs(s) do sm.data[i - 1] = 1 end
      local m, l = X.poe(mu, lv, sm * present)
      fixture.assert_close(fm:select(1, j), m, 1e-6, 1e-5, "subset mean " .. j)
      fixture.assert_close(flv:select(1, j), l, 1e-6, 1e-5, "subset logvar " .. j)
    end
    -- {1,2} is valid for samples 1 and 4 only; {3} for 2, 3, 4
    assert.are.same({1, 0, 0, 1}, valid:select(1, 4):to_table())
    assert.are.same({0, 1, 1, 1}, valid:select(1, 3):to_table())
  end)

  it("weighted_pool: 1/s2 = sum w/s2_e, gradient to the weights", function()
    tide.manual_seed(5)
    local mu, lv = tide.randn(3, 2, 4), tide.randn(3, 2, 4)
    local w = tide.rand(3, 2):requires_grad(true)
    local m, l = X.weighted_pool(mu, lv, w)
    local ww = w:unsqueeze(-1)
    local prec = ((-lv):exp() * ww):sum(1)
    fixture.assert_close(l, -prec:log(), 1e-5, 1e-5, "pool logvar")
    fixture.assert_close(m, (mu * (-lv):exp() * ww):sum(1) / prec, 1e-5, 1e-5, "pool mean")
    m:sum():backward()
    assert.is_true(w:grad():abs():sum():item() > 0)
  end)

  it("select, mixture_log_prob, kl, log densities", function()
    tide.manual_seed(6)
    local x = tide.randn(3, 4, 2)
    local sel = X.select(x, tide.from_table{2, 0, 1, 2})
    assert.are.same(x:select(1, 3):select(1, 1):to_table(), sel:select(1, 1):to_table())
    assert.are.same(x:select(1, 1):select(1, 2):to_table(), sel:select(1, 2):to_table())
    local mu, lv = tide.randn(3, 4, 2), tide.randn(3, 4, 2)
    local z = tide.randn(5, 4, 2)
    local lp = X.mixture_log_prob(z, mu, lv)
    -- log 1/3 sum_e N(z; mu_e, s2_e), by the definition
    local acc = 0
    for e = 1, 3 do
      acc = acc + X.log_normal(z, mu:select(1, e), lv:select(1, e)):exp()
    end
    fixture.assert_close(lp, (acc / 3):log(), 1e-5, 1e-4, "mixture")
    -- KL(N(mu, s2) || N(0, 1)) = E_q[log q - log p], closed forms agree
    local m1, l1 = tide.from_table{{0.3, -1}}, tide.from_table{{0.2, -0.5}}
    local want = 0.5 * ((math.exp(0.2) + 0.09 - 0.2 - 1) + (math.exp(-0.5) + 1 + 0.5 - 1))
    fixture.assert_near(X.kl_std_normal(m1, l1):item(), want, 1e-6, 1e-5, "kl")
    fixture.assert_near(X.log_std_normal(tide.zeros(1, 2)):item(), -math.log(2 * math.pi), 1e-6, 1e-6, "log N(0)")
  end)
end)

describe("MVAE", function()
  it("joint + unimodal ELBOs (beta 0.7) match PyTorch: loss and every gradient", function()
    local c, xs = MF.case("mvae2")
    local model = MVAE(MF.modalities(2), {zdim = MF.D})
    MF.load_params(model, c)
    local loss = model(xs, {subsets = {{1, 2}, {1}, {2}}, eps = c.eps, beta = 0.7})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "mvae2 loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "mvae2")
  end)

  it("3 modalities with a missing-modality mask and a random subset match PyTorch", function()
    local c, xs = MF.case("mvae3_mask")
    local model = MVAE(MF.modalities(3), {zdim = MF.D})
    MF.load_params(model, c)
    local loss = model(xs, {subsets = {{1, 2, 3}, {1}, {2}, {3}, {1, 3}}, eps = c.eps, mask = c.mask})
    fixture.assert_close(loss, c.loss, 1e-4, 1e-4, "mvae3_mask loss")
    loss:backward()
    MF.check_grads(model, c, 2e-4, "mvae3_mask")
  end)

  it("a missing modality's data changes neither the posterior nor the loss", function()
    tide.manual_seed(7)
    local model = MVAE(MF.modalities(3), {zdim = MF.D})
    local xs = MF.random_inputs(3)
    local mask = tide.from_table{{1, 1, 1, 1}, {0, 0, 0, 0}, {1, 0, 1, 1}}
    local eps = tide.randn(5, MF.B, MF.D)
    local subs = {{1, 2, 3}, {1}, {2}, {3}, {2, 3}}
    local mu, lv = model:posterior(xs, mask)
    local l1 = model(xs, {mask = mask, eps = eps, subsets = subs}):item()
    local ys = {xs[1], tide.one_hot(tide.zeros(MF.B), 3), xs[3]}
    local mu2, lv2 = model:posterior(ys, mask)
    fixture.assert_close(mu2, mu, 0, 0, "posterior mean")
    fixture.assert_close(lv2, lv, 0, 0, "posterior logvar")
    fixture.assert_near(model(ys, {mask = mask, eps = eps, subsets = subs}):item(), l1, 0, 0, "loss")
    -- and the data of a present modality does change it
    local zs = {xs[1], ys[2], tide.randn(MF.B, 2)}
    assert.is_true((model:posterior(zs, mask) - mu):abs():max():item() > 0)
  end)

  it("the posterior narrows as modalities are added, and is the prior with none", function()
    tide.manual_seed(8)
    local model = MVAE(MF.modalities(2), {zdim = MF.D})
    local xs = MF.random_inputs(2)
    local _, l1 = model:posterior(xs, tide.from_table{{1}, {0}})
    local _, l12 = model:posterior(xs)
    assert.is_true((l12 - l1):max():item() < 0)
    assert.is_true(l1:max():item() < 0)  -- narrower than the prior N(0, 1)
    local m0, l0 = model:posterior(xs, tide.zeros(2, 1))
    assert.are.equal(0, m0:abs():max():item() + l0:abs():max():item())
  end)

  it("gradients reach every expert and decoder; M > 2 draws random subsets", function()
    tide.manual_seed(9)
    local model = MVAE(MF.modalities(3), {zdim = MF.D, k = 1})
    local subs = model:step_subsets()
    assert.are.equal(5, #subs)                     -- joint, 3 unimodal, 1 random
    assert.are.same({1, 2, 3}, subs[1])
    assert.is_true(#subs[5] == 2)
    local loss = model(MF.random_inputs(3))
    loss:backward()
    local ok, bad = MF.all_nonzero(model)
    assert.is_true(ok, "no gradient: " .. bad)
  end)

  it("cross = true adds lambda_m log p(x_m | z_S) for the modalities outside S, masks included", function()
    tide.manual_seed(11)
    local base = MVAE(MF.modalities(2), {zdim = MF.D})
    local cross = MVAE(MF.modalities(2), {zdim = MF.D, cross = true})
    local src = {}
    for name, p in base:named_parameters() do src[name] = p end
    for name, p in cross:named_parameters() do p:copy_(src[name]) end
    local xs = MF.random_inputs(2)
    local eps = tide.randn(3, MF.B, MF.D)
    local subs = {{1, 2}, {1}, {2}}
    local mask = tide.from_table{{1, 1, 0, 1}, {1, 0, 1, 1}}
    for _, mk in ipairs{false, true} do
      local m = mk and mask or nil
      local o = {subsets = subs, eps = eps, beta = 0.7, mask = m}
      local l0, l1 = base(xs, o):item(), cross(xs, o):item()
      -- the two extra terms, from q(z | x1) and q(z | x2) written out
      local extra = tide.no_grad(function()
        local mu, lv = base:encode(xs)
        local pres = m or tide.ones(2, MF.B)
        local function z_of(j, only)
          local qm, qlv = X.poe(mu, lv, base:only(only, MF.B) * pres)
          return qm + (qlv * 0.5):exp() * eps:select(1, j)
        end
        local y_from_x = base:log_lik(2, base:decode(2, z_of(2, 1)), xs[2]) * pres:select(1, 1) * pres:select(1, 2)
        local x_from_y = base:log_lik(1, base:decode(1, z_of(3, 2)), xs[1]) * pres:select(1, 2) * pres:select(1, 1)
        return (y_from_x * base.lambdas[2] + x_from_y * base.lambdas[1]):mean():item()
      end)
      assert.is_true(math.abs(extra) > 1e-3)
      fixture.assert_near(l1, l0 - extra, 1e-4, 1e-4, "cross loss" .. (mk and " (mask)" or ""))
    end
    -- the cross terms train the encoder of one modality through the other's decoder
    cross(xs, {subsets = {{1}}, eps = eps:narrow(1, 1, 1)}):backward()
    local g = 0
    for name, p in cross:named_parameters() do
      if name:match("^decoders%.2") then g = g + p:grad():abs():sum():item() end
    end
    assert.is_true(g > 0)
  end)

  it("log_weights: [K,B], and their log-mean-exp bounds the ELBO from above on average", function()
    tide.manual_seed(10)
    local model = MVAE(MF.modalities(2), {zdim = MF.D})
    local xs = MF.random_inputs(2, 8)
    local lw = tide.no_grad(function() return model:log_weights(xs, 200) end)
    assert.are.same({200, 8}, lw:shape())
    local elbo = lw:mean(1):mean():item()
    local iwae = (lw:logsumexp(1) - math.log(200)):mean():item()
    assert.is_true(iwae >= elbo)
  end)
end)
