-- tide.data.dataset - a Dataset: one tensor [N, ...] per modality, held in
-- memory with values in [0,1], and optional labels [N] (class ids, 0-based
-- as every value stored in a tensor). A batch is index_select (or a narrow
-- view) of those tensors: no Lua loop ever touches pixels.
--
--   ds:size()                       number of samples
--   ds:batch(indices [, {labels = true}]) -> {x = {t1, ..., tM}, index =, y = (only when asked)}
--       indices: a tensor of 0-based positions, or a Lua table of 1-based positions
--   ds:range(start, count [, opts])  the same for positions start .. start+count-1 (1-based; views)
--   ds:labels(), ds:tensor(m)        whole tensors (m: 1-based number or name)
--   ds:subset(indices), ds:split({0.8, 0.1, 0.1} [, seed])
local B = require("tide_ffi")
local W = B.wrappers
local C = B.C
local raise = B.raise
local Rng = require("tide.data.rng")

local D = {}

local Dataset = {}
Dataset.__index = Dataset
D.Dataset = Dataset

local function is_dataset(x) return type(x) == "table" and getmetatable(x) == Dataset end
D.is_dataset = is_dataset

-- spec: {name =, modalities = {names}, data = {tensors [N, ...]}, labels = tensor [N] or nil,
--        rows = index tensor [n] (0-based rows of data) or nil, info = {...}}
function D.new(spec)
  local data = spec.data
  if type(data) ~= "table" or #data == 0 then raise("Dataset: data must be a non-empty list of tensors") end
  local n
  for i, t in ipairs(data) do
    if not B.is_tensor(t) then raise(("Dataset: modality %d is not a tensor"):format(i)) end
    if t.ndim < 1 then raise(("Dataset: modality %d is a 0-d tensor"):format(i)) end
    local ni = tonumber(t._shape[0])
    if n and ni ~= n then
      raise(("Dataset: modality %d has %d samples (shape %s), modality 1 has %d"):format(i, ni, B.shape_str(t), n))
    end
    n = ni
  end
  if spec.labels ~= nil then
    if not B.is_tensor(spec.labels) then raise("Dataset: labels must be a tensor") end
    if spec.labels.ndim ~= 1 or tonumber(spec.labels._shape[0]) ~= n then
      raise(("Dataset: labels have shape %s, expected [%d]"):format(B.shape_str(spec.labels), n))
    end
  end
  local names = spec.modalities or {}
  local mods = {}
  for i = 1, #data do mods[i] = names[i] or ("x" .. i) end
  local self = setmetatable({
    name = spec.name or "dataset", modalities = mods, data = data, labels_t = spec.labels,
    rows = spec.rows, info = spec.info or {}, keep = spec.keep,
  }, Dataset)
  self.n = spec.rows and spec.rows.numel or n
  return self
end

function Dataset:size() return self.n end
function Dataset:num_modalities() return #self.data end
function Dataset:has_labels() return self.labels_t ~= nil end

-- 1-based modality number from a number or a name.
function Dataset:modality(m)
  if type(m) == "number" then
    if m < 1 or m > #self.data or m ~= math.floor(m) then
      raise(("%s: modality %s out of range 1..%d"):format(self.name, tostring(m), #self.data))
    end
    return m
  end
  for i, nm in ipairs(self.modalities) do if nm == m then return i end end
  raise(("%s: no modality '%s' (it has %s)"):format(self.name, tostring(m), table.concat(self.modalities, ", ")))
end

-- Shape of one sample of modality m (a table).
function Dataset:sample_shape(m)
  local s = self.data[self:modality(m or 1)]:shape()
  table.remove(s, 1)
  return s
end

-- A tensor of 0-based positions from a tensor (0-based values) or a Lua
-- table of 1-based positions.
local function index_tensor(self, indices)
  if B.is_tensor(indices) then
    if indices.ndim ~= 1 then raise(("%s: batch indices must be a 1-d tensor, got shape %s"):format(self.name, B.shape_str(indices))) end
    return indices
  end
  if type(indices) ~= "table" then
    raise(self.name .. ": batch expects a tensor of 0-based positions or a table of 1-based positions, got " .. type(indices))
  end
  local n = #indices
  local t = W.empty({n})
  local d = t.data
  for i = 1, n do
    local v = indices[i]
    if type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v > self.n then
      raise(("%s: position %s (element %d) is out of range 1..%d"):format(self.name, tostring(v), i, self.n))
    end
    d[i - 1] = v - 1
  end
  return t
end

local function rows_of(self, idx)
  if self.rows then return W.index_select(self.rows, 1, idx) end
  return idx
end

local function want_labels(self, opts)
  local lab = type(opts) == "table" and opts.labels or opts == true
  if lab and not self.labels_t then raise(self.name .. ": this data set has no labels") end
  return lab
end

-- The gathers run on one thread: they are memory-bound copies of a few MB,
-- where an OpenMP team costs more than it gains (and far more on a busy
-- machine: 1.9 s instead of 0.2 s for an epoch of PolyMNIST).
local function gather(self, idx, labels)
  local r = rows_of(self, idx)
  local x = {}
  for m, t in ipairs(self.data) do x[m] = W.index_select(t, 1, r) end
  local out = {x = x, index = idx, size = idx.numel}
  if labels then out.y = W.index_select(self.labels_t, 1, r) end
  return out
end

-- {x = {modality tensors [B, ...]}, index = positions [B] (0-based), y = labels [B] when asked}
function Dataset:batch(indices, opts)
  local idx = index_tensor(self, indices)
  local labels = want_labels(self, opts)
  local nt = C.td_get_num_threads()
  if nt <= 1 then return gather(self, idx, labels) end
  C.td_set_num_threads(1)
  local ok, out = pcall(gather, self, idx, labels)
  C.td_set_num_threads(nt)
  if not ok then error(out, 0) end
  return out
end

-- The batch of positions start .. start+count-1 (1-based); views of the
-- data (no copy) when the data set is not a subset.
function Dataset:range(start, count, opts)
  if start < 1 or count < 0 or start + count - 1 > self.n then
    raise(("%s: range %d..%d is out of 1..%d"):format(self.name, start, start + count - 1, self.n))
  end
  if self.rows then return self:batch(W.arange(start - 1, start - 1 + count, 1), opts) end
  local x = {}
  for m, t in ipairs(self.data) do x[m] = W.narrow(t, 1, start, count) end
  local out = {x = x, index = W.arange(start - 1, start - 1 + count, 1), size = count}
  if want_labels(self, opts) then out.y = W.narrow(self.labels_t, 1, start, count) end
  return out
end

-- All labels [N] (0-based class ids).
function Dataset:labels()
  if not self.labels_t then raise(self.name .. ": this data set has no labels") end
  if self.rows then return W.index_select(self.labels_t, 1, self.rows) end
  return self.labels_t
end

-- All samples of modality m [N, ...] (a view for a whole data set, a copy for a subset).
function Dataset:tensor(m)
  local t = self.data[self:modality(m or 1)]
  if self.rows then return W.index_select(t, 1, self.rows) end
  return t
end

-- A data set of the given positions (tensor 0-based or table 1-based).
function Dataset:subset(indices, name)
  local idx = index_tensor(self, indices)
  local r = rows_of(self, idx)
  if r == idx then r = W.clone(idx) end
  return D.new{name = name or (self.name .. " subset"), modalities = self.modalities, data = self.data,
               labels = self.labels_t, rows = r, info = self.info}
end

-- Random disjoint subsets: sizes are fractions (summing to at most 1) or
-- counts; a seeded permutation (tide.data's own generator).
function Dataset:split(sizes, seed)
  if type(sizes) ~= "table" or #sizes == 0 then raise(self.name .. ": split expects a list of fractions or counts") end
  local sum, fractions = 0, true
  for _, s in ipairs(sizes) do
    if type(s) ~= "number" or s < 0 then raise(self.name .. ": split sizes must be numbers >= 0") end
    sum = sum + s
    if s > 1 then fractions = false end
  end
  fractions = fractions and sum <= 1 + 1e-9
  local counts, total = {}, 0
  for i, s in ipairs(sizes) do
    counts[i] = fractions and math.floor(s * self.n + 0.5) or s
    if counts[i] ~= math.floor(counts[i]) then raise(self.name .. ": split counts must be whole numbers") end
    total = total + counts[i]
  end
  if fractions and total > self.n then
    counts[#counts] = counts[#counts] - (total - self.n)
    total = self.n
  end
  if total > self.n then raise(("%s: split of %d samples asked for %d"):format(self.name, self.n, total)) end
  local perm = W.empty({self.n})
  Rng.new(seed or 1, 0x73706c74):permutation_into(perm.data, self.n)
  local out, start = {}, 1
  for i, c in ipairs(counts) do
    out[i] = self:subset(W.narrow(perm, 1, start, c), ("%s split %d"):format(self.name, i))
    start = start + c
  end
  return unpack(out)
end

function Dataset:__tostring()
  local parts = {}
  for m, nm in ipairs(self.modalities) do
    parts[m] = nm .. " [" .. table.concat(self:sample_shape(m), ",") .. "]"
  end
  return ("%s: %d samples, %d modalit%s: %s%s"):format(self.name, self.n, #self.data, #self.data == 1 and "y" or "ies",
    table.concat(parts, ", "), self.labels_t and ", labels" or "")
end

-- tide.data.tensors{x1, x2, ..., labels = y, names = {...}, name = ...}: a
-- data set of your own tensors [N, ...] (not copied, not rescaled).
function D.tensors(spec)
  if B.is_tensor(spec) then spec = {spec} end
  if type(spec) ~= "table" then raise("tide.data.tensors: expects {x1, x2, ..., labels =}") end
  local data = {}
  for i, t in ipairs(spec) do data[i] = t end
  return D.new{name = spec.name or "tensors", modalities = spec.names, data = data, labels = spec.labels}
end

return D
