-- tide.cluster.posthoc: the post-hoc choice of K of CMVAE on synthetic latents
-- with a known answer, the vote over modalities, the masses, the curve.
local tide = require("tide")
local posthoc = require("tide.cluster.posthoc")

-- z [M,N,D]: N points of 4 clusters (centers +-4 on the first two axes),
-- each modality a Laplace(center, 0.4) draw; labels [N] (0-based).
local CENTERS = {{4, 0, 0, 0}, {0, 4, 0, 0}, {-4, 0, 0, 0}, {0, -4, 0, 0}}
local function synthetic(M, N, seed)
  tide.manual_seed(seed)
  local lab = {}
  for n = 1, N do lab[n] = (n - 1) % 4 end
  local ids = tide.from_table(lab)
  local centers = tide.from_table(CENTERS):index_select(1, ids)          -- [N,4]
  local u = (tide.rand(M, N, 4) * 2 - 1):clamp(-0.999999, 0.999999)
  local e = -((u:gt(0) - u:lt(0)) * (-u:abs()):log1p())
  return centers:reshape(1, N, 4) + e * 0.4, lab
end

-- A prior of 10 Laplace components (scale 1): the 4 true ones, 3 copies
-- of true ones shifted by 0.3, 3 far away where no point lies.
local function prior()
  local locs = {}
  for i = 1, 4 do locs[i] = CENTERS[i] end
  locs[5] = {4, 0.3, 0, 0}
  locs[6] = {0.3, 4, 0, 0}
  locs[7] = {-4, 0, 0.3, 0}
  locs[8] = {0, 0, 9, 0}
  locs[9] = {0, 0, -9, 0}
  locs[10] = {0, 0, 0, 9}
  return {logits = tide.zeros(10), locs = tide.from_table(locs), scales = tide.zeros(10, 4), family = 1}
end

describe("posthoc.select", function()
  it("finds the 4 clusters among 10 components (duplicates and empty ones pruned)", function()
    local z, lab = synthetic(3, 400, 1)
    local p = prior()
    local r = posthoc.select{z = z, logits = p.logits, locs = p.locs, scales = p.scales, family = 1, beta = 1}
    assert.equal(4, r.k)
    -- the kept set holds one component per true cluster: the assignment is pure
    local m = require("tide.metrics")
    assert.is_true(m.acc(lab, r.assign) > 0.99)
    assert.equal(4, r.active:sum():item())
    -- the empty components went first
    for c = 8, 10 do assert.equal(0, r.active:at(c)) end
    -- the curve runs from 2 to 10 clusters, one value each, least at the choice
    assert.same({2, 3, 4, 5, 6, 7, 8, 9, 10}, r.curve.ks)
    for i, k in ipairs(r.curve.ks) do
      assert.is_true(r.curve.values[i] == r.curve.values[i])
      if k ~= 4 then assert.is_true(r.curve.values[i] > r.criterion) end
    end
  end)

  it("the criterion is beta * mean normalized entropy - mean normalized ELBO term", function()
    local z = synthetic(2, 40, 2)
    local p = prior()
    local beta = 2.5
    local r = posthoc.select{z = z, logits = p.logits, locs = p.locs, scales = p.scales, family = 1, beta = beta}
    local s10 = r.steps[1]
    assert.equal(10, s10.k)
    -- by hand for K = 10 (every component active, pi = 1/10)
    local J = tide.gmm_log_joint(z:reshape(80, 4), p.logits, p.locs, p.scales, 1)
    local H, E = 0, 0
    for i = 1, 80 do
      local mx = -math.huge
      for c = 1, 10 do mx = math.max(mx, J:at(i, c)) end
      local s = 0
      for c = 1, 10 do s = s + math.exp(J:at(i, c) - mx) end
      local lse = mx + math.log(s)
      for c = 1, 10 do
        local q = math.exp(J:at(i, c) - lse)
        if q > 0 then H = H - q * math.log(q) end
      end
      E = E + lse / 4
    end
    H, E = H / 80 / math.log(10), E / 80
    assert.is_true(math.abs(s10.entropy - H) < 1e-4)
    assert.is_true(math.abs(s10.elbo - E) < 1e-3)
    assert.is_true(math.abs(s10.criterion - (beta * H - E)) < 1e-3)
  end)

  it("never keeps one cluster, and starts from a given active set", function()
    local z = synthetic(2, 100, 3)
    local p = prior()
    local mask = tide.from_table({1, 1, 0, 0, 0, 0, 0, 0, 0, 1})
    local r = posthoc.select{z = z, logits = p.logits, locs = p.locs, scales = p.scales, family = 1, beta = 1,
                             active = mask}
    assert.same({2, 3}, r.curve.ks)
    assert.is_true(r.k >= 2)
    assert.equal(0, r.active:at(3))
  end)

  it("writes the criterion against K as a PNG", function()
    local z = synthetic(2, 60, 4)
    local p = prior()
    local r = posthoc.select{z = z, logits = p.logits, locs = p.locs, scales = p.scales, family = 1, beta = 1}
    local path = os.tmpname() .. ".png"
    posthoc.plot(path, r, {backend = "builtin"})
    local f = assert(io.open(path, "rb"))
    assert.equal("\137PNG", f:read(4))
    f:close()
    os.remove(path)
  end)
end)

describe("posthoc.vote", function()
  it("takes the mode over modalities of argmax_c, ties to the larger mean probability", function()
    -- 3 modalities, 2 points, 3 clusters
    local p = tide.from_table({
      {{0.7, 0.2, 0.1}, {0.5, 0.4, 0.1}},
      {{0.1, 0.8, 0.1}, {0.1, 0.3, 0.6}},
      {{0.6, 0.3, 0.1}, {0.2, 0.7, 0.1}},
    })
    local a = posthoc.vote(p)
    assert.equal(0, a:at(1))        -- votes 0, 1, 0
    assert.equal(1, a:at(2))        -- votes 0, 2, 1: a tie, cluster 1 has the larger mean (0.467)
  end)
end)
