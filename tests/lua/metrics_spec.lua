-- tide.metrics, clustering part: ACC (Hungarian), NMI, ARI, contingency
-- tables, the assignment solver; hand-computed cases and sklearn/scipy
-- fixtures (tests/fixtures/make_metrics.py -> metrics.txt).
local metrics = require("tide.metrics")

local log = math.log
local SRC = debug.getinfo(1, "S").source
local ROOT = SRC:match("^@(.*)tests/lua/[^/]*$") or ""
if ROOT == "" then ROOT = "./" end

local function near(expected, got, tol, what)
  tol = tol or 1e-12
  assert(math.abs(expected - got) <= tol,
         string.format("%s: expected %.17g, got %.17g", what or "value", expected, got))
end

-- Fixture lines: <case> <name> <ndim> <dims...> <values...>
local function load_fixture()
  local f = assert(io.open(ROOT .. "tests/fixtures/metrics.txt", "r"))
  local cases, order = {}, {}
  for line in f:lines() do
    local words = {}
    for w in line:gmatch("%S+") do words[#words + 1] = w end
    local case, name, ndim = words[1], words[2], tonumber(words[3])
    local dims, vals = {}, {}
    for i = 1, ndim do dims[i] = tonumber(words[3 + i]) end
    for i = 4 + ndim, #words do vals[#vals + 1] = tonumber(words[i]) end
    if not cases[case] then
      cases[case] = {}
      order[#order + 1] = case
    end
    cases[case][name] = {dims = dims, values = vals}
  end
  f:close()
  return cases, order
end

local function matrix(entry)
  local R, C, out = entry.dims[1], entry.dims[2], {}
  for r = 1, R do
    out[r] = {}
    for c = 1, C do out[r][c] = entry.values[(r - 1) * C + c] end
  end
  return out
end

-- A mapping from metrics.acc must be one-to-one, use only values that occur,
-- and match exactly acc * n samples.
local function check_mapping(truth, pred, acc, mapping, what)
  local used, seen_pred, seen_truth = {}, {}, {}
  for i = 1, #truth do seen_truth[truth[i]], seen_pred[pred[i]] = true, true end
  local mapped = 0
  for k, c in pairs(mapping) do
    assert(seen_pred[k], what .. ": mapping of an unknown cluster " .. tostring(k))
    assert(seen_truth[c], what .. ": mapping to an unknown class " .. tostring(c))
    assert(not used[c], what .. ": class " .. tostring(c) .. " mapped twice")
    used[c] = true
    mapped = mapped + 1
  end
  local kt, kp = 0, 0
  for _ in pairs(seen_truth) do kt = kt + 1 end
  for _ in pairs(seen_pred) do kp = kp + 1 end
  assert.equal(math.min(kt, kp), mapped, what .. ": number of mapped clusters")
  local hits = 0
  for i = 1, #truth do if mapping[pred[i]] == truth[i] then hits = hits + 1 end end
  near(acc * #truth, hits, 1e-9, what .. ": matched samples")
end

-- every permutation-based assignment of a small R x C matrix, for a brute
-- force optimum
local function brute_force(cost, R, C, maximize)
  local best
  local transpose = R > C
  local n, m = transpose and C or R, transpose and R or C
  local used = {}
  local function go(i, total)
    if i > n then
      if best == nil or (maximize and total > best) or (not maximize and total < best) then best = total end
      return
    end
    for j = 1, m do
      if not used[j] then
        used[j] = true
        go(i + 1, total + (transpose and cost[j][i] or cost[i][j]))
        used[j] = false
      end
    end
  end
  go(1, 0)
  return best or 0
end

describe("metrics (clustering)", function()
  it("loads without the engine", function()
    local path = ROOT .. "lua/?.lua;" .. ROOT .. "lua/?/init.lua"
    local code = "package.path=[[" .. path .. "]] local m=require('tide.metrics') " ..
                 "local a=m.acc({1,1,2},{0,0,1}) " ..
                 "print(a, package.loaded.tide_ffi == nil, package.loaded['tide.tensor'] == nil)"
    local p = assert(io.popen("luajit -e \"" .. code .. "\" 2>&1"))
    local out = p:read("*a")
    p:close()
    assert.equal("1\ttrue\ttrue\n", out)
  end)

  it("scores a perfect clustering 1, with or without permuted ids", function()
    local t = {0, 0, 1, 1, 2, 2, 2}
    for _, p in ipairs({{0, 0, 1, 1, 2, 2, 2}, {2, 2, 0, 0, 1, 1, 1}, {10, 10, -4, -4, 7, 7, 7}}) do
      local acc, mapping = metrics.acc(t, p)
      assert.equal(1, acc)
      assert.equal(1, metrics.nmi(t, p))
      assert.equal(1, metrics.ari(t, p))
      for i = 1, #t do assert.equal(t[i], mapping[p[i]]) end
    end
    local _, mapping = metrics.acc(t, {2, 2, 0, 0, 1, 1, 1})
    assert.same({[2] = 0, [0] = 1, [1] = 2}, mapping)
  end)

  it("matches a case computed by hand, with more clusters than classes", function()
    -- truth {0,0,0,1,1,1}, pred {0,0,1,1,2,2}; counts (rows: clusters 0,1,2;
    -- columns: classes 0,1): {2,0}, {1,1}, {0,2}.
    -- ACC: 0->0 and 2->1 match 2+2 samples, cluster 1 stays unmapped: 4/6.
    -- ARI: index = C(2,2)+C(2,2) = 2, classes a = 2*C(3,2) = 6, clusters
    --   b = 3*C(2,2) = 3, C(6,2) = 15, expected = 6*3/15 = 1.2, max = 4.5,
    --   ARI = (2 - 1.2) / (4.5 - 1.2) = 8/33.
    -- NMI: H(truth) = log 2, H(pred) = log 3; MI = sum n_rc/n log(n n_rc/(a_c b_r))
    --   = 2 * (2/6) log(6*2/(3*2)) + 2 * (1/6) log(6*1/(3*2)) = (2/3) log 2;
    --   NMI = (2/3) log 2 / ((log 2 + log 3) / 2) = 4 log 2 / (3 log 6).
    local t, p = {0, 0, 0, 1, 1, 1}, {0, 0, 1, 1, 2, 2}
    local acc, mapping = metrics.acc(t, p)
    near(4 / 6, acc)
    assert.same({[0] = 0, [2] = 1}, mapping)
    near(8 / 33, metrics.ari(t, p))
    near(4 * log(2) / (3 * log(6)), metrics.nmi(t, p))
    near(2 / 3 * log(2) / math.sqrt(log(2) * log(3)), metrics.nmi(t, p, "geometric"))
    near(2 / 3, metrics.nmi(t, p, "min"))
    near(2 / 3 * log(2) / log(3), metrics.nmi(t, p, "max"))
    assert.same({0, 0, -1, -1, 1, 1}, metrics.relabel(p, mapping))
    assert.same({0, 0, "x", "x", 1, 1}, metrics.relabel(p, mapping, "x"))
  end)

  it("matches a case computed by hand, with fewer clusters than classes", function()
    -- truth {1,1,2,2,3,3}, pred {5,5,5,5,9,9}: cluster 5 holds classes 1 and 2,
    -- cluster 9 holds class 3.
    -- ACC: 5 -> 1 (or 2) and 9 -> 3 match 4 of 6; one class gets no cluster.
    -- ARI: index = 3*C(2,2) = 3, a = 3, b = C(4,2)+C(2,2) = 7, expected =
    --   3*7/15 = 1.4, max = 5, ARI = 1.6/3.6 = 4/9.
    -- NMI: pred is a coarsening of truth, so MI = H(pred) = log 3 - (2/3) log 2,
    --   H(truth) = log 3, NMI = 2 H(pred) / (log 3 + H(pred)).
    local t, p = {1, 1, 2, 2, 3, 3}, {5, 5, 5, 5, 9, 9}
    local acc, mapping = metrics.acc(t, p)
    near(4 / 6, acc)
    assert.equal(3, mapping[9])
    assert.is_true(mapping[5] == 1 or mapping[5] == 2)
    near(4 / 9, metrics.ari(t, p))
    local hp = log(3) - 2 / 3 * log(2)
    near(2 * hp / (log(3) + hp), metrics.nmi(t, p))
  end)

  it("follows sklearn on single-valued labelings", function()
    -- both single-valued: NMI 1, ARI 1; one single-valued: NMI 0, ARI 0
    assert.equal(1, metrics.nmi({3, 3, 3}, {1, 1, 1}))
    assert.equal(1, metrics.ari({3, 3, 3}, {1, 1, 1}))
    assert.equal(1, metrics.acc({3, 3, 3}, {1, 1, 1}))
    assert.equal(0, metrics.nmi({3, 3, 3}, {1, 2, 2}))
    assert.equal(0, metrics.ari({3, 3, 3}, {1, 2, 2}))
    assert.equal(0, metrics.nmi({1, 2, 2}, {3, 3, 3}))
    assert.equal(1, metrics.nmi({7}, {8}))
    assert.equal(1, metrics.ari({7}, {8}))
    -- exactly independent labelings: MI is 0, so NMI is exactly 0
    assert.equal(0, metrics.nmi({0, 0, 1, 1}, {0, 1, 0, 1}))
  end)

  it("does not care how labels are written", function()
    local base = metrics.scores({0, 0, 1, 1, 1, 2, 2, 0}, {1, 1, 1, 0, 0, 2, 2, 2})
    local variants = {
      {{1, 1, 2, 2, 2, 3, 3, 1}, {2, 2, 2, 1, 1, 3, 3, 3}},                 -- 1-based
      {{"a", "a", "b", "b", "b", "c", "c", "a"}, {"x", "x", "x", "y", "y", "z", "z", "z"}},
      {{-5, -5, 40, 40, 40, 0.5, 0.5, -5}, {3, 3, 3, 100, 100, 8, 8, 8}},   -- gaps, floats
    }
    for _, v in ipairs(variants) do
      local s = metrics.scores(v[1], v[2])
      near(base.acc, s.acc)
      near(base.nmi, s.nmi)
      near(base.ari, s.ari)
      assert.equal(3, s.k_true)
      assert.equal(3, s.k_pred)
      assert.equal(8, s.n)
      check_mapping(v[1], v[2], s.acc, s.mapping, "variant")
    end
  end)

  it("builds a reusable contingency table", function()
    local ct = metrics.contingency({"b", "a", "a", "b", "c"}, {2, 0, 0, 0, 2})
    assert.same({0, 2}, ct.clusters)
    assert.same({"a", "b", "c"}, ct.classes)
    assert.same({{2, 1, 0}, {0, 1, 1}}, ct.counts)
    assert.same({3, 2}, ct.cluster_sizes)
    assert.same({2, 2, 1}, ct.class_sizes)
    assert.same({2, 1, 1, 1, 2}, ct.pred_index)
    assert.same({2, 1, 1, 2, 3}, ct.truth_index)
    assert.equal(5, ct.n)
    -- the metrics take the table instead of the labels
    local acc, mapping = ct:acc()
    near(3 / 5, acc)
    assert.same({[0] = "a", [2] = "b"}, mapping)
    assert.equal(metrics.nmi({"b", "a", "a", "b", "c"}, {2, 0, 0, 0, 2}), metrics.nmi(ct))
    assert.equal(metrics.nmi({"b", "a", "a", "b", "c"}, {2, 0, 0, 0, 2}, "max"), ct:nmi("max"))
    assert.equal(metrics.ari({"b", "a", "a", "b", "c"}, {2, 0, 0, 0, 2}), metrics.ari(ct))
    assert.equal(acc, metrics.scores(ct).acc)
    local values, groups = metrics.members({2, 0, 0, 0, 2})
    assert.same({0, 2}, values)
    assert.same({{2, 3, 4}, {1, 5}}, groups)
    local codes, vals = metrics.encode({30, 10, 30, 20})
    assert.same({3, 1, 3, 2}, codes)
    assert.same({10, 20, 30}, vals)
  end)

  it("solves assignment problems as brute force does", function()
    -- scipy's documentation example: the unique optimum is 1 + 2 + 2
    local cost = {{4, 1, 3}, {2, 0, 5}, {3, 2, 2}}
    local rows, cols, total = metrics.linear_sum_assignment(cost)
    assert.same({1, 2, 3}, rows)
    assert.same({2, 1, 3}, cols)
    assert.equal(5, total)
    -- random small matrices with many ties, every shape up to 5 x 6
    math.randomseed(7)
    for _ = 1, 300 do
      local R, C = math.random(0, 5), math.random(0, 6)
      local m = {}
      for r = 1, R do
        m[r] = {}
        for c = 1, C do m[r][c] = math.random(-3, 3) end
      end
      for _, maximize in ipairs({false, true}) do
        local rs, cs, tot = metrics.linear_sum_assignment(m, maximize)
        assert.equal(math.min(R, C), #rs)
        local sum, used = 0, {}
        for k = 1, #rs do
          assert.is_nil(used[cs[k]])
          used[cs[k]] = true
          if k > 1 then assert.is_true(rs[k] > rs[k - 1]) end
          sum = sum + m[rs[k]][cs[k]]
        end
        assert.equal(sum, tot)
        assert.equal(brute_force(m, R, C, maximize), tot)
      end
    end
  end)

  it("reports bad input at the caller's line", function()
    local function err(f, ...)
      local ok, msg = pcall(f, ...)
      assert.is_false(ok)
      return msg
    end
    local here = "metrics_spec.lua:%d+: "
    -- (not a tail call: a tail call leaves no line of the caller's to point at)
    local msg = err(function() local a = metrics.acc({1, 2, 3}, {1, 2}); return a end)
    assert.matches(here .. "metrics.acc: truth has 3 labels and pred has 2", msg)
    msg = err(function() local a = metrics.nmi({1, 2}, {1, 2}, "median"); return a end)
    assert.matches(here .. "metrics.nmi: average must be", msg)
    assert.matches("metrics.nmi: no labels", err(function() return metrics.nmi({}, {}) end))
    assert.matches("metrics.ari: pred%[2%] is nan, expected a number or a string",
                   err(function() return metrics.ari({1, 2}, {1, 0 / 0}) end))
    assert.matches("metrics.ari: truth%[2%] is true, expected a number or a string",
                   err(function() return metrics.ari({1, true, 3}, {1, 2, 3}) end))
    assert.matches("metrics.acc: truth must be a Lua array or a tide tensor, got number",
                   err(function() return metrics.acc(3, {1}) end))
    assert.matches("metrics.nmi: average must be", err(function() return metrics.nmi({1}, {1}, "median") end))
    assert.matches("metrics.linear_sum_assignment: row 2 has 1 entries, row 1 has 2",
                   err(function() return metrics.linear_sum_assignment({{1, 2}, {3}}) end))
    assert.matches("cost%[1%]%[2%] is inf, expected a finite number",
                   err(function() return metrics.linear_sum_assignment({{1, math.huge}}) end))
  end)

  describe("against sklearn and scipy", function()
    local cases, order = load_fixture()

    it("has the fixture cases", function()
      local labels, assign = 0, 0
      for _, name in ipairs(order) do
        if cases[name].truth then labels = labels + 1 end
        if cases[name].cost then assign = assign + 1 end
      end
      assert.is_true(labels >= 20)
      assert.is_true(assign >= 8)
    end)

    for _, name in ipairs(order) do
      local c = cases[name]
      if c.truth then
        it("scores " .. name, function()
          local t, p = c.truth.values, c.pred.values
          local s = metrics.scores(t, p)
          near(c.acc.values[1], s.acc, 1e-12, name .. " acc")
          near(c.nmi_arithmetic.values[1], s.nmi, 1e-12, name .. " nmi")
          near(c.ari.values[1], s.ari, 1e-12, name .. " ari")
          for _, avg in ipairs({"arithmetic", "geometric", "min", "max"}) do
            near(c["nmi_" .. avg].values[1], metrics.nmi(t, p, avg), 1e-12, name .. " nmi " .. avg)
          end
          -- NMI and ARI are symmetric; ACC's matched count is too
          near(s.nmi, metrics.nmi(p, t), 1e-12, name .. " nmi symmetry")
          near(s.ari, metrics.ari(p, t), 1e-12, name .. " ari symmetry")
          near(s.acc, (metrics.acc(p, t)), 1e-12, name .. " acc symmetry")
          check_mapping(t, p, s.acc, s.mapping, name)
          local hits, relabeled = 0, metrics.relabel(p, s.mapping)
          for i = 1, #t do if relabeled[i] == t[i] then hits = hits + 1 end end
          near(s.acc, hits / #t, 1e-12, name .. " relabel")
          -- sklearn's table is ours transposed (rows: classes)
          local ct, sk = metrics.contingency(t, p), matrix(c.contingency)
          assert.equal(#ct.classes, #sk)
          for r = 1, #ct.clusters do
            for k = 1, #ct.classes do assert.equal(sk[k][r], ct.counts[r][k]) end
          end
        end)
      elseif c.cost then
        it("assigns " .. name, function()
          local cost = matrix(c.cost)
          local R, C = c.cost.dims[1], c.cost.dims[2]
          for _, mx in ipairs({{false, "min_total"}, {true, "max_total"}}) do
            local rows, cols, total = metrics.linear_sum_assignment(cost, mx[1])
            near(c[mx[2]].values[1], total, 1e-9, name .. " " .. mx[2])
            assert.equal(math.min(R, C), #rows)
            local sum, used = 0, {}
            for k = 1, #rows do
              assert.is_nil(used[cols[k]])
              used[cols[k]] = true
              sum = sum + cost[rows[k]][cols[k]]
            end
            near(total, sum, 1e-9, name .. " total of the pairs")
          end
        end)
      end
    end
  end)

  describe("with tensors", function()
    local tide

    setup(function() tide = require("tide") end)

    it("reads float ids from vector tensors", function()
      local t, p = {0, 0, 1, 1, 2, 2, 2}, {1, 1, 0, 0, 0, 2, 2}
      local want = metrics.scores(t, p)
      local variants = {
        {tide.from_table(t), tide.from_table(p)},
        {t, tide.from_table(p)},
        {tide.from_table(t):reshape(7, 1), tide.from_table(p):reshape(1, 7)},
        {t, tide.from_table{p, p}:t():narrow(2, 2, 1)},  -- a non-contiguous column
      }
      for _, v in ipairs(variants) do
        local s = metrics.scores(v[1], v[2])
        assert.equal(want.acc, s.acc)
        assert.equal(want.nmi, s.nmi)
        assert.equal(want.ari, s.ari)
        assert.same(want.mapping, s.mapping)
        assert.equal("number", type(s.acc))
        assert.equal("number", type(s.nmi))
        assert.equal("number", type(s.ari))
      end
      assert.same({1, 1, 0, 0, 0, 2, 2}, metrics.relabel(tide.from_table(p), {[0] = 0, [1] = 1, [2] = 2}))
      local ct = metrics.contingency(tide.from_table(t), tide.from_table(p))
      assert.same({0, 1, 2}, ct.clusters)
    end)

    it("takes the argmax of scores", function()
      local logits = tide.from_table{{0.1, 2, 0}, {3, 0, 0}, {0, 0, 5}, {0, 4, 1}}
      local acc, mapping = metrics.acc({"b", "a", "c", "b"}, logits:argmax(2))
      assert.equal(1, acc)
      assert.same({[0] = "a", [1] = "b", [2] = "c"}, mapping)
    end)

    it("rejects tensors that are not label vectors", function()
      local ok, msg = pcall(metrics.acc, {1, 2, 3, 4, 5, 6}, tide.zeros(2, 3))
      assert.is_false(ok)
      assert.matches("metrics.acc: pred must be a vector of labels, got a tensor of shape %[2,3%]", msg)
      ok, msg = pcall(metrics.acc, {1}, tide.scalar(1))
      assert.is_false(ok)
      assert.matches("got a tensor of shape %[%]", msg)
      local rows, cols, total = metrics.linear_sum_assignment(tide.from_table{{1, 2}, {0, 5}}, true)
      assert.same({1, 2}, rows)
      assert.same({1, 2}, cols)
      assert.equal(6, total)
    end)
  end)

  it("scores 10,000 labels in 40 clusters", function()
    math.randomseed(3)
    local n, t, p = 10000, {}, {}
    for i = 1, n do
      t[i] = math.random(0, 39)
      p[i] = math.random() < 0.6 and (t[i] * 7) % 40 or math.random(0, 39)
    end
    local s = metrics.scores(t, p)
    assert.equal(40, s.k_pred)
    assert.is_true(s.acc > 0.55 and s.acc < 0.7)
  end)
end)
