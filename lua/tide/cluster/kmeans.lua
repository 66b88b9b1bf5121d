-- tide.cluster.kmeans - k-means (Lloyd's algorithm) on any matrix x [N,D],
-- with k-means++ seeding and restarts, on the engine's kernels:
-- td_kmeans_pp_init (greedy k-means++), td_kmeans_assign (nearest center by
-- one GEMM per block, and the inertia), td_kmeans_update (cluster means).
--
--   local km = cluster.kmeans(x, 10, {n_init = 10, max_iter = 300, tol = 1e-4, seed = 1})
--   km.labels      [N] 0-based cluster ids      km.centers  [K,D]
--   km.inertia     sum of squared distances     km.n_iter   iterations of the best run
--   km:predict(x2) [N2] nearest centers
--
-- The loop is scikit-learn's: assign, update, stop when the assignment no
-- longer changes or when the total squared shift of the centers is at most
-- tol * (mean per-feature variance of x); then assign once more so labels
-- match the final centers. A cluster left empty takes the point farthest
-- from its own center. With n_init > 1 the run of least inertia is kept.
local ffi = require("ffi")
local tide = require("tide")
local B = require("tide_ffi")
local raise = B.raise

local M = {}

local KMeans = {}
KMeans.__index = KMeans
M.KMeans = KMeans

local OPTIONS = {n_init = true, max_iter = true, tol = true, seed = true, init = true, verbose = true}

local function check_options(opts, fname)
  for k in pairs(opts) do
    if not OPTIONS[k] then raise(("%s: unknown option '%s'"):format(fname, tostring(k))) end
  end
end

-- x must be a 2-d tensor; returns it detached (the kernels record nothing).
local function points(x, fname)
  if not tide.is_tensor(x) then raise(fname .. ": x must be a tensor [N,D], got " .. type(x)) end
  if x.ndim ~= 2 then raise(("%s: x %s must be [N,D]"):format(fname, B.shape_str(x))) end
  return x:detach()
end
M.points = points

local function whole(v, name, fname, lo)
  if type(v) ~= "number" or v ~= math.floor(v) or v < lo then
    raise(("%s: %s must be a whole number >= %d, got %s"):format(fname, name, lo, tostring(v)))
  end
  return v
end

-- scikit-learn's tolerance: tol times the mean per-feature variance.
local function abs_tol(x, tol)
  if tol == 0 then return 0 end
  return tol * x:var(1, 0):mean():item()
end

-- Empty clusters (NaN rows of new) move to the points farthest from their
-- current centers, one point each.
local function relocate_empty(x, labels, old, new)
  local empty = new:ne(new):sum(2):to_table()
  local dist
  for k = 1, #empty do
    if empty[k] > 0 then
      dist = dist or (x - old:index_select(1, labels)):square():sum(2)
      local i = dist:argmax():item() + 1
      new[k]:copy_(x[i])
      dist[i] = -1
    end
  end
  return new
end

-- One Lloyd run from centers -> centers, labels, inertia, iterations.
local function lloyd(x, centers, k, max_iter, tol)
  local n = x:size(1)
  local old
  local it = 0
  for i = 1, max_iter do
    it = i
    local labels = tide.kmeans_assign(x, centers, nil)
    local new = relocate_empty(x, labels, centers, tide.kmeans_update(x, labels, k))
    local shift = (new - centers):square():sum():item()
    centers = new
    if old and labels:eq(old):sum():item() == n then break end
    if shift <= tol then break end
    old = labels
  end
  local inertia = ffi.new("double[1]")
  local labels = tide.kmeans_assign(x, centers, inertia)
  return centers, labels, tonumber(inertia[0]), it
end

local function initial_centers(x, k, init, fname)
  if tide.is_tensor(init) then
    if init.ndim ~= 2 or init:size(1) ~= k or init:size(2) ~= x:size(2) then
      raise(("%s: init %s must be [K,D] = [%d,%d]"):format(fname, B.shape_str(init), k, x:size(2)))
    end
    return init:detach():clone()
  elseif init == nil or init == "k-means++" then
    return tide.kmeans_pp_init(x, k)
  elseif init == "random" then
    return x:index_select(1, tide.randperm(x:size(1)):narrow(1, 1, k))
  end
  raise(fname .. ": init must be 'k-means++', 'random' or a tensor [K,D], got " .. tostring(init))
end

-- k-means of x [N,D] into k clusters. opts: n_init (10; 1 when init is a
-- tensor), max_iter (300), tol (1e-4), seed (calls tide.manual_seed first),
-- init ('k-means++', 'random' or centers [K,D]), verbose.
function M.kmeans(x, k, opts)
  local fname = "cluster.kmeans"
  opts = opts or {}
  check_options(opts, fname)
  x = points(x, fname)
  whole(k, "k", fname, 1)
  if k > x:size(1) then raise(("%s: k = %d is more than the %d points of x"):format(fname, k, x:size(1))) end
  local n_init = whole(opts.n_init or (tide.is_tensor(opts.init) and 1 or 10), "n_init", fname, 1)
  local max_iter = whole(opts.max_iter or 300, "max_iter", fname, 1)
  local tol = opts.tol or 1e-4
  if opts.seed then tide.manual_seed(opts.seed) end
  local atol = abs_tol(x, tol)
  local best
  for run = 1, n_init do
    local c0 = initial_centers(x, k, opts.init, fname)
    local centers, labels, inertia, it = lloyd(x, c0, k, max_iter, atol)
    if opts.verbose then print(("kmeans run %d: inertia %.6g after %d iterations"):format(run, inertia, it)) end
    if not best or inertia < best.inertia then
      best = {centers = centers, labels = labels, inertia = inertia, n_iter = it, k = k}
    end
  end
  return setmetatable(best, KMeans)
end

-- Nearest centers of x [N,D] -> [N] 0-based ids (and the inertia).
function KMeans:predict(x)
  x = points(x, "KMeans:predict")
  local inertia = ffi.new("double[1]")
  local labels = tide.kmeans_assign(x, self.centers, inertia)
  return labels, tonumber(inertia[0])
end

function KMeans:__tostring()
  return ("KMeans(k=%d, inertia=%.6g, n_iter=%d)"):format(self.k, self.inertia, self.n_iter)
end

return M
