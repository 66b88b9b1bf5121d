-- examples/mvae.lua - the MVAE of Wu & Goodman (2018) (tide.models.mvae):
-- product of experts with the prior expert, trained on the joint + unimodal
-- ELBOs (+ a random subset per step when M > 2), on Fashion-MNIST image +
-- label (or image + class-name text) or on PolyMNIST.
--
--   bin/tide examples/mvae.lua                               (Fashion-MNIST image + label)
--   bin/tide examples/mvae.lua --text                        (image + "ankle boot" text)
--   bin/tide examples/mvae.lua --dataset polymnist --epochs 30
--   bin/tide examples/mvae.lua --quick --img /tmp            (a smoke run)
--   bin/tide examples/mvae.lua --cross                       (every ELBO term reconstructs
--                                                             every modality; not in the paper)
--
-- Flags (examples/multimodal_common.lua): --dataset fashion|polymnist,
-- --text, --epochs 20, --seed 1, --zdim 64, --batch 128, --lr 1e-3,
-- --beta 1, --anneal 5 (epochs of linear KL annealing), --lambda_label 50,
-- --lambda_text 5, --missing 0 (fraction of modality entries dropped per
-- batch), --kind mlp|conv, --lik_scale 0.75 (PolyMNIST's
-- Laplace scale), --subsets 1 (random subsets per step, M > 2),
-- --ll_n 1000 and --ll_K 1000 (test samples and importance samples of the
-- likelihoods and variances of log w, Fashion only; 0 to skip), --eval_n
-- 2000, --uncond_n 2000, --clf_epochs 3, --train_n N, --dir (checkpoints;
-- resumes), --img docs/img, --threads N, --quick, --cross (tide.models.mvae's
-- opts.cross: without it the image and label experts of Fashion-MNIST end up
-- on disjoint latent dims and cross-modal coherence is at chance).
-- Prints one line at the end:
--   RESULT model=mvae dataset=... coherence=... uncond_coherence=... probe_acc=...
--          kmeans_acc=... kmeans_nmi=... kmeans_ari=... coh_<a>_to_<b>=...
--          [iwae_marginal= lw_var_marginal= iwae_joint= ... (Fashion)] epochs= ... wall_s=
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "examples"
local tide = require("tide")
local MVAE = require("tide.models.mvae")
local E = dofile(here .. "/multimodal_common.lua")

local o = E.parse(arg or {}, E.defaults{zdim = 64, anneal = 5, subsets = 1, ll_n = 1000, cross = false})
if o.threads > 0 then tide.set_num_threads(o.threads) end
if o.quick then o.epochs, o.train_n, o.eval_n, o.uncond_n, o.ll_n, o.ll_K, o.clf_epochs, o.anneal =
  1, 3000, 300, 300, 100, 100, 1, 0 end
local d = E.data(o)
tide.manual_seed(o.seed)
local model = MVAE(E.modalities(o, d), {zdim = o.zdim, k = o.subsets, cross = o.cross})
local opt = tide.optim.Adam(model, {lr = o.lr})
print(("MVAE%s on %s (%s): %d train samples, %d parameters, z %d"):format(o.cross and " (cross)" or "", d.name,
      table.concat(d.names, "+"), d.train:size(), model:num_parameters(), o.zdim))
local clfs = E.classifiers(o, d)
local wall0 = os.time()
local hist = E.fit(model, opt, o, d)
local train_s = os.time() - wall0

local r = E.evaluate(model, o, d, clfs)
E.print_pairs(r)
print(("unconditional coherence %.3f, latent linear probe %.3f"):format(r.uncond, r.probe))
local ll = E.likelihoods(model, o, d)
local name = o.cross and "mvae_cross" or "mvae"
E.grids(model, o, d, name .. "_" .. d.name .. (o.quick and "_quick" or ""))
E.fields({{"model", name}, {"dataset", d.name}}, o, r, ll, hist, train_s, wall0)
