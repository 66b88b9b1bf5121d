-- tide.data.loader - batches of a data set, shuffled with a seed, with
-- masks of missing modalities.
--
--   local loader = tide.data.loader(ds, {batch_size = 128, shuffle = true, seed = 1,
--                                        drop_last = false, labels = false,
--                                        missing = 0.3, missing_fixed = false})
--   for batch in loader:iter() do ... batch.x[1] ... batch.mask ... end
--
-- Determinism: the order of epoch e is a permutation drawn from (seed, e)
-- by tide.data's own generator, and the mask of batch k of epoch e from
-- (seed, e, k): independent of tide.manual_seed and of everything drawn
-- before, so a resumed run (loader:iter{epoch = e, start = k}) sees the
-- same batches as an uninterrupted one.
local B = require("tide_ffi")
local W = B.wrappers
local raise = B.raise
local Rng = require("tide.data.rng")
local D = require("tide.data.dataset")

local L = {}

local Loader = {}
Loader.__index = Loader
L.Loader = Loader

local STREAM_PERM, STREAM_MASK, STREAM_FIXED = 1, 2, 3

-- Per-entry drop probability p such that, after giving one random modality
-- back to samples that lost all M, the expected missing fraction is ratio:
-- E = p - p^M / M (increasing in p, from 0 to (M-1)/M).
local function drop_probability(ratio, m)
  local lo, hi = 0, 1
  for _ = 1, 60 do
    local p = (lo + hi) / 2
    if p - p ^ m / m < ratio then lo = p else hi = p end
  end
  return (lo + hi) / 2
end
L.drop_probability = drop_probability

local OPTIONS = {batch_size = true, shuffle = true, seed = true, drop_last = true, labels = true,
                 missing = true, missing_fixed = true}

function L.new(ds, opts)
  if not D.is_dataset(ds) then raise("tide.data.loader: the first argument must be a data set (tide.data.*)") end
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then raise("tide.data.loader: unknown option '" .. tostring(k) .. "'") end
  end
  local bs = opts.batch_size or 64
  if type(bs) ~= "number" or bs < 1 or bs ~= math.floor(bs) then
    raise("tide.data.loader: batch_size must be a whole number >= 1, got " .. tostring(bs))
  end
  local n, nm = ds:size(), ds:num_modalities()
  local self = setmetatable({
    dataset = ds, batch_size = bs, shuffle = opts.shuffle and true or false, seed = opts.seed or 1,
    drop_last = opts.drop_last and true or false, labels = opts.labels and true or false,
    n = n, epoch = 1,
  }, Loader)
  if self.labels and not ds:has_labels() then raise("tide.data.loader: " .. ds.name .. " has no labels") end
  self.nbatches = self.drop_last and math.floor(n / bs) or math.ceil(n / bs)
  local r = opts.missing
  if r ~= nil then
    local max = (nm - 1) / nm
    if type(r) ~= "number" or r < 0 or r > max + 1e-12 then
      raise(("tide.data.loader: missing = %s: the missing ratio must be in [0, %g] for %d modalities " ..
             "(every sample keeps at least one)"):format(tostring(r), max, nm))
    end
    self.missing = r
    self.drop_p = r >= max and 1 or drop_probability(r, nm)
    if opts.missing_fixed then self.fixed_mask = self:_draw_mask(Rng.new(self.seed, STREAM_FIXED), n) end
  end
  return self
end

function Loader:num_batches() return self.nbatches end
function Loader:size() return self.n end

-- The epoch the next iter() runs (1-based).
function Loader:set_epoch(e) self.epoch = e return self end

-- A [M, n] mask of 0/1: each entry 0 with probability drop_p, then one
-- uniformly chosen modality of an all-missing sample set back to 1.
function Loader:_draw_mask(rng, n)
  local nm, p = self.dataset:num_modalities(), self.drop_p
  local mask = W.empty({nm, n})
  local d = mask.data
  for b = 0, n - 1 do
    local present = 0
    for m = 0, nm - 1 do
      local v = rng:uniform() >= p and 1 or 0
      d[m * n + b] = v
      present = present + v
    end
    if present == 0 then d[rng:below(nm) * n + b] = 1 end
  end
  return mask
end

-- The order of epoch e: a tensor of 0-based positions, or nil (in order).
function Loader:permutation(e)
  if not self.shuffle then return nil end
  local perm = W.empty({self.n})
  Rng.new(self.seed, STREAM_PERM, e):permutation_into(perm.data, self.n)
  return perm
end

-- Batch k (1-based) of epoch e, given that epoch's permutation.
function Loader:_make(e, k, perm)
  local start = (k - 1) * self.batch_size
  local count = math.min(self.batch_size, self.n - start)
  local opts = self.labels and {labels = true} or nil
  local b
  if perm then b = self.dataset:batch(W.narrow(perm, 1, start + 1, count), opts)
  else b = self.dataset:range(start + 1, count, opts) end
  if self.fixed_mask then
    b.mask = W.index_select(self.fixed_mask, 2, b.index)
  elseif self.missing then
    b.mask = self:_draw_mask(Rng.new(self.seed, STREAM_MASK, e, k), count)
  end
  b.epoch, b.step = e, k
  return b
end

-- Batch k of epoch e alone (the same tensors iter() gives there).
function Loader:batch(k, e)
  e = e or self.epoch
  if k < 1 or k > self.nbatches then raise(("loader: batch %d is out of 1..%d"):format(k, self.nbatches)) end
  return self:_make(e, k, self:permutation(e))
end

-- for batch in loader:iter([{epoch =, start =}]) do ... end: one epoch
-- (default: the loader's next one, then the counter moves on); start
-- batches are skipped without being made (for resuming).
function Loader:iter(opts)
  opts = opts or {}
  local e = opts.epoch or self.epoch
  self.epoch = e + 1
  local k = opts.start or 0
  local perm = self:permutation(e)
  local nb = self.nbatches
  return function()
    k = k + 1
    if k > nb then return nil end
    return self:_make(e, k, perm)
  end
end

Loader.__call = Loader.iter

function Loader:__tostring()
  return ("loader(%s, batch_size=%d, %d batches%s%s%s)"):format(self.dataset.name, self.batch_size, self.nbatches,
    self.shuffle and (", shuffle seed " .. self.seed) or "", self.drop_last and ", drop_last" or "",
    self.missing and (", missing " .. self.missing .. (self.fixed_mask and " fixed" or "")) or "")
end

return L
