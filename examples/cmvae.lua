-- examples/cmvae.lua - CMVAE on PolyMNIST (Palumbo et al., ICLR 2024):
-- train with too many clusters, choose K post hoc on the validation split,
-- cluster the test split; also the baselines of the same split.
--
--   bin/tide examples/cmvae.lua                       # light architecture, 40 clusters
--   bin/tide examples/cmvae.lua --arch paper --epochs 50
--   bin/tide examples/cmvae.lua --model mmvae_plus    # MMVAE+, then k-means on its z means
--   bin/tide examples/cmvae.lua --model kmeans_pixels # k-means on the pixels of the 5 modalities
--
-- flags: --model cmvae|mmvae_plus|kmeans_pixels, --arch light|paper,
-- --epochs 25, --budget <s> (stop training after that many seconds; 0 = none),
-- --clusters 40, --zdim 32, --wdim 32, --beta 2.5, --hidden 256 (light),
-- --lr 1e-3, --batch 128, --samples 1, --objective elbo|iwae|dreg,
-- --prior laplace|normal, --learn_scales, --seed 1, --threads 2,
-- --out runs/cmvae (PNG grids, K curve, log, a checkpoint per epoch in <out>/ckpt, and the
-- final model with its chosen K in <out>/<model>.safetensors: tide.load_model reads it),
-- --resume (continue from the newest checkpoint in <out>/ckpt; without it an old one there is
-- replaced), --quick (1 epoch on 1,024 tuples),
-- --eval_every 1 (epochs between test ACC/NMI in the log; 0 = never),
-- --init_epoch 0 (after that epoch, k-means on the z means places the clusters; a list "2,40" does it
-- again after each: the shared z learns the digit over tens of epochs, clusters placed early stay
-- where its first structure was; 0 = never),
-- --warmup 0 (epochs over which beta rises linearly from 0 to --beta; 0 = none),
-- --likelihood laplace|normal, --lik_scale 0.75 (its scale / standard deviation),
-- --scale_head softplus|softmax (posterior scales: softplus per dimension, or d softmax over the
-- dimensions of z and of w as in the MMVAE+ authors' code).
-- --dataset polymnist|mnist_fashion (MNIST x Fashion-MNIST pairs of the same class: the
-- class is all the two modalities share).
-- Prints: RESULT model=... dataset=... acc=... nmi=... ari=... k=... (and the budget; for CMVAE also
-- acc_all, nmi_all, ari_all: the test clusters before the post-hoc pruning, all --clusters active)
local tide = require("tide")
local metrics = require("tide.metrics")
local now = require("tide.data.sys").now

local parse = require("tide.cli").parse

local DEFAULTS = {model = "cmvae", dataset = "polymnist", arch = "light", epochs = 25, budget = 0, clusters = 40, zdim = 32, wdim = 32,
                  beta = 2.5, hidden = 256, lr = 1e-3, batch = 128, samples = 1, objective = "elbo",
                  prior = "laplace", learn_scales = false, seed = 1, threads = 2, out = "runs/cmvae", resume = false,
                  quick = false, eval_every = 1, clip = 0, init_epoch = "0", warmup = 0, likelihood = "laplace", lik_scale = 0.75,
                  scale_head = "softplus"}

local M = {}

-- Everything as a function, so examples/main.lua can run it with its flags.
function M.run(argv, overrides)
  local o = parse(argv, DEFAULTS, "examples/cmvae.lua")
  for k, v in pairs(overrides or {}) do if o[k] == DEFAULTS[k] then o[k] = v end end
  if o.threads > 0 then tide.set_num_threads(o.threads) end
  if o.dataset ~= "polymnist" and o.dataset ~= "mnist_fashion" then
    error("--dataset must be polymnist or mnist_fashion, got " .. o.dataset, 0)
  end
  local ok_data, missing = tide.data.available(o.dataset)
  if not ok_data then
    error(o.dataset .. " is not in the data cache (" .. tostring(missing) .. "): run datasets/fetch first", 0)
  end
  local train_ds = tide.data[o.dataset]{split = "train"}
  local val_ds = tide.data[o.dataset]{split = "val"}
  local test_ds = tide.data[o.dataset]{split = "test"}
  if o.quick then
    train_ds = train_ds:split({1024}, o.seed)
    o.epochs = math.min(o.epochs, 1)
  end
  os.execute("mkdir -p '" .. o.out .. "'")
  local t_start = now()

  if o.model == "kmeans_pixels" then
    local xs = {}
    for m = 1, test_ds:num_modalities() do xs[m] = test_ds:tensor(m):reshape(test_ds:size(), -1) end
    local x = tide.cat(xs, 2)
    local km = tide.cluster.kmeans(x, 10, {n_init = 10, seed = o.seed})
    local s = metrics.scores(test_ds:labels(), km.labels)
    print(("RESULT model=kmeans_pixels dataset=%s acc=%.4f nmi=%.4f ari=%.4f k=10 seed=%d split=test wall_s=%.0f")
          :format(o.dataset, s.acc, s.nmi, s.ari, o.seed, now() - t_start))
    return s
  end

  tide.manual_seed(o.seed)
  local cls = require(o.model == "mmvae_plus" and "tide.models.mmvae_plus" or "tide.models.cmvae")
  local model = cls{modalities = train_ds:num_modalities(), shape = train_ds:sample_shape(1), arch = o.arch,
                    zdim = o.zdim, wdim = o.wdim, hidden = o.hidden, beta = o.beta, samples = o.samples,
                    objective = o.objective, clusters = o.clusters, likelihood = o.likelihood,
                    likelihood_scale = o.lik_scale, prior = o.prior, learn_scales = o.learn_scales,
                    scale_head = o.scale_head}
  local nparams = model:num_parameters()
  print(("%s (%s architecture): %d parameters, %d clusters, beta %g, %s with %d sample(s), batch %d, %d threads")
        :format(o.model, o.arch, nparams, o.model == "cmvae" and o.clusters or 0, o.beta, o.objective, o.samples,
                o.batch, tide.get_num_threads()))
  local opt = tide.optim.Adam(model, {lr = o.lr, amsgrad = true})
  local loader = tide.data.loader(train_ds, {batch_size = o.batch, shuffle = true, seed = o.seed, drop_last = true})
  local fit_step = model:fit_step(opt, o.clip > 0 and o.clip or nil)
  local nb = loader:num_batches()
  local function step(batch, ctx)
    if o.warmup > 0 then model.beta = o.beta * math.min(1, ctx.global_step / (o.warmup * nb)) end
    local loss, stats = fit_step(batch)
    stats.beta = model.beta
    return loss, stats
  end
  local t_train = now()
  -- per epoch on the test split: ACC/NMI of the clusters (CMVAE), ACC of
  -- k-means (10) on the z means averaged over modalities (how much the
  -- shared latent knows) and on each modality's own z means, averaged
  -- (km1_acc: what one modality's z, which the clusters see, knows)
  local function eval_test()
    local r = {}
    if o.model == "cmvae" then
      local s = metrics.scores(test_ds:labels(), model:predict(test_ds))
      r.acc, r.nmi = s.acc, s.nmi
    end
    local mu = model:embed(test_ds).mu_z
    local function km_acc(z)
      return metrics.acc(test_ds:labels(), tide.cluster.kmeans(z, 10, {n_init = 2, seed = o.seed}).labels)
    end
    r.km_acc, r.km1_acc = km_acc(mu:mean(1)), 0
    for m = 1, mu:size(1) do r.km1_acc = r.km1_acc + km_acc(mu:select(1, m):contiguous()) / mu:size(1) end
    return r
  end
  local init_after = {}
  for e in tostring(o.init_epoch):gmatch("%d+") do init_after[tonumber(e)] = true end
  local hist = tide.train.fit{
    model = model, optimizer = opt, loader = loader, epochs = o.epochs, step = step, backward = false,
    seed = o.seed, log = o.out .. "/log.csv", dir = o.out .. "/ckpt", resume = o.resume, overwrite = not o.resume,
    on_step_end = function(ctx)
      if o.budget > 0 and now() - t_train > o.budget then ctx.stop("time budget") end
    end,
    on_epoch_end = function(e)
      if o.model == "cmvae" and init_after[e] then model:init_clusters(train_ds, {seed = o.seed}) end
      if o.eval_every > 0 and (e % o.eval_every == 0 or e == o.epochs) then return eval_test() end
    end,
  }
  local train_s = now() - t_train
  local epochs_done = hist.epoch
  model:eval()
  local imgs = {}
  local result
  if o.model == "mmvae_plus" then
    -- baseline: k-means (10) on the test z means, averaged over modalities
    local e = model:embed(test_ds)
    local z = e.mu_z:mean(1)
    local km = tide.cluster.kmeans(z, 10, {n_init = 10, seed = o.seed})
    local s = metrics.scores(test_ds:labels(), km.labels)
    result = {acc = s.acc, nmi = s.nmi, ari = s.ari, k = 10}
  else
    -- post-hoc K on the validation split, then the test split's clusters
    local t0 = now()
    local all = metrics.scores(test_ds:labels(), model:predict(test_ds)) -- every cluster still active
    local res = model:choose_k(val_ds)
    imgs.k_curve = o.out .. "/cmvae_k_selection.png"
    tide.cluster.posthoc.plot(imgs.k_curve, res, {title = "CMVAE post-hoc K (" .. o.clusters .. " -> " .. res.k .. ")"})
    local pred = model:predict(test_ds)
    local s = metrics.scores(test_ds:labels(), pred)
    result = {acc = s.acc, nmi = s.nmi, ari = s.ari, k = res.k, posthoc_s = now() - t0,
              extra = (" acc_all=%.4f nmi_all=%.4f ari_all=%.4f k_all=%d"):format(all.acc, all.nmi, all.ari, o.clusters)}
    local ks, vs = {}, {}
    for i, k in ipairs(res.curve.ks) do ks[#ks + 1] = k; vs[#vs + 1] = ("%.3f"):format(res.curve.values[i]) end
    print(("post-hoc K: %d (penalized entropy by K = %s: %s)"):format(res.k, table.concat(ks, ","),
          table.concat(vs, ",")))
    -- samples per cluster: a row per cluster (by p(c)), 2 draws x M modalities
    local n = 2
    local g, clusters = model:sample_clusters(n)
    local sh = g:shape() -- [M, c*n, C,H,W]
    local Mm, nc = sh[1], #clusters
    g = g:reshape(Mm, nc, n, sh[3], sh[4], sh[5]):permute(2, 3, 1, 4, 5, 6):contiguous()
    imgs.clusters = o.out .. "/cmvae_cluster_samples.png"
    tide.viz.save_grid(imgs.clusters, g:reshape(nc * n * Mm, sh[3], sh[4], sh[5]):clamp(0, 1), {ncol = n * Mm})
  end
  imgs.model = o.out .. "/" .. o.model .. ".safetensors"
  model:save(imgs.model)
  -- cross-modal generation: 8 test tuples (M rows), then every modality generated from modality 1 (M rows)
  local b = test_ds:range(1, 8)
  local x = tide.stack(b.x, 1)
  local gen = model:cross_generate(b.x, 1)
  local sh = x:shape()
  imgs.cross = o.out .. "/" .. o.model .. "_cross_modal.png"
  tide.viz.save_grid(imgs.cross, tide.cat({x, gen:clamp(0, 1)}, 1):reshape(2 * sh[1] * sh[2], sh[3], sh[4], sh[5]),
                     {ncol = sh[2]})
  local total = now() - t_start
  print(("RESULT model=%s dataset=%s acc=%.4f nmi=%.4f ari=%.4f k=%d arch=%s seed=%d epochs=%d params=%d " ..
         "train_s=%.0f s_per_epoch=%.1f total_s=%.0f split=test%s")
        :format(o.model, o.dataset, result.acc, result.nmi, result.ari, result.k, o.arch, o.seed, epochs_done, nparams, train_s,
                train_s / math.max(epochs_done, 1), total, result.extra or ""))
  for _, k in ipairs({"k_curve", "clusters", "cross", "model"}) do
    if imgs[k] then print(("wrote %s"):format(imgs[k])) end
  end
  result.images, result.model, result.train_s, result.epochs = imgs, model, train_s, epochs_done
  return result
end

-- run as a script (not when required by examples/main.lua)
if arg and arg[0] and arg[0]:match("cmvae%.lua$") then M.run(arg) end
return M
