-- examples/multimodal_common.lua - what the examples of the multimodal VAEs
-- (mvae.lua, mmvae.lua, mopoe.lua, gated_vae.lua) share: flags, the data,
-- the modalities, the coherence classifiers, training, evaluation and the
-- PNG grids. Loaded by those scripts with dofile; not an example itself.
--
-- Data (--dataset):
--   fashion    Fashion-MNIST, image [1,28,28] (Bernoulli on the gray levels)
--              + label (one-hot [10], categorical), or with --text + the class
--              name as characters ("ankle boot", tide.models.text)
--   polymnist  PolyMNIST, 5 images [3,28,28] (Laplace, scale 0.75)
-- Nets: tide.models.nets, "mlp" (784-512-512 -> D for Fashion images,
-- 10-64-64 -> D for labels) or "conv" (--kind conv; PolyMNIST's default).
-- Coherence classifiers (tide.classifier) are trained once and cached in
-- out/classifiers/ (--clf_epochs).
local tide = require("tide")
local nets = require("tide.models.nets")
local text = require("tide.models.text")
local C = require("tide.classifier")
local metrics = require("tide.metrics")
local MM = require("tide.models.multimodal")

local E = {}

-- --flag value / --bool flags over defaults (unknown flags are errors)
E.parse = require("tide.cli").parse

-- The flags every example takes (each script overrides some defaults).
function E.defaults(over)
  local d = {dataset = "fashion", text = false, epochs = 20, seed = 1, zdim = 20, batch = 128, lr = 1e-3,
             kind = "", beta = 1, anneal = 0, lambda_label = 50, lambda_text = 5, missing = 0, K = 1,
             eval_n = 2000, uncond_n = 2000, clf_epochs = 3, dir = "", img = "docs/img", threads = 0,
             quick = false, train_n = 0, ll_n = 0, ll_K = 1000, lik_scale = 0.75}
  for k, v in pairs(over or {}) do d[k] = v end
  return d
end

---------------------------------------------------------------- data

-- -> {train =, test = (tide.data datasets of the modalities, with labels),
--     kinds = {"image", "label" | "text"} or 5 x "image", channels =,
--     name = "fashion_mnist" | "fashion_mnist_text" | "polymnist"}
function E.data(o)
  local d = {}
  if o.dataset == "fashion" then
    local function pair(split)
      local ds = tide.data.fashion_mnist{split = split}
      local img, y = ds:tensor(1), ds:labels()
      local second = o.text and text.from_labels(y) or tide.one_hot(y, 10)
      return tide.data.tensors{img, second, labels = y, names = {"image", o.text and "text" or "label"}}
    end
    d.train, d.test = pair("train"), pair("test")
    d.kinds = {"image", o.text and "text" or "label"}
    d.channels = 1
    d.name = o.text and "fashion_mnist_text" or "fashion_mnist"
  elseif o.dataset == "polymnist" then
    d.train, d.test = tide.data.polymnist{split = "train"}, tide.data.polymnist{split = "test"}
    d.kinds = {}
    for m = 1, d.train:num_modalities() do d.kinds[m] = "image" end
    d.channels = 3
    d.name = "polymnist"
  else
    error("--dataset must be fashion or polymnist, got " .. tostring(o.dataset))
  end
  if o.train_n > 0 and o.train_n < d.train:size() then d.train = d.train:split({o.train_n}, o.seed) end
  d.names = d.train.modalities
  return d
end

-- all the data of a dataset as {x1, ..., xM}, first n rows
function E.tensors(ds, n)
  local xs = {}
  n = math.min(n or ds:size(), ds:size())
  for m = 1, ds:num_modalities() do xs[m] = ds:tensor(m):narrow(1, 1, n) end
  return xs, ds:labels():narrow(1, 1, n)
end

---------------------------------------------------------------- modalities

function E.modalities(o, d)
  local mods = {}
  local kind = o.kind ~= "" and o.kind or (d.name == "polymnist" and "conv" or "mlp")
  for m, k in ipairs(d.kinds) do
    if k == "image" then
      local shape = {d.channels, 28, 28}
      local spec = {kind = kind, shape = shape, latent = o.zdim, hidden = {512, 512}}
      mods[m] = {name = d.names[m], encoder = nets.encoder(spec), decoder = nets.decoder(spec),
                 likelihood = d.channels == 1 and "bernoulli" or "laplace",
                 scale = d.channels == 3 and o.lik_scale or nil}
    elseif k == "label" then
      local spec = {kind = "mlp", shape = {10}, latent = o.zdim, hidden = {64, 64}}
      mods[m] = {name = "label", encoder = nets.encoder(spec), decoder = nets.decoder(spec),
                 likelihood = "categorical", lambda = o.lambda_label}
    else
      mods[m] = text.modality{latent = o.zdim, lambda = o.lambda_text}
    end
  end
  return mods
end

---------------------------------------------------------------- classifiers

-- One classifier (or function) per modality, for the coherence metrics.
function E.classifiers(o, d)
  local clfs = {}
  local dir = "out/classifiers"
  os.execute("mkdir -p " .. dir)
  local ytr = d.train:labels()
  for m, k in ipairs(d.kinds) do
    if k == "label" then
      clfs[m] = metrics.identity_classifier
    else
      local path = ("%s/%s_%s%s.safetensors"):format(dir, d.name, d.names[m], o.quick and "_quick" or "")
      local f = io.open(path, "r")
      if f then
        f:close()
        clfs[m] = C.load(path)
      else
        local clf = C.new(k == "text" and {kind = "text"} or {kind = "image", channels = d.channels})
        io.stderr:write(("training the %s classifier (%d epochs) -> %s\n"):format(d.names[m], o.clf_epochs, path))
        C.fit(clf, d.train:tensor(m), ytr, {epochs = o.clf_epochs, seed = 1})
        clf:save(path)
        clfs[m] = clf
      end
    end
  end
  return clfs
end

-- the classifiers' accuracy on the real test data (the ceiling of coherence)
function E.classifier_accuracy(clfs, d, n)
  local xs, y = E.tensors(d.test, n)
  local acc = {}
  for m, clf in ipairs(clfs) do
    if clf ~= metrics.identity_classifier then acc[m] = C.accuracy(clf, xs[m], y) end
  end
  return acc
end

---------------------------------------------------------------- training

-- model:loss(xs, {mask =, beta =}) through tide.train.fit; opts.step
-- replaces the step (e.g. MMVAE's DReG, which runs its own backward).
function E.fit(model, opt, o, d, opts)
  opts = opts or {}
  local loader = tide.data.loader(d.train, {batch_size = o.batch, shuffle = true, seed = o.seed, drop_last = true,
                                            missing = o.missing > 0 and o.missing or nil})
  local steps = loader:num_batches()
  local anneal_steps = o.anneal * steps
  local step = opts.step or function(batch, ctx)
    local beta = MM.anneal(ctx.global_step, anneal_steps, o.beta)
    local loss, st = model:loss(batch.x, {mask = batch.mask, beta = beta})
    st.beta = beta
    return loss, st
  end
  return tide.train.fit{
    model = model, optimizer = opt, loader = loader, epochs = o.epochs, seed = o.seed,
    dir = o.dir ~= "" and o.dir or nil, resume = o.dir ~= "", step = step, backward = opts.backward,
    on_epoch_end = opts.on_epoch_end,
  }
end

---------------------------------------------------------------- evaluation

-- coherence (every direction), unconditional coherence, a linear probe on
-- the posterior means given the image modalities (a label modality would
-- make it trivial) and k-means (10 restarts, as many clusters as classes) on
-- the test ones, scored with ACC / NMI / ARI -> table of numbers
function E.evaluate(model, o, d, clfs)
  local r = {}
  model:eval()
  tide.manual_seed(o.seed)
  local xs, y = E.tensors(d.test, o.eval_n)
  local coh = metrics.coherence(model, xs, y, clfs)
  r.coherence = coh.mean
  r.coherence_loo = coh.leave_one_out
  r.pairs = coh.pairs
  r.uncond = metrics.unconditional_coherence(model, clfs, o.uncond_n, {seed = o.seed})
  -- linear probe on the posterior means of all modalities
  local xtr, ytr = E.tensors(d.train, math.min(d.train:size(), 10000))
  local function means(xs_)
    return tide.no_grad(function()
      local out = {}
      local n = xs_[1]:size(1)
      for s = 1, n, 500 do
        local b = math.min(500, n - s + 1)
        local part = {}
        for m, x in ipairs(xs_) do part[m] = x:narrow(1, s, b) end
        local mask = tide.zeros(#d.kinds, b)
        for m, k in ipairs(d.kinds) do if k == "image" then mask:select(1, m):fill(1) end end
        out[#out + 1] = (model:posterior(part, mask))
      end
      return tide.cat(out, 1)
    end)
  end
  local ztest = means(xs)
  r.probe = metrics.linear_probe(means(xtr), ytr, ztest, y)
  local km = tide.cluster.kmeans(ztest, y:max():item() + 1, {seed = o.seed})
  r.kmeans = metrics.scores(y, km.labels)
  return r
end

-- MVAE's Table 1 (Fashion-MNIST only): IWAE log-likelihoods and the
-- variance of the log importance weights, marginal log p(x), joint
-- log p(x, y), conditional log p(x | y) (definitions: docs/metrics.md), on
-- the first o.ll_n test samples with o.ll_K importance samples -> {name = res}
function E.likelihoods(model, o, d)
  local ll = {}
  if d.name == "polymnist" or o.ll_n <= 0 then return ll end
  local xs = E.tensors(d.test, o.ll_n)
  for _, c in ipairs{{"marginal", {1}, {1}}, {"joint", {1, 2}, {1, 2}}, {"conditional", {1}, {2}}} do
    local t0 = os.time()
    local res = metrics.log_likelihood(model, xs, {K = o.ll_K, chunk = 100, batch = 100, target = c[2],
                                                   given = c[3], seed = o.seed})
    ll[c[1]] = res
    print(("%s: IWAE-%d %.2f nats, Var log w %.3f (%d test samples, %ds)"):format(c[1], o.ll_K, res.ll, res.var,
          res.n, os.time() - t0))
  end
  return ll
end

-- the RESULT fields every example prints after model= and dataset=
function E.fields(fields, o, r, ll, hist, train_s, wall0)
  for _, kv in ipairs{{"zdim", o.zdim}, {"coherence", r.coherence}, {"uncond_coherence", r.uncond},
                      {"probe_acc", r.probe}, {"kmeans_acc", r.kmeans.acc}, {"kmeans_nmi", r.kmeans.nmi},
                      {"kmeans_ari", r.kmeans.ari}} do
    fields[#fields + 1] = kv
  end
  for _, p in ipairs(r.pairs) do
    fields[#fields + 1] = {"coh_" .. p.name:gsub("%+", "_"):gsub("%->", "_to_"), p.acc}
  end
  for _, k in ipairs{"marginal", "joint", "conditional"} do
    if ll[k] then
      fields[#fields + 1] = {"iwae_" .. k, ll[k].ll}
      fields[#fields + 1] = {"lw_var_" .. k, ll[k].var}
    end
  end
  if ll.marginal then
    fields[#fields + 1] = {"ll_n", ll.marginal.n}
    fields[#fields + 1] = {"ll_K", o.ll_K}
  end
  for _, kv in ipairs{{"epochs", hist.epoch}, {"missing", o.missing}, {"seed", o.seed}, {"train_s", train_s},
                      {"wall_s", os.time() - wall0}} do
    fields[#fields + 1] = kv
  end
  E.result(fields)
end

function E.print_pairs(r)
  local parts = {}
  for _, p in ipairs(r.pairs) do parts[#parts + 1] = ("%s %.3f"):format(p.name, p.acc) end
  print("coherence: " .. table.concat(parts, ", "))
end

---------------------------------------------------------------- grids

local function images_of(d, xs)
  local out = {}
  for m, k in ipairs(d.kinds) do if k == "image" then out[#out + 1] = xs[m] end end
  return out
end

-- prefix_recon.png: for each image modality, the data and its
-- reconstruction from all modalities; prefix_cross.png: cross-modal
-- generation (Fashion: rows = classes 0..9 given the label/text alone;
-- PolyMNIST: the first row given m0 alone, then each modality generated
-- from it); prefix_prior.png: every modality from the same z ~ N(0, I).
function E.grids(model, o, d, prefix)
  if o.img == "" then return end
  model:eval()
  tide.manual_seed(o.seed)
  local xs = E.tensors(d.test, 12)
  local rec = model:reconstruct(xs)
  local rows = {}
  for m, k in ipairs(d.kinds) do
    if k == "image" then
      rows[#rows + 1] = xs[m]
      rows[#rows + 1] = rec[m]
    end
  end
  tide.viz.save_grid(o.img .. "/" .. prefix .. "_recon.png", rows, {scale = 2})
  local M = #d.kinds
  if d.name ~= "polymnist" then
    -- class c (row) given its label / name alone: 10 samples each
    local ncol = 10
    local y = tide.arange(10):reshape(10, 1):expand(10, ncol):reshape(-1)
    local cond = d.kinds[2] == "text" and text.from_labels(y) or tide.one_hot(y, 10)
    local img = tide.zeros(10 * ncol, 1, 28, 28)
    local mask = tide.cat({tide.zeros(1, 10 * ncol), tide.ones(1, 10 * ncol)}, 1)
    local z = tide.no_grad(function()
      if model.posterior_sample then return model:posterior_sample({img, cond}, mask) end
      local mu, lv = model:posterior({img, cond}, mask)
      return mu + (lv * 0.5):exp() * tide.randn(mu:shape())
    end)
    tide.viz.save_grid(o.img .. "/" .. prefix .. "_cross.png", model:decode_mean(1, z), {ncol = ncol, scale = 2})
  else
    -- given m0 alone (first row), every modality generated from it
    local b = xs[1]:size(1)
    local mask = tide.zeros(M, b)
    mask:select(1, 1):fill(1)
    local z = tide.no_grad(function()
      if model.posterior_sample then return model:posterior_sample(xs, mask) end
      local mu, lv = model:posterior(xs, mask)
      return mu + (lv * 0.5):exp() * tide.randn(mu:shape())
    end)
    local grid = {xs[1]}
    local gen = tide.no_grad(function() return model:decode_all(z) end)
    for m = 1, M do grid[#grid + 1] = gen[m] end
    tide.viz.save_grid(o.img .. "/" .. prefix .. "_cross.png", grid, {scale = 2})
  end
  local prior = model:generate(12)
  tide.viz.save_grid(o.img .. "/" .. prefix .. "_prior.png", images_of(d, prior), {scale = 2})
end

-- "RESULT k=v ..." with the keys in the given order
function E.result(fields)
  local parts = {"RESULT"}
  for _, kv in ipairs(fields) do
    local v = kv[2]
    if type(v) == "number" and v ~= math.floor(v) then v = ("%.4f"):format(v) end
    parts[#parts + 1] = kv[1] .. "=" .. tostring(v)
  end
  print(table.concat(parts, " "))
end

return E
