-- tide.metrics, clustering part: ACC with Hungarian matching, NMI, ARI, the
-- contingency table they share, and the assignment solver behind ACC.
--
--   local metrics = require("tide.metrics")
--   local acc, map = metrics.acc(truth, pred)  -- map[cluster] = class
--   metrics.nmi(truth, pred), metrics.ari(truth, pred)
--   local s = metrics.scores(truth, pred)       -- {acc, nmi, ari, mapping, ...}
--
-- Arguments come in sklearn's order (labels_true, labels_pred). Labels are
-- Lua arrays of any numbers or strings (0- or 1-based, gaps allowed) or
-- vector-shaped tide tensors (float ids, e.g. from argmax); each is read once.
-- Results are plain Lua numbers. This file never loads the engine: a tensor
-- can only exist once the binding is loaded, so it is recognised through
-- package.loaded.tide_ffi.
local M = {}

local log, sqrt, huge = math.log, math.sqrt, math.huge
local min, max = math.min, math.max

---------------------------------------------------------------- errors

-- Errors point at the first caller outside lua/tide/, i.e. the user's line.
local SRC = debug.getinfo(1, "S").source
local PREFIX = SRC:match("^(.*/)[^/]*/[^/]*$") or SRC

local function fail(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or info.source:sub(1, #PREFIX) ~= PREFIX then break end
    level = level + 1
  end
  error("metrics." .. msg, level)
end

---------------------------------------------------------------- labels

local function is_tensor(x)
  if type(x) ~= "cdata" then return false end
  local B = package.loaded["tide_ffi"]
  return B ~= nil and B.is_tensor(x)
end

-- A tensor whose shape has at most one dim above 1 ([N], [N,1], [1,N]) ->
-- a flat Lua array of its values.
local function tensor_values(t, fname, what)
  local shape, big = t:shape(), 0
  for _, d in ipairs(shape) do if d > 1 then big = big + 1 end end
  if t.ndim == 0 or big > 1 then
    fail(fname .. ": " .. what .. " must be a vector of labels, got a tensor of shape [" ..
         table.concat(shape, ",") .. "]")
  end
  return t:contiguous():reshape(-1):to_table()
end

-- Lua array or tensor -> flat Lua array of label values.
local function read(labels, fname, what)
  if is_tensor(labels) then return tensor_values(labels, fname, what) end
  if type(labels) ~= "table" then
    fail(fname .. ": " .. what .. " must be a Lua array or a tide tensor, got " .. type(labels))
  end
  return labels
end

-- Order of distinct label values: numbers, then strings.
local RANK = {number = 1, string = 2}
local function before(a, b)
  local ta, tb = RANK[type(a)], RANK[type(b)]
  if ta ~= tb then return ta < tb end
  return a < b
end

-- labels -> codes (codes[i] in 1..k), values (the k distinct values, sorted;
-- values[codes[i]] == labels[i]), n.
local function encode(labels, fname, what)
  labels = read(labels, fname, what)
  local n = #labels
  local code, values = {}, {}
  for i = 1, n do
    local v = labels[i]
    if code[v] == nil then
      if v ~= v or not RANK[type(v)] then
        fail(fname .. ": " .. what .. "[" .. i .. "] is " .. tostring(v) ..
             ", expected a number or a string")
      end
      code[v] = true
      values[#values + 1] = v
    end
  end
  table.sort(values, before)
  for c = 1, #values do code[values[c]] = c end
  local codes = {}
  for i = 1, n do codes[i] = code[labels[i]] end
  return codes, values, n
end

-- codes, values = metrics.encode(labels)
function M.encode(labels)
  local codes, values = encode(labels, "encode", "labels")
  return codes, values
end

-- values, groups = metrics.members(labels): groups[k] lists the (1-based)
-- positions of the samples labelled values[k], e.g. for per-cluster galleries.
function M.members(labels)
  local codes, values, n = encode(labels, "members", "labels")
  local groups = {}
  for k = 1, #values do groups[k] = {} end
  for i = 1, n do
    local g = groups[codes[i]]
    g[#g + 1] = i
  end
  return values, groups
end

---------------------------------------------------------------- contingency

-- ct.counts[r][c]: how many samples are in cluster ct.clusters[r] and class
-- ct.classes[c] (rows: predicted clusters, columns: true classes; sklearn's
-- contingency_matrix is the transpose). ct.cluster_sizes[r],
-- ct.class_sizes[c], ct.n; ct.pred_index[i] / ct.truth_index[i]: the row /
-- column of sample i. Methods: ct:acc(), ct:nmi([average]), ct:ari(),
-- ct:scores().
local Contingency = {}
Contingency.__index = Contingency

local function contingency(truth, pred, fname)
  local tc, classes, n = encode(truth, fname, "truth")
  local pc, clusters, m = encode(pred, fname, "pred")
  if n ~= m then fail(fname .. ": truth has " .. n .. " labels and pred has " .. m) end
  if n == 0 then fail(fname .. ": no labels") end
  local R, C = #clusters, #classes
  local counts, csize, ksize = {}, {}, {}
  for r = 1, R do
    local row = {}
    for c = 1, C do row[c] = 0 end
    counts[r], ksize[r] = row, 0
  end
  for c = 1, C do csize[c] = 0 end
  for i = 1, n do
    local r, c = pc[i], tc[i]
    counts[r][c] = counts[r][c] + 1
    ksize[r] = ksize[r] + 1
    csize[c] = csize[c] + 1
  end
  return setmetatable({
    counts = counts, clusters = clusters, classes = classes, n = n,
    cluster_sizes = ksize, class_sizes = csize, pred_index = pc, truth_index = tc,
  }, Contingency)
end

function M.contingency(truth, pred) return contingency(truth, pred, "contingency") end

-- (truth, pred) or (ct) -> ct, index of the first argument after them.
local function table_of(fname, a, b)
  if getmetatable(a) == Contingency then return a, 2 end
  return contingency(a, b, fname), 3
end

---------------------------------------------------------------- assignment

-- Kuhn-Munkres with potentials (Jonker-Volgenant style shortest augmenting
-- paths), O(n^2 m). a[i][j] 1-based, n <= m rows and columns, minimises
-- sum_i a[i][col(i)]. Returns p: p[j] = row matched to column j (0: none).
-- Invariant: u[i] + v[j] <= a[i][j], with equality on matched pairs.
local function hungarian(a, n, m)
  local u, v, p, way, minv, used = {}, {}, {}, {}, {}, {}
  for i = 0, n do u[i] = 0 end
  for j = 0, m do v[j], p[j], way[j] = 0, 0, 0 end
  for i = 1, n do
    p[0] = i
    local j0 = 0
    for j = 0, m do minv[j], used[j] = huge, false end
    repeat
      used[j0] = true
      local i0, delta, j1 = p[j0], huge, 0
      local row, ui = a[i0], u[i0]
      for j = 1, m do
        if not used[j] then
          local cur = row[j] - ui - v[j]
          if cur < minv[j] then minv[j], way[j] = cur, j0 end
          if minv[j] < delta then delta, j1 = minv[j], j end
        end
      end
      for j = 0, m do
        if used[j] then
          u[p[j]] = u[p[j]] + delta
          v[j] = v[j] - delta
        else
          minv[j] = minv[j] - delta
        end
      end
      j0 = j1
    until p[j0] == 0
    repeat
      local j1 = way[j0]
      p[j0] = p[j1]
      j0 = j1
    until j0 == 0
  end
  return p
end

-- Optimal one-to-one assignment of rows to columns of an R x C matrix
-- (rectangular allowed: min(R, C) pairs). cost[r][c] -> rows, cols, total
-- with rows[k] matched to cols[k], rows ascending, as scipy's
-- linear_sum_assignment (1-based). maximize: maximise the total instead.
local function assign(cost, R, C, maximize)
  local t = R > C
  local n, m = t and C or R, t and R or C
  local a = {}
  for i = 1, n do
    local row = {}
    for j = 1, m do
      local x = t and cost[j][i] or cost[i][j]
      row[j] = maximize and -x or x
    end
    a[i] = row
  end
  local p = hungarian(a, n, m)
  local col_of = {}
  for j = 1, m do
    if p[j] ~= 0 then
      if t then col_of[j] = p[j] else col_of[p[j]] = j end
    end
  end
  local rows, cols, total = {}, {}, 0
  for r = 1, R do
    local c = col_of[r]
    if c then
      rows[#rows + 1], cols[#cols + 1] = r, c
      total = total + cost[r][c]
    end
  end
  return rows, cols, total
end

-- rows, cols, total = metrics.linear_sum_assignment(cost [, maximize])
-- cost: a Lua table of rows (or a 2-d tensor) of finite numbers.
function M.linear_sum_assignment(cost, maximize)
  local fname = "linear_sum_assignment"
  if is_tensor(cost) then
    if cost.ndim ~= 2 then
      fail(fname .. ": cost must be 2-d, got a tensor of shape [" .. table.concat(cost:shape(), ",") .. "]")
    end
    cost = cost:to_table()
  elseif type(cost) ~= "table" then
    fail(fname .. ": cost must be a table of rows or a 2-d tensor, got " .. type(cost))
  end
  local R = #cost
  local C = R > 0 and type(cost[1]) == "table" and #cost[1] or 0
  for r = 1, R do
    local row = cost[r]
    if type(row) ~= "table" then fail(fname .. ": row " .. r .. " is a " .. type(row) .. ", expected a table") end
    if #row ~= C then fail(fname .. ": row " .. r .. " has " .. #row .. " entries, row 1 has " .. C) end
    for c = 1, C do
      local x = row[c]
      if type(x) ~= "number" or x ~= x or x == huge or x == -huge then
        fail(fname .. ": cost[" .. r .. "][" .. c .. "] is " .. tostring(x) .. ", expected a finite number")
      end
    end
  end
  return assign(cost, R, C, maximize and true or false)
end

---------------------------------------------------------------- metrics

-- ACC: the share of samples whose cluster maps to their class under the best
-- one-to-one map of clusters to classes. With more clusters than classes the
-- extra clusters stay unmapped and their samples count as errors (the same as
-- padding the table with zero columns to square); with fewer, some classes
-- get no cluster.
local function acc_of(ct)
  local rows, cols, matched = assign(ct.counts, #ct.clusters, #ct.classes, true)
  local mapping = {}
  for k = 1, #rows do mapping[ct.clusters[rows[k]]] = ct.classes[cols[k]] end
  return matched / ct.n, mapping
end

-- acc, mapping = metrics.acc(truth, pred) (or metrics.acc(ct));
-- mapping[cluster value] = class value, nil for unmapped clusters.
function M.acc(a, b)
  return acc_of((table_of("acc", a, b)))
end

local function entropy(sizes, n)
  local h, ln = 0, log(n)
  for k = 1, #sizes do
    local s = sizes[k]
    if s > 0 then h = h - (s / n) * (log(s) - ln) end
  end
  return h
end

-- I(truth; pred) = sum_rc (n_rc / n) log(n n_rc / (a_c b_r)), in nats; the
-- products are whole numbers, so an independent cell gives log(1) = 0 exactly.
local function mutual_info(ct)
  local R, C, n = #ct.clusters, #ct.classes, ct.n
  if R == 1 or C == 1 then return 0 end
  local mi, ks, cs = 0, ct.cluster_sizes, ct.class_sizes
  for r = 1, R do
    local row, b = ct.counts[r], ks[r]
    for c = 1, C do
      local x = row[c]
      if x > 0 then mi = mi + (x / n) * log((n * x) / (b * cs[c])) end
    end
  end
  return max(mi, 0)
end

local AVERAGE = {
  arithmetic = function(u, v) return (u + v) / 2 end,
  geometric = function(u, v) return sqrt(u * v) end,
  min = min,
  max = max,
}

-- Whether the two labelings are the same partition (up to the ids): as many
-- clusters as classes and one non-empty cell per row.
local function same_partition(ct)
  local R, C = #ct.clusters, #ct.classes
  if R ~= C then return false end
  for r = 1, R do
    local row, nz = ct.counts[r], 0
    for c = 1, C do if row[c] > 0 then nz = nz + 1 end end
    if nz ~= 1 then return false end
  end
  return true
end

-- NMI = I / average(H(truth), H(pred)), as sklearn's
-- normalized_mutual_info_score: 1 when both labelings have a single value,
-- 0 when I = 0. Same partitions give exactly 1 (I and H, summed in another
-- order, could differ in the last bit).
local function nmi_of(ct, average)
  average = average or "arithmetic"
  local mean = AVERAGE[average]
  if not mean then
    fail("nmi: average must be 'arithmetic', 'geometric', 'min' or 'max', got " .. tostring(average))
  end
  if same_partition(ct) then return 1.0 end
  local mi = mutual_info(ct)
  if mi == 0 then return 0.0 end
  return mi / mean(entropy(ct.class_sizes, ct.n), entropy(ct.cluster_sizes, ct.n))
end

-- nmi = metrics.nmi(truth, pred [, average]) (or metrics.nmi(ct [, average]));
-- average: "arithmetic" (default, sklearn's), "geometric", "min", "max".
function M.nmi(a, b, c)
  local ct, k = table_of("nmi", a, b)
  return nmi_of(ct, k == 2 and b or c)
end

local function pairs_of(x) return x * (x - 1) / 2 end

-- ARI (Hubert & Arabie): (index - expected) / (max - expected) over pairs of
-- samples, with index = sum_rc C(n_rc, 2), a = sum_c C(class_c, 2),
-- b = sum_r C(cluster_r, 2), expected = a b / C(n, 2), max = (a + b) / 2.
-- Equal to sklearn's pair-confusion form; 1 when the partitions are the same
-- (index == a == b, sklearn's fn == fp == 0), including n = 1.
local function ari_of(ct)
  local index, a, b = 0, 0, 0
  for r = 1, #ct.clusters do
    local row = ct.counts[r]
    for c = 1, #ct.classes do index = index + pairs_of(row[c]) end
    b = b + pairs_of(ct.cluster_sizes[r])
  end
  for c = 1, #ct.classes do a = a + pairs_of(ct.class_sizes[c]) end
  if index == a and index == b then return 1.0 end
  local expected = a * b / pairs_of(ct.n)
  return (index - expected) / ((a + b) / 2 - expected)
end

-- ari = metrics.ari(truth, pred) (or metrics.ari(ct))
function M.ari(a, b)
  return ari_of((table_of("ari", a, b)))
end

-- metrics.scores(truth, pred [, average]) (or (ct [, average])): all three
-- from one contingency table -> {acc, nmi, ari, mapping, n, k_true, k_pred}.
local function scores_of(ct, average)
  local acc, mapping = acc_of(ct)
  return {
    acc = acc, nmi = nmi_of(ct, average), ari = ari_of(ct), mapping = mapping,
    n = ct.n, k_true = #ct.classes, k_pred = #ct.clusters,
  }
end

function M.scores(a, b, c)
  local ct, k = table_of("scores", a, b)
  return scores_of(ct, k == 2 and b or c)
end

-- metrics.relabel(pred, mapping [, unmatched]) -> a Lua array with each
-- cluster replaced by its class (mapping from metrics.acc); clusters without
-- a class get `unmatched` (default -1).
function M.relabel(pred, mapping, unmatched)
  pred = read(pred, "relabel", "pred")
  if type(mapping) ~= "table" then fail("relabel: mapping must be a table, got " .. type(mapping)) end
  if unmatched == nil then unmatched = -1 end
  local out = {}
  for i = 1, #pred do
    local c = mapping[pred[i]]
    if c == nil then c = unmatched end
    out[i] = c
  end
  return out
end

Contingency.acc = acc_of
Contingency.nmi = nmi_of
Contingency.ari = ari_of
Contingency.scores = scores_of

return M
