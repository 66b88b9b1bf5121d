-- examples/dcmvae.lua - D-CMVAE: a DDPM conditioned on CMVAE's reconstructions
-- (tide.models.dcmvae) that sharpens them, on one PolyMNIST modality; then
-- CMVAE's cluster samples, their refinements and (with --ddpm) an
-- unconditional DDPM's samples, compared.
--
--   bin/tide examples/dcmvae.lua --quick --cmvae runs/main/cmvae.safetensors     (~12 minutes)
--   bin/tide examples/dcmvae.lua --cmvae runs/cmvae/cmvae.safetensors --modality 1 \
--            --ddpm out/ddpm/ddpm_ema.safetensors --minutes 20
--   bin/tide examples/dcmvae.lua --quick       (no CMVAE: a stand-in VAE, a 4x blur; 5 minutes)
--
-- The conditioning y of modality --modality (1-based) comes from
--   --cmvae PATH  a tide.models.cmvae checkpoint (tide.load_model: the model
--                 with its chosen clusters): y = CMVAE's reconstruction from
--                 the posterior mean of modality --src: "mix" (default: per
--                 image a source drawn from all modalities, the same one
--                 included, so the DDPM sees self- and cross-modal ones), or
--                 a modality number (--src = --modality: self-reconstruction).
--                 --cond_sample: from posterior draws z ~ q(z|x), w ~ q(w|x)
--                 instead of the means.
--   (none)        a stand-in with the blur of a VAE output: 4x4 average pooling
--                 then nearest up-sampling of the true image.
--
-- Evaluation (with --cmvae), EMA weights, DDIM with --ddim steps:
--   per chosen cluster c, --per_cluster images of modality m from CMVAE
--   (z ~ p(z|c), w ~ p(w); default: --n_eval images in all), each refined by
--   the D-CMVAE, and (--ddpm PATH: an examples/ddpm.lua checkpoint of the same
--   modality) as many unconditional DDPM samples. With the classifier of
--   modality m (--clf, default out/classifiers/polymnist_m<m-1>.safetensors
--   from examples/train_classifiers.lua; skipped with a warning when the
--   default is missing), the Fréchet distance of its features between the
--   first half of the test images and each sample set (fid_real: the second
--   half, as many images as the sample sets: the floor), and label_keep (the
--   classifier's label of a refined image = that of its CMVAE source;
--   label_keep_confident: the same over the sources the classifier gives
--   probability >= 0.9, confident_frac of them). From
--   CMVAE itself, the cluster of an image (argmax q(c|z) at the mean of
--   q(z|x_m)) against the cluster it was drawn from: cluster_keep_cmvae (the
--   CMVAE samples), cluster_keep_dcmvae (their refinements). Timing per image:
--   DDIM (all the refinements), the full ancestral chain (--ancestral_n images).
--   Grid <img>/dcmvae_clusters[_quick].png: per cluster a row of CMVAE samples
--   and below it their refinements.
-- Classifier-free guidance toward the conditioning: trained with --cond_drop p
-- (0.1: each sample's y zeroed with probability p), sampled with --guidance w
-- (2): eps = (1 + w) eps(x_t, y) - w eps(x_t, null), twice the network work
-- per step; it keeps the source's digit and cluster (docs/results/ddpm.md).
-- --guidance 0: plain conditioning. A --load'ed model trained without
-- --cond_drop samples with guidance 0 unless --guidance is given.
--
-- flags: --dataset polymnist|mnist_fashion|mnist (mnist_fashion: a CMVAE trained with
-- examples/cmvae.lua --dataset mnist_fashion; classifiers mnist / fashion_mnist), --modality 1, --src mix, --minutes 20 (or
-- --steps N), --batch 32, --lr 1e-3, --warmup 100, --ema 0.995, --base 16,
-- --mults 1,2, --T 1000, --ddim 50, --n 16 (test images of the reconstruction
-- grid), --n_eval 500, --per_cluster 0 (auto), --ancestral_n 2, --grid_n 8,
-- --grid_clusters 10, --from 1 (1: the full chain from noise; f < 1: from the
-- conditioning noised to step f T: a truncated chain), --cmvae, --ddpm, --clf, --seed 1, --threads 0,
-- --img docs/img, --dir out/dcmvae (checkpoint <dir>/dcmvae_ema.safetensors),
-- --load PATH (no training: evaluate that checkpoint, e.g. with another --from),
-- --quick (10 minutes of training, --ddim 25, --n_eval 200, --from 0.5: after
-- a few thousand steps the full chain is still noisy, the truncated one keeps
-- CMVAE's image; docs/results/ddpm.md).
-- ddim_ms_per_image times the refinements as run (with --from < 1, part of the
-- chain); ddpm_ms_per_image always the full ancestral chain of T steps.
-- Prints one line at the end:
--   RESULT model=dcmvae dataset=... cond=... k=... fid_real=... fid_cmvae=... fid_dcmvae=... fid_ddpm=...
--          label_keep=... label_keep_confident=... confident_frac=... cluster_keep_cmvae=... cluster_keep_dcmvae=... ddim_ms_per_image=...
--          ddpm_ms_per_image=... train_s=... steps=... params=... (na: not measured in this run)
-- (mse_*: the mean squared error to the true test images of the conditioning
-- and of its refinement, [0,1] scale).
local tide = require("tide")
local DC = require("tide.models.dcmvae")
local Clf = require("tide.classifier")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {dataset = "polymnist", modality = 1, src = "mix", minutes = 20, steps = 0, batch = 32,
                            lr = 1e-3, warmup = 100, ema = 0.995, base = 16, mults = "1,2", T = 1000, ddim = 50,
                            n = 16, n_eval = 500, per_cluster = 0, ancestral_n = 2, grid_n = 8, grid_clusters = 10, from = 1,
                            seed = 1, threads = 0, cmvae = "", ddpm = "", clf = "", load = "", img = "docs/img",
                            dir = "out/dcmvae", quick = false, cond_sample = false, cond_drop = 0.1, guidance = 2})
local given = " " .. table.concat(arg or {}, " ") .. " "   -- the flags on the command line
if o.quick then -- the preset, for the flags not given on the command line
  local preset = o.cmvae ~= "" and {minutes = 10, ddim = 25, n_eval = 200, from = 0.5} or {minutes = 5}
  for k, v in pairs(preset) do
    if not given:find(" %-%-" .. k .. " ") then o[k] = v end
  end
  o.dir = o.dir .. "-quick"
end
if o.threads > 0 then tide.set_num_threads(o.threads) end
if o.src ~= "mix" then
  o.src = tonumber(o.src) or error("--src must be a modality number or mix, got " .. o.src)
end
local mults = {}
for v in o.mults:gmatch("%d+") do mults[#mults + 1] = tonumber(v) end

local now = require("tide.data.sys").now
local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- data: all modalities of a batch as a list; the target modality [N,C,H,W]
local train, test
if o.dataset == "polymnist" or o.dataset == "mnist_fashion" then
  train, test = tide.data[o.dataset]{split = "train"}, tide.data[o.dataset]{split = "test"}
elseif o.dataset == "mnist" then
  if o.cmvae ~= "" then error("--cmvae needs --dataset polymnist or mnist_fashion") end
  train, test = tide.data.mnist{split = "train"}, tide.data.mnist{split = "test"}
else
  error("--dataset must be polymnist, mnist_fashion or mnist")
end
if o.modality < 1 or o.modality > train:num_modalities() then
  error(("--modality must be 1..%d (1-based), got %d"):format(train:num_modalities(), o.modality))
end
local function stacked(ds, idx)
  local xs = {}
  for m = 1, ds:num_modalities() do xs[m] = ds:tensor(m):index_select(1, idx) end
  return xs
end
local X = train:tensor(o.modality)
local N, C = X:size(1), X:size(2)
local name = o.dataset .. "_m" .. (o.modality - 1)

-- the conditioning: recon(xs) with xs the list of modalities of a batch
local recon, cmvae, cond_name
if o.cmvae ~= "" then
  cmvae = DC.load_cmvae(o.cmvae)
  if cmvae.M ~= train:num_modalities() or cmvae.shape[1] ~= C then
    error(("%s: a CMVAE of %d modalities of %d channels, the data has %d of %d"):format(o.cmvae, cmvae.M,
          cmvae.shape[1], train:num_modalities(), C))
  end
  local r = DC.cmvae_recon(cmvae, o.modality, o.src, {sample = o.cond_sample})
  recon = function(xs) return r(tide.stack(xs, 1)) end
  cond_name = (o.src == "mix" and "cmvae_mix" or o.src == o.modality and "cmvae_self"
               or ("cmvae_cross_from_m" .. (o.src - 1))) .. (o.cond_sample and "_sampled" or "")
else
  recon = function(xs) return xs[o.modality]:avg_pool2d(4, 4):upsample_nearest2d(4) end
  cond_name = "blur4_standin"
end

-- the judges, loaded before training so that a wrong path fails at once
local ddpm, clf, clf_path
if o.ddpm ~= "" then
  if not cmvae then error("--ddpm is compared in the --cmvae evaluation: give --cmvae too") end
  ddpm = DC.load_ddpm(o.ddpm, {conditional = false, channels = C})
end
if cmvae then
  local default_clf = o.dataset == "mnist_fashion" and ({"mnist", "fashion_mnist"})[o.modality]
                      or ("polymnist_m%d"):format(o.modality - 1)
  clf_path = o.clf ~= "" and o.clf or ("out/classifiers/%s.safetensors"):format(default_clf)
  if o.clf == "" and not exists(clf_path) then
    print(("warning: no classifier %s (bin/tide examples/train_classifiers.lua --which polymnist): " ..
           "no Fréchet distances or label_keep in this run"):format(clf_path))
    clf_path = nil
  else
    clf = Clf.load(clf_path)
    if clf.config.kind ~= "image" or clf.config.channels ~= C then
      error(("%s is not an image classifier of %d channels"):format(clf_path, C))
    end
  end
end

tide.manual_seed(o.seed)
local model
if o.load ~= "" then
  model = DC.load_ddpm(o.load, {conditional = true, channels = C})
  model.recon = recon
  print(("D-CMVAE %s on %s (%s): no training, %d parameters"):format(o.load, name, cond_name, model:num_parameters()))
  if model.cond_drop == 0 and o.guidance > 0 and not given:find(" %-%-guidance ") then
    print(o.load .. " was trained without --cond_drop: sampling without guidance")
    o.guidance = 0
  end
else
  model = DC{channels = C, recon = recon, T = o.T, unet = {base = o.base, mults = mults}, cond_drop = o.cond_drop}
  print(("D-CMVAE on %s (%s): %d images, UNet base %d mults %s, %d parameters"):format(name, cond_name, N, o.base,
        o.mults, model:num_parameters()))
end
io.stdout:flush()

local step, train_s, avg = 0, 0, nil
local ckpt = o.load
if o.load == "" then
  step, train_s, avg = model:fit(function()
    local xs = stacked(train, tide.randperm(N):narrow(1, 1, o.batch))
    return model:loss(xs[o.modality], {batch = xs})
  end, o)
  os.execute("mkdir -p " .. o.dir)
  ckpt = o.dir .. "/dcmvae_ema.safetensors"
  model:with_ema(function() model:save(ckpt, {metadata = {dataset = name, cond = cond_name, cmvae = o.cmvae}}) end)
  print("wrote " .. ckpt)
end
local suffix = o.quick and "_quick" or ""

-- refine the reconstructions of n test images; compare both to the truth
local xs = stacked(test, tide.arange(0, o.n))
local y = tide.no_grad(function() return recon(xs) end)
local s_test = now()
local chain = {steps = o.ddim, from = o.from, guidance = o.guidance}   -- how every refinement below samples
local sharp = model:with_ema(function() return model:refine(y, chain) end)
local ddim_ms_test = (now() - s_test) * 1000 / o.n
local truth = xs[o.modality]
local mse_vae = (y - truth):square():mean():item()
local mse_ref = (sharp - truth):square():mean():item()
if o.img ~= "" then
  os.execute("mkdir -p " .. o.img)
  local path = ("%s/ddpm_dcmvae_%s%s.png"):format(o.img, cond_name, suffix)
  tide.viz.save_grid(path, {truth, y, sharp}, {scale = 2})
  print("wrote " .. path .. " (rows: test images, their conditioning, its refinement)")
end

local function fmt(v) return v and ("%.4f"):format(v) or "na" end

if not cmvae then
  print(("RESULT model=dcmvae dataset=%s cond=%s params=%d steps=%d batch=%d train_s=%.0f loss=%.4f " ..
         "mse_vae=%.4f mse_refined=%.4f ddim_steps=%d from=%g ddim_ms_per_image=%.1f ckpt=%s"):format(name, cond_name,
         model:num_parameters(), step, o.batch, train_s, avg or 0, mse_vae, mse_ref, o.ddim, o.from, ddim_ms_test,
         ckpt))
  return
end

---------------------------------------------------------------- evaluation against CMVAE and the DDPM

tide.manual_seed(o.seed + 1)
local clusters = select(3, DC.cmvae_samples(cmvae, o.modality, 1))
local K = #clusters
local per = o.per_cluster > 0 and o.per_cluster or math.max(1, math.floor(o.n_eval / K))
local source, ids = DC.cmvae_samples(cmvae, o.modality, per, clusters)
local n_gen = source:size(1)
print(("evaluation: %d clusters x %d CMVAE samples of m%d, refined with DDIM %d steps%s"):format(K, per,
      o.modality - 1, o.ddim, o.from < 1 and (" from step %.0f"):format(o.from * (model.T - 1)) or ""))
io.stdout:flush()
local s0 = now()
local refined = model:with_ema(function() return model:refine(source, chain) end)
local ddim_ms = (now() - s0) * 1000 / n_gen
local anc_ms
if o.ancestral_n > 0 then
  local a = math.min(o.ancestral_n, n_gen)
  s0 = now()
  model:with_ema(function() return model:refine(source:narrow(1, 1, a), {sampler = "ancestral", guidance = o.guidance}) end)
  anc_ms = (now() - s0) * 1000 / a
end
local uncond, uncond_ms
if ddpm then
  s0 = now()
  uncond = ddpm:sample_images(n_gen, {steps = o.ddim, shape = cmvae.shape})
  uncond_ms = (now() - s0) * 1000 / n_gen
end

local keep = DC.content_keep{source = source, refined = refined, clusters = ids, cmvae = cmvae, m = o.modality,
                             clf = clf}
local fid = {}
if clf then
  local real = test:tensor(o.modality)
  local half = math.floor(real:size(1) / 2)
  local feats = function(x) return Clf.features(clf, x) end
  local fa = feats(real:narrow(1, 1, half))
  local D = require("tide.metrics.frechet").frechet_distance
  fid.real = D(fa, feats(real:narrow(1, half + 1, math.min(half, n_gen))))
  fid.cmvae = D(fa, feats(source))
  fid.dcmvae = D(fa, feats(refined))
  if uncond then fid.ddpm = D(fa, feats(uncond)) end
end

if o.img ~= "" then
  local rows = {}
  for k = 1, math.min(K, o.grid_clusters) do
    local g = math.min(o.grid_n, per)
    rows[#rows + 1] = source:narrow(1, (k - 1) * per + 1, g)
    rows[#rows + 1] = refined:narrow(1, (k - 1) * per + 1, g)
  end
  local path = ("%s/dcmvae_clusters%s.png"):format(o.img, suffix)
  tide.viz.save_grid(path, rows, {scale = 2})
  local shown = {}
  for k = 1, math.min(K, o.grid_clusters) do shown[k] = clusters[k] end
  print(("wrote %s (per cluster %s: CMVAE samples, below them their D-CMVAE refinements)"):format(path,
        table.concat(shown, ",")))
  if uncond then
    local upath = ("%s/ddpm_uncond_%s%s.png"):format(o.img, name, suffix)
    tide.viz.save_grid(upath, uncond:narrow(1, 1, math.min(64, n_gen)), {ncol = 8, scale = 2})
    print("wrote " .. upath .. " (unconditional DDPM samples, DDIM)")
  end
end

print(("RESULT model=dcmvae dataset=%s cond=%s cmvae=%s k=%d per_cluster=%d n_gen=%d fid_real=%s fid_cmvae=%s " ..
       "fid_dcmvae=%s fid_ddpm=%s label_keep=%s label_keep_confident=%s confident_frac=%s cluster_keep_cmvae=%s cluster_keep_dcmvae=%s ddim_steps=%d from=%g cond_drop=%g guidance=%g " ..
       "ddim_ms_per_image=%.1f ddpm_ms_per_image=%s uncond_ddim_ms_per_image=%s train_s=%.0f steps=%d batch=%d " ..
       "params=%d loss=%.4f mse_vae=%.4f mse_refined=%.4f clf=%s ckpt=%s"):format(name, cond_name, o.cmvae, K, per, n_gen,
       fmt(fid.real), fmt(fid.cmvae), fmt(fid.dcmvae), fmt(fid.ddpm), fmt(keep.label_keep),
       fmt(keep.label_keep_confident), fmt(keep.confident_frac),
       fmt(keep.cluster_keep_cmvae), fmt(keep.cluster_keep_dcmvae), o.ddim, o.from, model.cond_drop, o.guidance, ddim_ms,
       anc_ms and ("%.1f"):format(anc_ms) or "na", uncond_ms and ("%.1f"):format(uncond_ms) or "na", train_s, step,
       o.batch, model:num_parameters(), avg or 0, mse_vae, mse_ref, clf_path or "na", ckpt))
