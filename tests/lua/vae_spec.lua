-- tide.models.vae: the ELBO, IWAE and DReG objectives and gradients against
-- PyTorch (tests/fixtures/vae.txt, made by make_vae.py) on a tiny network
-- with fixed noise, and the likelihood helpers of tide.models.nets.
local tide = require("tide")
local VAE = require("tide.models.vae")
local nets = require("tide.models.nets")
local fixture = dofile("tests/lua/fixture.lua")

local P = fixture.load("vae").params

local function tiny(likelihood, opts)
  opts = opts or {}
  local m = VAE{shape = {6}, latent = 3, hidden = {5}, likelihood = likelihood,
                scale = opts.scale, beta = opts.beta}
  local sd = {}
  for name in m:named_parameters() do sd[name] = P[name] end
  m:load_state_dict(sd)
  return m
end

-- Runs fn(model) -> objective [B], loss; compares with case `case`.
local function check(case, model, fn)
  local F = fixture.load("vae")[case]
  model:zero_grad()
  local out, loss = fn(model)
  fixture.assert_close(out, F.out, 1e-5, 1e-5, case .. " out")
  loss:backward()
  for name, p in model:named_parameters() do
    fixture.assert_close(p:grad(), F["grad." .. name], 1e-5, 1e-4, case .. " grad." .. name)
  end
end

describe("VAE objectives against PyTorch", function()
  it("ELBO with a Bernoulli likelihood (K = 1, and K = 2 with beta = 0.5)", function()
    check("bern_elbo", tiny("bernoulli"), function(m)
      local elbo = m:elbo(P.x01, {eps = P.eps1})
      return elbo, -elbo:mean()
    end)
    check("bern_elbo_beta", tiny("bernoulli", {beta = 0.5}), function(m)
      local loss, stats = m:loss(P.x01, {eps = P.eps2})
      return m:elbo(P.x01, {eps = P.eps2}), loss
    end)
  end)

  it("IWAE-4 with a Bernoulli likelihood", function()
    check("bern_iwae", tiny("bernoulli"), function(m)
      local v = m:iwae(P.x01, {eps = P.eps4})
      return v, -v:mean()
    end)
  end)

  it("DReG gradients (Bernoulli; Gaussian with beta = 0.7)", function()
    check("bern_dreg", tiny("bernoulli"), function(m)
      local s, v = m:dreg(P.x01, {eps = P.eps4})
      return v, -s:mean()
    end)
    check("gauss_dreg_beta", tiny("gaussian", {scale = 0.5, beta = 0.7}), function(m)
      local s, v = m:dreg(P.xr, {eps = P.eps3})
      return v, -s:mean()
    end)
  end)

  it("Gaussian ELBO and Laplace IWAE with a learned scale", function()
    check("gauss_elbo", tiny("gaussian", {scale = 0.5}), function(m)
      local elbo = m:elbo(P.xr, {eps = P.eps1})
      return elbo, -elbo:mean()
    end)
    check("laplace_iwae", tiny("laplace", {scale = "learn"}), function(m)
      local loss, stats = m:loss(P.xr, {objective = "iwae", eps = P.eps3})
      assert.is_true(math.abs(stats.iwae + loss:item()) < 1e-5)
      return m:iwae(P.xr, {eps = P.eps3}), loss
    end)
  end)

  it("DReG and IWAE give the same value and the same decoder gradient direction", function()
    -- the decoder's DReG gradient is the IWAE gradient (both sum_k wt_k dlog w_k)
    local a, b = tiny("bernoulli"), tiny("bernoulli")
    local s, v = a:dreg(P.x01, {eps = P.eps4})
    local w = b:iwae(P.x01, {eps = P.eps4})
    fixture.assert_close(v, w, 1e-6, 1e-6, "dreg value")
    ;(-s:mean()):backward()
    ;(-w:mean()):backward()
    fixture.assert_close(a.dec.body[3].weight:grad(), b.dec.body[3].weight:grad(), 1e-6, 1e-5, "decoder grad")
  end)

  it("log weights average to the ELBO; IWAE-K lies above it and grows with K", function()
    tide.manual_seed(3)
    local m = tiny("bernoulli")
    tide.no_grad(function()
      local lw = m:log_weights(P.x01, {K = 4000})                 -- [K,B]
      local elbo = m:elbo(P.x01, {K = 4000})                      -- closed-form KL
      fixture.assert_close(lw:mean(1), elbo, 0.05, 0, "E_q log w = ELBO")
      local i10 = lw:narrow(1, 1, 10):logsumexp(1) - math.log(10)
      local i4000 = lw:logsumexp(1) - math.log(4000)
      for b = 1, 2 do
        assert.is_true(i4000:at(b) > elbo:at(b))
        assert.is_true(i4000:at(b) > i10:at(b) - 0.02)
      end
    end)
  end)
end)

describe("VAE on images", function()
  it("trains (conv nets, DReG) and samples, reconstructs, embeds", function()
    tide.manual_seed(4)
    local m = VAE{kind = "conv", width = 4, latent = 3, objective = "dreg", K = 3}
    local x = tide.rand(4, 1, 28, 28):gt(0.8)
    local opt = tide.optim.Adam(m, {lr = 3e-3})
    local first, last
    for _ = 1, 8 do
      opt:zero_grad()
      local loss, stats = m:loss(x)
      loss:backward()
      opt:step()
      first = first or stats.iwae
      last = stats.iwae
    end
    assert.is_true(last > first)
    assert.same({2, 1, 28, 28}, m:sample(2):shape())
    assert.same({4, 1, 28, 28}, m:reconstruct(x):shape())
    assert.same({4, 3}, m:embed(x):shape())
    assert.has_error(function() VAE{likelihood = "poisson"} end)
    assert.has_error(function() VAE{objective = "wake-sleep"} end)
  end)
end)

describe("nets", function()
  it("encoders and decoders take images and K leading sample dims", function()
    for _, kind in ipairs{"mlp", "conv"} do
      local e = nets.encoder{kind = kind, shape = {3, 28, 28}, latent = 4, hidden = {16}, width = 4}
      local d = nets.decoder{kind = kind, shape = {3, 28, 28}, latent = 4, hidden = {16}, width = 4}
      local mu, lv = e(tide.rand(2, 3, 28, 28))
      assert.same({2, 4}, mu:shape())
      assert.same({2, 4}, lv:shape())
      assert.same({5, 2, 3, 28, 28}, d(tide.randn(5, 2, 4)):shape())
    end
    assert.has_error(function() nets.encoder{kind = "conv", shape = {10}} end)
  end)

  it("log_likelihood matches the distributions", function()
    local out, x = tide.randn(3, 2, 4), tide.rand(2, 4)
    local ll = nets.log_likelihood("bernoulli", out, x)
    local want = tide.distributions.Bernoulli(out):log_prob(x:expand(3, 2, 4)):sum(-1)
    fixture.assert_close(ll, want, 1e-5, 1e-5, "bernoulli")
    local lg = nets.log_likelihood("gaussian", out, x, 0.3)
    fixture.assert_close(lg, tide.distributions.Normal(out, 0.3):log_prob(x:expand(3, 2, 4)):sum(-1), 1e-4, 1e-5, "gaussian")
    -- categorical: logits [K,B,C] against ids [B]
    local ids = tide.from_table{2, 0}
    local lc = nets.log_likelihood("categorical", out, ids)
    local ls = out:log_softmax(-1)
    assert.same({3, 2}, lc:shape())
    fixture.assert_close(nets.log_likelihood("categorical", out, tide.one_hot(ids, 4)), lc, 1e-6, 1e-6, "one-hot")
    for k = 1, 3 do
      fixture.assert_near(lc:at(k, 1), ls:at(k, 1, 3), 1e-5, 1e-5, "cat")
      fixture.assert_near(lc:at(k, 2), ls:at(k, 2, 1), 1e-5, 1e-5, "cat")
    end
  end)
end)
