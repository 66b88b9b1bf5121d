-- examples/mmvae.lua - the MMVAE of Shi et al. (2019) (tide.models.mmvae):
-- mixture of experts, every modality's samples decode every modality,
-- trained on the looser IWAE bound or with DReG, on PolyMNIST or on
-- Fashion-MNIST image + label (or image + class-name text).
--
--   bin/tide examples/mmvae.lua                              (PolyMNIST, DReG, K = 1)
--   bin/tide examples/mmvae.lua --dataset fashion --K 4      (image + label)
--   bin/tide examples/mmvae.lua --estimator iwae
--   bin/tide examples/mmvae.lua --quick --img /tmp           (a smoke run)
--
-- Flags (examples/multimodal_common.lua): --dataset polymnist|fashion,
-- --text, --estimator dreg|iwae, --K 1 (samples per expert), --epochs 20,
-- --seed 1, --zdim 20, --batch 128, --lr 1e-3, --lambda_label 50,
-- --lambda_text 5, --missing 0, --kind mlp|conv (PolyMNIST: conv),
-- --lik_scale 0.75 (PolyMNIST's Laplace scale),
-- --ll_n 0 (Fashion: test samples of the likelihoods; 0 to skip), --ll_K
-- 1000, --eval_n 2000, --uncond_n 2000, --clf_epochs 3, --train_n N, --dir,
-- --img docs/img, --threads N, --quick.
-- Prints one line at the end:
--   RESULT model=mmvae dataset=... estimator=... K=... coherence=... uncond_coherence=... probe_acc=...
--          kmeans_acc=... kmeans_nmi=... kmeans_ari=... ...
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "examples"
local tide = require("tide")
local MMVAE = require("tide.models.mmvae")
local E = dofile(here .. "/multimodal_common.lua")

local o = E.parse(arg or {}, E.defaults{dataset = "polymnist", estimator = "dreg", ll_n = 0})
if o.threads > 0 then tide.set_num_threads(o.threads) end
if o.quick then o.epochs, o.train_n, o.eval_n, o.uncond_n, o.ll_n, o.ll_K, o.clf_epochs =
  1, 1000, 200, 200, math.min(o.ll_n, 100), 100, 1 end
local d = E.data(o)
tide.manual_seed(o.seed)
local model = MMVAE(E.modalities(o, d), {zdim = o.zdim, K = o.K, estimator = o.estimator})
local opt = tide.optim.Adam(model, {lr = o.lr})
print(("MMVAE (%s, K=%d) on %s (%s): %d train samples, %d parameters, z %d"):format(o.estimator, o.K, d.name,
      table.concat(d.names, "+"), d.train:size(), model:num_parameters(), o.zdim))
local clfs = E.classifiers(o, d)
local wall0 = os.time()
local fit_opts
if o.estimator == "dreg" then
  -- DReG runs its own two backward passes
  fit_opts = {backward = false, step = function(batch)
    opt:zero_grad()
    local loss, st = model:dreg_backward(batch.x, {mask = batch.mask, K = o.K})
    opt:step()
    return loss, st
  end}
end
local hist = E.fit(model, opt, o, d, fit_opts)
local train_s = os.time() - wall0

local r = E.evaluate(model, o, d, clfs)
E.print_pairs(r)
print(("unconditional coherence %.3f, latent linear probe %.3f"):format(r.uncond, r.probe))
local ll = E.likelihoods(model, o, d)
E.grids(model, o, d, "mmvae_" .. d.name .. (o.quick and "_quick" or ""))
E.fields({{"model", "mmvae"}, {"dataset", d.name}, {"estimator", o.estimator}, {"K", o.K}}, o, r, ll, hist,
         train_s, wall0)
