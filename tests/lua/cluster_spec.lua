-- tide.cluster: k-means and GMM-EM against scikit-learn runs from the same
-- start (tests/fixtures/make_clustering.py -> clustering.txt), and on well
-- separated blobs made here.
local tide = require("tide")
local cluster = require("tide.cluster")
local fixture = dofile("tests/lua/fixture.lua")

local function fx(case, name) return fixture.get("clustering", case, name) end

-- True when the two label vectors are the same partition up to renaming.
local function same_partition(a, b)
  a, b = a:to_table(), b:to_table()
  if #a ~= #b then return false end
  local fwd, back = {}, {}
  for i = 1, #a do
    local x, y = a[i], b[i]
    if fwd[x] == nil and back[y] == nil then fwd[x], back[y] = y, x end
    if fwd[x] ~= y or back[y] ~= x then return false end
  end
  return true
end

-- K blobs of n points each in D dims, centers 20 apart, unit noise, in a
-- shuffled order -> x [K n, D], labels [K n].
local function blobs(k, n, d, seed)
  tide.manual_seed(seed)
  local centers = tide.randn(k, d) * 20
  local labels = tide.arange(k):reshape(k, 1):expand(k, n):reshape(-1)
  local perm = tide.randperm(k * n)
  labels = labels:index_select(1, perm)
  local x = centers:index_select(1, labels) + tide.randn(k * n, d)
  return x, labels
end

describe("cluster.kmeans", function()
  for _, case in ipairs{"km_blobs", "km_overlap"} do
    it("matches scikit-learn's Lloyd run from the same centers (" .. case .. ")", function()
      local k = fx(case, "init"):size(1)
      local km = cluster.kmeans(fx(case, "x"), k, {init = fx(case, "init")})
      fixture.assert_close(km.labels, fx(case, "labels"), 0, 0, case .. " labels")
      fixture.assert_close(km.centers, fx(case, "centers"), 1e-4, 1e-4, case .. " centers")
      fixture.assert_near(km.inertia, fx(case, "inertia"):item(), 1e-3, 1e-5, case .. " inertia")
      assert.are.equal(fx(case, "n_iter"):item(), km.n_iter)
      local again = km:predict(fx(case, "x"))
      fixture.assert_close(again, km.labels, 0, 0, case .. " predict")
    end)
  end

  it("recovers well separated blobs with k-means++ and restarts, repeatably", function()
    local x, labels = blobs(5, 60, 4, 3)
    local km = cluster.kmeans(x, 5, {n_init = 4, seed = 11})
    assert.is_true(same_partition(km.labels, labels))
    assert.are.same({5, 4}, km.centers:shape())
    local km2 = cluster.kmeans(x, 5, {n_init = 4, seed = 11})
    fixture.assert_close(km2.centers, km.centers, 0, 0, "same seed, same centers")
    -- the inertia is the sum of squared distances to the centers
    local d = (x - km.centers:index_select(1, km.labels)):square():sum():item()
    fixture.assert_near(km.inertia, d, 1e-3, 1e-5, "inertia")
  end)

  it("keeps the restart of least inertia", function()
    local x = blobs(8, 25, 2, 5)
    local one = {}
    for s = 1, 6 do one[s] = cluster.kmeans(x, 8, {n_init = 1, seed = 100 + s}).inertia end
    tide.manual_seed(101)
    local best = cluster.kmeans(x, 8, {n_init = 6})
    -- six restarts drawn in a row from seed 101: no worse than the first one
    assert.is_true(best.inertia <= one[1] + 1e-3)
    assert.is_true(best.inertia <= math.max(unpack(one)) + 1e-3)
  end)

  it("gives an empty cluster a point instead of a NaN center", function()
    -- two far groups; the third start sits far from every point, so it gets
    -- no points in the first assignment
    local x = tide.from_table{{0, 0}, {0, 1}, {1, 0}, {10, 10}, {10, 11}, {11, 10}}
    local init = tide.from_table{{0, 0.5}, {10, 10.5}, {100, 100}}
    local km = cluster.kmeans(x, 3, {init = init})
    assert.are.equal(0, km.centers:ne(km.centers):sum():item())
    local counts = {0, 0, 0}
    for _, l in ipairs(km.labels:to_table()) do counts[l + 1] = counts[l + 1] + 1 end
    assert.is_true(counts[1] > 0 and counts[2] > 0 and counts[3] > 0)
  end)

  it("rejects bad arguments with the shapes in the message", function()
    local x = tide.zeros(10, 3)
    assert.has_error(function() cluster.kmeans(tide.zeros(10), 2) end, "cluster.kmeans: x [10] must be [N,D]")
    assert.has_error(function() cluster.kmeans(x, 11) end, "cluster.kmeans: k = 11 is more than the 10 points of x")
    assert.has_error(function() cluster.kmeans(x, 2, {init = tide.zeros(2, 4)}) end,
                     "cluster.kmeans: init [2,4] must be [K,D] = [2,3]")
    assert.has_error(function() cluster.kmeans(x, 2, {ninit = 3}) end, "cluster.kmeans: unknown option 'ninit'")
  end)
end)

describe("cluster.gmm", function()
  local function check_fit(g, case)
    fixture.assert_close(g.weights, fx(case, "weights"), 1e-4, 1e-3, case .. " weights")
    fixture.assert_close(g.means, fx(case, "means"), 1e-3, 1e-3, case .. " means")
    fixture.assert_close(g.logvars, fx(case, "logvars"), 2e-3, 1e-3, case .. " logvars")
    fixture.assert_near(g.loglik, fx(case, "loglik"):item(), 1e-4, 1e-5, case .. " log-likelihood")
    assert.are.equal(fx(case, "n_iter"):item(), g.n_iter)
    assert.is_true(g.converged)
    fixture.assert_close(g.labels, fx(case, "labels"), 0, 0, case .. " labels")
  end

  it("matches scikit-learn from its k-means initialization", function()
    local case = "gmm_kmeans"
    local x = fx(case, "x")
    local g = cluster.gmm(x, 5, {kmeans = {init = fx(case, "init")}})
    check_fit(g, case)
    -- the same start given as labels
    local g2 = cluster.gmm(x, 5, {init = {labels = fx(case, "km_labels")}})
    check_fit(g2, case)
  end)

  it("matches scikit-learn from given parameters", function()
    local case = "gmm_given"
    local g = cluster.gmm(fx(case, "x"), 5, {init = {weights = fx(case, "w0"), means = fx(case, "means0"),
                                                     logvars = fx(case, "logvars0")}})
    check_fit(g, case)
  end)

  it("predicts, gives probabilities and scores consistently", function()
    local case = "gmm_given"
    local x = fx(case, "x")
    local g = cluster.gmm(x, 5, {init = {weights = fx(case, "w0"), means = fx(case, "means0"),
                                         logvars = fx(case, "logvars0")}})
    local p = g:predict_proba(x)
    fixture.assert_close(p:sum(2), tide.ones(x:size(1)), 1e-5, 0, "rows of p(c|x) sum to 1")
    fixture.assert_close(p:argmax(2), g:predict(x), 0, 0, "predict = argmax predict_proba")
    fixture.assert_near(g:score(x), g:score_samples(x):mean():item(), 1e-4, 1e-5, "score = mean score_samples")
    -- one more EM step from the fit moves the log-likelihood by less than tol
    assert.is_true(math.abs(g:score(x) - g.loglik) < 1e-3)
  end)

  it("recovers well separated blobs, with restarts keeping the best fit", function()
    local x, labels = blobs(4, 50, 3, 9)
    local g = cluster.gmm(x, 4, {n_init = 3, seed = 2})
    assert.is_true(same_partition(g.labels, labels))
    fixture.assert_close(g.weights, tide.full({4}, 0.25), 1e-3, 0, "equal weights")
    -- unit noise: variances near 1
    assert.is_true(g.logvars:abs():max():item() < 0.6)
  end)

  it("rejects bad arguments", function()
    local x = tide.zeros(10, 3)
    assert.has_error(function() cluster.gmm(x, 2, {init = {means = tide.zeros(2, 3), logvars = tide.zeros(2, 2),
                                                           logits = tide.zeros(2)}}) end,
                     "cluster.gmm: init.logvars [2,2] must be [2,3]")
    assert.has_error(function() cluster.gmm(x, 2, {init = {labels = tide.zeros(9)}}) end,
                     "cluster.gmm: init.labels [9] must be [N] = [10]")
    assert.has_error(function() cluster.gmm(x, 2, {regcovar = 1}) end, "cluster.gmm: unknown option 'regcovar'")
  end)
end)
