-- tide.data: data sets, loaders (order, seeds, drop_last), masks of missing
-- modalities, and the files of datasets/cache (skipped when it is absent).
local tide = require("tide")
local data = tide.data
local sys = require("tide.data.sys")

local function same(a, b)
  assert.same(a:shape(), b:shape())
  return (a - b):abs():max():item() == 0
end

local function values(t) return t:to_table() end

-- A data set whose sample i (0-based) holds the value i everywhere.
local function counting(n, m)
  local xs = {}
  local ids = tide.arange(n)
  for k = 1, (m or 2) do xs[k] = ids:reshape(n, 1, 1):expand(n, k, 3):contiguous() end
  xs.labels = tide.arange(n):mul_scalar(0.5):clamp(0, 9)
  return data.tensors(xs)
end

describe("tide.data datasets", function()
  it("batches by 0-based tensors or 1-based tables, labels only when asked", function()
    local ds = counting(10)
    assert.equal(10, ds:size())
    assert.equal(2, ds:num_modalities())
    local b = ds:batch(tide.from_table{3, 0, 9})
    assert.same({3, 1, 3}, b.x[1]:shape())
    assert.same({3, 2, 3}, b.x[2]:shape())
    assert.same({3, 0, 9}, values(b.x[2]:select(2, 2):select(2, 3)))
    assert.is_nil(b.y)
    local b2 = ds:batch({4, 1, 10}, {labels = true})
    assert.is_true(same(b.x[1], b2.x[1]))
    assert.same({1.5, 0, 4.5}, values(b2.y))
    assert.has_error(function() ds:batch({0}) end)
    assert.has_error(function() ds:batch({11}) end)
  end)

  it("range gives views of the whole set", function()
    local ds = counting(10)
    local b = ds:range(3, 4, {labels = true})
    assert.same({2, 3, 4, 5}, values(b.x[1]:reshape(4, 3):select(2, 1)))
    assert.same({2, 3, 4, 5}, values(b.index))
    assert.has_error(function() ds:range(8, 4) end)
  end)

  it("subsets and splits are disjoint and cover what they say", function()
    local ds = counting(100)
    local a, b, c = ds:split({0.7, 0.2, 0.1}, 3)
    assert.equal(70, a:size())
    assert.equal(20, b:size())
    assert.equal(10, c:size())
    local seen = {}
    for _, part in ipairs({a, b, c}) do
      for _, v in ipairs(values(part:tensor(1):reshape(-1, 3):select(2, 1))) do
        assert.is_nil(seen[v])
        seen[v] = true
      end
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(100, n)
    -- labels follow the rows
    local lab = a:labels()
    local x = a:tensor(1):reshape(-1, 3):select(2, 1)
    assert.is_true(same(lab, x:mul_scalar(0.5):clamp(0, 9)))
    -- the same seed, the same split
    local a2 = ds:split({0.7, 0.3}, 3)
    assert.is_true(same(a:tensor(1), a2:tensor(1)))
  end)

  it("names a missing cache file and says to run datasets/fetch", function()
    for _, fn in ipairs({"polymnist", "mnist", "fashion_mnist", "mnist_fashion"}) do
      local ok, err = pcall(data[fn], {root = "/nonexistent/cache"})
      assert.is_false(ok)
      assert.matches("/nonexistent/cache/", err, 1, true)
      assert.matches("datasets/fetch", err, 1, true)
    end
  end)
end)

describe("tide.data loader", function()
  local function epoch_indices(loader, e)
    local out, sizes = {}, {}
    for b in loader:iter{epoch = e} do
      sizes[#sizes + 1] = b.size
      for _, v in ipairs(values(b.index)) do out[#out + 1] = v end
    end
    return out, sizes
  end

  it("counts batches with and without drop_last", function()
    local ds = counting(103)
    local l1 = data.loader(ds, {batch_size = 10})
    local l2 = data.loader(ds, {batch_size = 10, drop_last = true, shuffle = true})
    assert.equal(11, l1:num_batches())
    assert.equal(10, l2:num_batches())
    local _, s1 = epoch_indices(l1, 1)
    local _, s2 = epoch_indices(l2, 1)
    assert.equal(11, #s1)
    assert.equal(3, s1[11])
    assert.equal(10, #s2)
    for _, s in ipairs(s2) do assert.equal(10, s) end
  end)

  it("visits every sample once per epoch, in order without shuffle", function()
    local ds = counting(57)
    local plain = epoch_indices(data.loader(ds, {batch_size = 8}), 1)
    for i = 1, 57 do assert.equal(i - 1, plain[i]) end
    local idx = epoch_indices(data.loader(ds, {batch_size = 8, shuffle = true, seed = 4}), 1)
    assert.equal(57, #idx)
    local moved = 0
    for i = 1, 57 do if idx[i] ~= i - 1 then moved = moved + 1 end end
    assert.is_true(moved > 40)
    table.sort(idx)
    for i = 1, 57 do assert.equal(i - 1, idx[i]) end
  end)

  it("batch contents match their indices", function()
    local ds = counting(40)
    local l = data.loader(ds, {batch_size = 16, shuffle = true, seed = 2, labels = true})
    for b in l:iter() do
      assert.is_true(same(b.x[1]:reshape(-1, 3):select(2, 1), b.index))
      assert.is_true(same(b.y, b.index:mul_scalar(0.5):clamp(0, 9)))
    end
  end)

  it("is deterministic for a seed, independent of tide.manual_seed", function()
    local ds = counting(200)
    local function run(seed, global)
      tide.manual_seed(global)
      tide.rand(5) -- move the global stream
      return (epoch_indices(data.loader(ds, {batch_size = 32, shuffle = true, seed = seed}), 1))
    end
    local a, b, c = run(7, 1), run(7, 99), run(8, 1)
    assert.same(a, b)
    assert.are_not.same(a, c)
    local l = data.loader(ds, {batch_size = 32, shuffle = true, seed = 7})
    assert.are_not.same(epoch_indices(l, 1), (epoch_indices(l, 2)))
  end)

  it("resumes mid-epoch with the batches an uninterrupted epoch gives", function()
    local ds = counting(100, 3)
    local opts = {batch_size = 16, shuffle = true, seed = 5, missing = 0.4}
    local full = {}
    for b in data.loader(ds, opts):iter{epoch = 3} do full[#full + 1] = b end
    local k = 0
    for b in data.loader(ds, opts):iter{epoch = 3, start = 4} do
      k = k + 1
      assert.is_true(same(b.index, full[4 + k].index))
      assert.is_true(same(b.mask, full[4 + k].mask))
      assert.equal(4 + k, b.step)
    end
    assert.equal(#full - 4, k)
    local l = data.loader(ds, opts)
    assert.is_true(same(l:batch(6, 3).mask, full[6].mask))
    -- the epoch counter moves on by itself
    l:set_epoch(3)
    local first = l:iter()()
    assert.is_true(same(first.index, full[1].index))
    assert.equal(4, l.epoch)
  end)
end)

describe("tide.data masks of missing modalities", function()
  local function check_masks(m, ratio, fixed)
    local n = 4000
    local ds = counting(n, m)
    local l = data.loader(ds, {batch_size = 500, shuffle = true, seed = 11, missing = ratio, missing_fixed = fixed})
    local missing, total = 0, 0
    for e = 1, 3 do
      for b in l:iter{epoch = e} do
        local mask = b.mask
        assert.same({m, b.size}, mask:shape())
        -- 0/1 only
        assert.equal(0, (mask:mul(tide.ones_like(mask) - mask)):abs():max():item())
        -- never all missing
        local present = mask:sum(1)
        assert.is_true(present:neg():max():item() <= -1)
        missing = missing + (mask.numel - mask:sum():item())
        total = total + mask.numel
      end
    end
    return missing / total
  end

  it("hits the ratio within tolerance and keeps one modality per sample", function()
    assert.is_true(math.abs(check_masks(5, 0.3) - 0.3) < 0.01)
    assert.is_true(math.abs(check_masks(2, 0.25) - 0.25) < 0.015)
    assert.is_true(math.abs(check_masks(5, 0.8) - 0.8) < 0.01) -- the maximum: one modality left
    assert.equal(0, check_masks(3, 0))
  end)

  it("solves the per-entry probability", function()
    for _, m in ipairs({2, 3, 5}) do
      for _, r in ipairs({0.1, 0.3, 0.45}) do
        local p = data.drop_probability(r, m)
        assert.is_true(math.abs(p - p ^ m / m - r) < 1e-9)
      end
    end
  end)

  it("fixed masks stay with their samples across epochs", function()
    local ds = counting(300, 4)
    local l = data.loader(ds, {batch_size = 300, shuffle = true, seed = 3, missing = 0.5, missing_fixed = true})
    local b1, b2 = l:batch(1, 1), l:batch(1, 2)
    assert.is_false(same(b1.index, b2.index))
    -- reorder epoch 2's mask into epoch 1's sample order
    local pos = {}
    for i, v in ipairs(values(b2.index)) do pos[v] = i end
    local order = {}
    for i, v in ipairs(values(b1.index)) do order[i] = pos[v] - 1 end
    assert.is_true(same(b1.mask, b2.mask:index_select(2, tide.from_table(order))))
    assert.is_true(math.abs(check_masks(4, 0.5, true) - 0.5) < 0.03)
  end)

  it("rejects ratios that would leave a sample empty", function()
    local ds = counting(10, 2)
    assert.has_error(function() data.loader(ds, {missing = 0.6}) end)
    assert.has_error(function() data.loader(counting(10, 1), {missing = 0.1}) end)
    assert.has_error(function() data.loader(ds, {batchsize = 3}) end)
  end)
end)

describe("tide.data cached data sets", function()
  -- the data sets are large: free them and reset the binding's collection
  -- threshold (it is set from the bytes in use), so later specs start low
  teardown(function()
    collectgarbage()
    collectgarbage()
    tide.gc_config{}
  end)

  local function need(name)
    local ok, file = data.available(name)
    if not ok then
      pending(("the data cache is missing (%s): run datasets/fetch"):format(file))
      return false
    end
    return true
  end

  local function check_range(t)
    local lo, hi = -t:neg():max():item(), t:max():item()
    assert.is_true(lo >= 0, "min " .. lo)
    assert.is_true(hi <= 1, "max " .. hi)
    assert.is_true(hi > 0.5, "max " .. hi)
  end

  local function check_labels(y, n)
    assert.same({n}, y:shape())
    assert.equal(0, -y:neg():max():item())
    assert.equal(9, y:max():item())
  end

  it("PolyMNIST: five [3,28,28] modalities in [0,1]; a loader epoch covers every tuple", function()
    if not need("polymnist") then return end
    local t0 = sys.now()
    local ds = data.polymnist{split = "train"}
    local load = sys.now() - t0
    assert.equal(8000, ds:size())
    assert.same({"m0", "m1", "m2", "m3", "m4"}, ds.modalities)
    check_labels(ds:labels(), 8000)
    assert.equal(1000, data.polymnist{split = "test"}:size())
    assert.equal(1000, data.polymnist{split = "val"}:size())
    local l = data.loader(ds, {batch_size = 256, shuffle = true, seed = 1, missing = 0.2, labels = true})
    local b = l:batch(1, 1)
    for m = 1, 5 do
      assert.same({256, 3, 28, 28}, b.x[m]:shape())
      check_range(b.x[m])
    end
    assert.same({5, 256}, b.mask:shape())
    local t1 = sys.now()
    local n = 0
    for bb in l:iter() do n = n + bb.size end
    local epoch = sys.now() - t1
    assert.equal(8000, n)
    print(("\n  PolyMNIST train: load %.2f s, one epoch (batch 256, masks) %.3f s"):format(load, epoch))
  end)

  it("MNIST: 10,000 digits [1,28,28]", function()
    if not need("mnist") then return end
    local ds = data.mnist()
    assert.equal(10000, ds:size())
    local b = ds:batch(tide.arange(0, 10000, 997), {labels = true})
    assert.same({11, 1, 28, 28}, b.x[1]:shape())
    check_range(b.x[1])
    check_labels(ds:labels(), 10000)
  end)

  it("Fashion-MNIST: 60,000 train and 10,000 test", function()
    if not need("fashion_mnist") then return end
    local tr, te = data.fashion_mnist{split = "train"}, data.fashion_mnist{split = "test"}
    assert.equal(60000, tr:size())
    assert.equal(10000, te:size())
    check_range(te:range(1, 100).x[1])
    check_labels(te:labels(), 10000)
    assert.has_error(function() data.fashion_mnist{split = "val"} end)
  end)

  it("MNIST x Fashion pairs: two [1,28,28] modalities", function()
    if not need("mnist_fashion") then return end
    local ds = data.mnist_fashion{split = "train"}
    assert.equal(8000, ds:size())
    assert.same({"mnist", "fashion"}, ds.modalities)
    local b = ds:range(1, 64)
    assert.same({64, 1, 28, 28}, b.x[1]:shape())
    assert.same({64, 1, 28, 28}, b.x[2]:shape())
    check_range(b.x[1])
    check_range(b.x[2])
    check_labels(ds:labels(), 8000)
  end)
end)
