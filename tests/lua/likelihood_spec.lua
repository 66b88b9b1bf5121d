-- tide.metrics likelihoods (IWAE estimates, variance of log importance
-- weights) on a linear Gaussian model whose likelihoods are known in closed
-- form; the Fréchet distance and the Jacobi eigen solver on cases with known
-- answers; coherence and the linear probe on models built to be right or
-- wrong.
local tide = require("tide")
local metrics = require("tide.metrics")
local fixture = dofile("tests/lua/fixture.lua")

local LOG_2PI = math.log(2 * math.pi)

-- p(z) = N(0, 1), x_m | z ~ N(w_m z, s_m^2), m = 1, 2 (z and x_m 1-d).
-- posterior(xs, mask) is the exact p(z | x_S) (S: the rows of mask with
-- ones; the whole batch shares S here), or the prior when `prior_q` is set.
local W, S = {2.0, -0.7}, {0.5, 1.2}
local function linear_model(prior_q)
  local m = {names = {"a", "b"}, nmod = 2, zdim = 1}
  function m:posterior(xs, mask)
    local b = mask:size(2)
    if prior_q then return tide.zeros(b, 1), tide.zeros(b, 1) end
    local prec, num = 1, tide.zeros(b, 1)
    for i = 1, 2 do
      if mask:at(i, 1) > 0 then
        prec = prec + W[i] ^ 2 / S[i] ^ 2
        num = num + xs[i] * (W[i] / S[i] ^ 2)
      end
    end
    return num / prec, tide.full(b, 1, -math.log(prec))
  end
  function m:decode(i, z) return z * W[i] end
  function m:log_lik(i, params, x) return tide.normal_log_prob(x, params, S[i]):sum(-1) end
  return m
end

local function log_normal2(x1, x2, c11, c12, c22)
  local det = c11 * c22 - c12 * c12
  local q = (c22 * x1 * x1 - 2 * c12 * x1 * x2 + c11 * x2 * x2) / det
  return -LOG_2PI - 0.5 * math.log(det) - 0.5 * q
end
local function log_normal1(x, v) return -0.5 * (LOG_2PI + math.log(v) + x * x / v) end

local X1 = {{1.3}, {-0.4}, {0.2}}
local X2 = {{-0.9}, {0.5}, {2.0}}

local function exact(kind)
  local out = {}
  for n = 1, 3 do
    local a, b = X1[n][1], X2[n][1]
    local v1, v2, c = W[1] ^ 2 + S[1] ^ 2, W[2] ^ 2 + S[2] ^ 2, W[1] * W[2]
    local joint = log_normal2(a, b, v1, c, v2)
    if kind == "marginal" then out[n] = log_normal1(a, v1)
    elseif kind == "joint" then out[n] = joint
    else out[n] = joint - log_normal1(b, v2) end       -- log p(x1 | x2)
  end
  return (out[1] + out[2] + out[3]) / 3
end

describe("importance-sampled likelihoods", function()
  local xs = {tide.from_table(X1), tide.from_table(X2)}

  it("with the exact posterior: log w is log p(x) for every sample, variance 0", function()
    local m = linear_model(false)
    local r = metrics.log_likelihood(m, xs, {K = 50, chunk = 20, batch = 2, target = {1}, given = {1}, seed = 1})
    fixture.assert_near(r.ll, exact("marginal"), 1e-4, 1e-5, "marginal")
    assert.is_true(r.var < 1e-8)
    local j = metrics.log_likelihood(m, xs, {K = 30, chunk = 30, target = {1, 2}, given = {1, 2}, seed = 1})
    fixture.assert_near(j.ll, exact("joint"), 1e-4, 1e-5, "joint")
    assert.is_true(j.var < 1e-8)
    assert.same({3}, j.per_sample:shape())
  end)

  it("with the prior as proposal: IWAE-1000 is near log p(x) and the variance is positive", function()
    local m = linear_model(true)
    local r = metrics.log_likelihood(m, xs, {K = 1000, chunk = 250, target = {1}, given = {1}, seed = 2})
    fixture.assert_near(r.ll, exact("marginal"), 0.05, 0, "marginal, prior proposal")
    assert.is_true(r.var > 0.5)
    -- a bound: K = 1 (the ELBO) is lower on average
    local e = metrics.log_likelihood(m, xs, {K = 1, target = {1}, given = {1}, seed = 2})
    assert.is_true(e.ll < r.ll)
  end)

  it("conditional log p(x1 | x2) with q(z | x2) as the proposal", function()
    local m = linear_model(false)
    local r = metrics.log_likelihood(m, xs, {K = 1000, chunk = 500, target = {1}, given = {2}, seed = 3})
    fixture.assert_near(r.ll, exact("conditional"), 0.03, 0, "conditional")
    assert.is_true(r.var > 0)
    assert.has_error(function() metrics.log_likelihood(m, xs, {K = 2, target = {1}, given = {1, 2}}) end)
  end)

  it("a model's own log_weights(xs, K, cond, target) is used for the marginal and joint", function()
    local m = linear_model(false)
    local calls = {}
    function m:log_weights(xs, k, cond, target)
      calls[#calls + 1] = {k, #cond, #target}
      return tide.full(k, xs[1]:size(1), -7)
    end
    local r = metrics.log_likelihood(m, xs, {K = 10, chunk = 4, target = {1, 2}, given = {1, 2}})
    assert.equal(-7, r.ll)
    assert.same({{4, 2, 2}, {4, 2, 2}, {2, 2, 2}}, calls)
    -- the conditional does not use it
    metrics.log_likelihood(m, xs, {K = 3, target = {1}, given = {2}})
    assert.equal(3, #calls)
  end)

  it("log_mean_exp and the variance of a given weight matrix", function()
    local lw = tide.from_table{{0, 1}, {2, 1}}            -- [K=2, B=2]
    local l = metrics.log_mean_exp(lw)
    fixture.assert_near(l:at(1), math.log((1 + math.exp(2)) / 2), 1e-6, 1e-6, "lme 1")
    fixture.assert_near(l:at(2), 1, 1e-6, 1e-6, "lme 2")
    local v = metrics.log_weight_variance(lw)
    fixture.assert_near(v:at(1), 1, 1e-6, 1e-6, "var 1")
    fixture.assert_near(v:at(2), 0, 1e-6, 1e-6, "var 2")
  end)
end)

describe("Fréchet distance", function()
  it("the Jacobi solver diagonalizes a symmetric matrix", function()
    tide.manual_seed(4)
    local a = tide.randn(6, 6)
    a = a + a:t()
    local vals, vecs = metrics.sym_eigen(a)
    -- A V = V diag(vals), V orthonormal
    local av = a:matmul(vecs)
    local vl = vecs * tide.from_table(vals):reshape(1, 6)
    fixture.assert_close(av, vl, 1e-4, 1e-4, "A V = V L")
    fixture.assert_close(vecs:t():matmul(vecs), tide.one_hot(tide.arange(6), 6), 1e-5, 0, "V^T V = I")
    local tr = 0
    for i = 1, 6 do tr = tr + a:at(i, i) end
    local s = 0
    for _, v in ipairs(vals) do s = s + v end
    fixture.assert_near(s, tr, 1e-4, 1e-5, "trace")
  end)

  it("closed forms: commuting covariances, and 2x2 ones that do not commute", function()
    -- diagonal: |mu1 - mu2|^2 + sum (sqrt c1 - sqrt c2)^2
    local d = metrics.frechet_gaussians({1, 2, 3}, tide.from_table{{4, 0, 0}, {0, 1, 0}, {0, 0, 9}},
                                        {0, 2, 5}, tide.from_table{{1, 0, 0}, {0, 1, 0}, {0, 0, 4}})
    fixture.assert_near(d, 1 + 0 + 4 + 1 + 0 + 1, 1e-6, 1e-6, "diagonal")
    -- 2x2: tr sqrt(C1 C2) = sqrt(tr(C1 C2) + 2 sqrt(det C1 det C2))
    local c1 = {{2, 0.6}, {0.6, 1}}
    local c2 = {{1, -0.3}, {-0.3, 0.5}}
    local trp = c1[1][1] * c2[1][1] + c1[1][2] * c2[2][1] + c1[2][1] * c2[1][2] + c1[2][2] * c2[2][2]
    local det1 = c1[1][1] * c1[2][2] - c1[1][2] ^ 2
    local det2 = c2[1][1] * c2[2][2] - c2[1][2] ^ 2
    local want = 0.25 + 3 + 1.5 - 2 * math.sqrt(trp + 2 * math.sqrt(det1 * det2))
    local got = metrics.frechet_gaussians({0.5, 0}, tide.from_table(c1), {0, 0}, tide.from_table(c2))
    fixture.assert_near(got, want, 1e-6, 1e-6, "2x2")
    assert.equal(0, metrics.frechet_gaussians({0, 0}, tide.from_table(c1), {0, 0}, tide.from_table(c1)) > 1e-6 and 1 or 0)
  end)

  it("from features: samples of two known Gaussians", function()
    tide.manual_seed(5)
    local n = 20000
    local a = tide.randn(n, 3) * tide.from_table{1, 2, 0.5}
    local b = tide.randn(n, 3) * tide.from_table{1, 1, 0.5} + tide.from_table{1, 0, 0}
    local d = metrics.frechet_distance(a, b)
    fixture.assert_near(d, 1 + 1, 0.08, 0, "features")    -- |mu|^2 = 1, (2 - 1)^2 = 1
    fixture.assert_near(metrics.frechet_distance(a, a), 0, 1e-4, 0, "same features")
  end)
end)

describe("coherence and the linear probe", function()
  -- two label modalities (ids as floats [B]); z is 5 * one_hot(label) so
  -- generate(z, m) = argmax z recovers it. `wrong` shifts modality 2 by one.
  local function label_model(wrong)
    local m = {names = {"a", "b"}, nmod = 2, zdim = 10}
    function m:posterior(xs, mask)
      local ids = mask:at(1, 1) > 0 and xs[1] or xs[2]
      return tide.one_hot(ids, 10) * 5, tide.full(ids:size(1), 10, -20)
    end
    function m:decode_mean(i, z)
      local ids = z:argmax(2)
      if wrong and i == 2 then ids = (ids + 1) - (ids:ge(9) * 10) end
      return ids
    end
    return m
  end
  local y = tide.from_table{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 3}
  local clfs = {metrics.identity_classifier, function(ids) return tide.one_hot(ids, 10) end}

  it("conditional coherence is 1 for a right model and 0 where it is wrong", function()
    local r = metrics.coherence(label_model(false), {y, y}, y, clfs, {batch = 5})
    assert.equal(1, r.mean)
    assert.equal(1, r.by_name["a->b"])
    local w = metrics.coherence(label_model(true), {y, y}, y, clfs, {batch = 5})
    assert.equal(1, w.by_name["b->a"])
    assert.equal(0, w.by_name["a->b"])
    assert.equal(0.5, w.mean)
  end)

  it("unconditional coherence: agreement of all classifiers on prior samples", function()
    assert.equal(1, metrics.unconditional_coherence(label_model(false), clfs, 300, {seed = 1, batch = 128}))
    assert.equal(0, metrics.unconditional_coherence(label_model(true), clfs, 300, {seed = 1}))
  end)

  it("the linear probe separates separable latents and not random labels", function()
    tide.manual_seed(6)
    local function blobs(n)
      local yy = tide.from_table((function() local t = {} for i = 1, n do t[i] = (i - 1) % 3 end return t end)())
      local centers = tide.from_table{{3, 0}, {-3, 0}, {0, 3}}
      return centers:index_select(1, yy) + tide.randn(n, 2) * 0.5, yy
    end
    local ztr, ytr = blobs(300)
    local zte, yte = blobs(150)
    local acc = metrics.linear_probe(ztr, ytr, zte, yte, {steps = 150})
    assert.is_true(acc > 0.97)
    local shuffled = ytr:index_select(1, tide.randperm(300))
    local bad = metrics.linear_probe(ztr, shuffled, zte, yte, {steps = 150})
    assert.is_true(bad < 0.6)
  end)

  it("a tide classifier trains, saves, loads, and gives features for the Fréchet distance", function()
    local C = require("tide.classifier")
    tide.manual_seed(7)
    -- two classes of 28x28 images: bright left half or bright right half
    local n = 64
    local y = tide.arange(n):lt(32)
    local x = tide.rand(n, 1, 28, 28) * 0.3
    local left = tide.zeros(1, 1, 28, 28)
    left:narrow(4, 1, 14):fill(0.7)
    local right = tide.zeros(1, 1, 28, 28)
    right:narrow(4, 15, 14):fill(0.7)
    x = x + tide.where(y:reshape(n, 1, 1, 1), left, right)
    local clf = C.new{kind = "image", channels = 1, width = 4, features = 8, classes = 2}
    C.fit(clf, x, y, {epochs = 8, batch = 16, lr = 1e-2})
    assert.equal(1, C.accuracy(clf, x, y))
    local path = os.tmpname() .. ".safetensors"
    clf:save(path)
    local back = C.load(path)
    os.remove(path)
    fixture.assert_close(back:predict(x), clf:predict(x), 0, 0, "reloaded predictions")
    local f = C.features(back, x, {batch = 20})
    assert.same({n, 8}, f:shape())
    assert.is_true(metrics.fid(back, x, x) < 1e-3)
    assert.is_true(metrics.fid(back, x:narrow(1, 1, 32), x:narrow(1, 33, 32)) > 0.1)
  end)
end)
