-- examples/gated_vae.lua - the gated-fusion VAE (tide.models.gated_vae):
-- experts for each modality and the joint input, a softmax gate weighing
-- them per sample, weighted log-linear pooling, ELBO with lambda-weighted
-- reconstructions and beta KL; on PolyMNIST or on Fashion-MNIST image +
-- label (or image + class-name text). Trained with modalities dropped at
-- random (--missing 0.3), so the gate and the joint expert learn to infer
-- from subsets, which conditional generation needs.
--
--   bin/tide examples/gated_vae.lua                          (PolyMNIST)
--   bin/tide examples/gated_vae.lua --dataset fashion        (image + label)
--   bin/tide examples/gated_vae.lua --quick --img /tmp       (a smoke run)
--
-- Flags (examples/multimodal_common.lua): --dataset polymnist|fashion,
-- --text, --epochs 20, --seed 1, --zdim 20, --batch 128, --lr 1e-3, --beta 1,
-- --anneal 0, --lambda_label 50, --lambda_text 5, --missing 0.3, --kind
-- mlp|conv (PolyMNIST: conv), --lik_scale 0.75 (PolyMNIST's
-- Laplace scale), --ll_n 0, --ll_K 1000, --eval_n 2000,
-- --uncond_n 2000, --clf_epochs 3, --train_n N, --dir, --img docs/img,
-- --threads N, --quick.
-- Prints one line at the end:
--   RESULT model=gated_vae dataset=... coherence=... uncond_coherence=... probe_acc=...
--          kmeans_acc=... kmeans_nmi=... kmeans_ari=... w_joint=... ...
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "examples"
local tide = require("tide")
local Gated = require("tide.models.gated_vae")
local E = dofile(here .. "/multimodal_common.lua")

local o = E.parse(arg or {}, E.defaults{dataset = "polymnist", missing = 0.3, ll_n = 0})
if o.threads > 0 then tide.set_num_threads(o.threads) end
if o.quick then o.epochs, o.train_n, o.eval_n, o.uncond_n, o.ll_n, o.ll_K, o.clf_epochs =
  1, 1000, 200, 200, math.min(o.ll_n, 100), 100, 1 end
local d = E.data(o)
tide.manual_seed(o.seed)
local model = Gated(E.modalities(o, d), {zdim = o.zdim})
local opt = tide.optim.Adam(model, {lr = o.lr})
print(("gated-fusion VAE on %s (%s): %d train samples, %d parameters, z %d"):format(d.name,
      table.concat(d.names, "+"), d.train:size(), model:num_parameters(), o.zdim))
local clfs = E.classifiers(o, d)
local wall0 = os.time()
local hist = E.fit(model, opt, o, d)
local train_s = os.time() - wall0
local last = hist.epochs[#hist.epochs]
local w_joint = last and last.w_joint or 0

local r = E.evaluate(model, o, d, clfs)
E.print_pairs(r)
print(("unconditional coherence %.3f, latent linear probe %.3f"):format(r.uncond, r.probe))
local ll = E.likelihoods(model, o, d)
E.grids(model, o, d, "gated_vae_" .. d.name .. (o.quick and "_quick" or ""))
E.fields({{"model", "gated_vae"}, {"dataset", d.name}, {"w_joint", w_joint}}, o, r, ll, hist, train_s, wall0)
