-- metrics/coherence.lua - cross-modal coherence (conditional and
-- unconditional) and the latent linear probe. Definitions: docs/metrics.md.
--
-- THE MULTIMODAL MODEL INTERFACE (the one tide.models.multimodal's Base
-- gives MVAE, MMVAE, MoPoE and the gated-fusion VAE). The metrics of this
-- file and of likelihood.lua take any model (table or module) with:
--
--   model.names                    modality names, e.g. {"image", "text"};
--                                  modality m is its 1-based position and
--                                  xs[m] its data [B, ...]
--   model.zdim                     the latent size D
--   model:posterior(xs, mask)      -> mu, logvar [B,D] of q(z | the modalities
--                                  present in mask [M,B] (1 = present)); the
--                                  data of an absent modality is not read
--   model:decode(m, z)             z [..., B, D] -> the parameters of p(x_m | z)
--   model:log_lik(m, params, x)    -> log p(x_m | z) summed over one sample's
--                                  dims [..., B]
--   model:decode_mean(m, z)        z [B,D] -> modality m as its classifier
--                                  takes it: images [B,C,H,W] (means in
--                                  [0,1]), labels as probabilities [B,C]
--                                  (argmax taken) or ids [B]
-- and optionally
--   model:generate_modality(m, z)  used instead of decode_mean when present;
--                                  else a decoder with its own :generate(z)
--                                  (model.decoders[m], e.g. the text
--                                  modality's head: token ids [B,T]) is used
--   model:posterior_sample(xs, mask) -> z [B,D]; mixtures (MMVAE, MoPoE)
--                                  sample their mixture here; default
--                                  mu + sigma * eps from posterior()
--   model:sample_prior(n)          -> z [n,D]; default N(0, I)
--   model:log_weights(xs, K, cond, target) -> log w [K,B] with
--                                  z ~ q(z | x_cond), log w = log p(z) -
--                                  log q(z | x_cond) + sum_{t in target}
--                                  log p(x_t | z): the marginal and joint
--                                  metrics call it (cond == target) when it
--                                  exists, so a mixture uses its exact density
-- The unimodal VAE (tide.models.vae) is taken as it is:
-- model:log_weights(x, {K =}) -> [K,B].
--
-- Classifiers: classifiers[m] is a function x_m -> ids [B] or logits /
-- probabilities [B,C] (argmax taken), or an object with :predict(x_m)
-- (tide.classifier models have it). metrics.identity_classifier returns
-- what it gets (for a label modality).
--
--   local r = metrics.coherence(model, {img, txt}, labels, {clf_img, clf_txt})
--   print(r.mean, r.by_name["text->image"])
--   local u = metrics.unconditional_coherence(model, {clf_img, clf_txt}, 10000)
--   local acc = metrics.linear_probe(z_train, y_train, z_test, y_test)
local M = {}

function M.identity_classifier(ids) return ids end

local function predict(clf, x)
  local r
  if type(clf) == "function" then r = clf(x)
  elseif type(clf) == "table" and clf.predict then r = clf:predict(x)
  else r = clf(x) end
  if r.ndim == 2 then r = r:argmax(2) end
  return r:reshape(-1)
end

local function rows_of(xs, start, count)
  local out = {}
  for m, x in pairs(xs) do out[m] = x:narrow(1, start, count) end
  return out
end

local function num_rows(xs)
  for _, x in pairs(xs) do return x:size(1) end
end

local function names_of(model) return model.names or model.modalities end

-- mask [M,B]: 1 for the modalities of subset
function M.subset_mask(nmod, subset, b)
  local tide = require("tide")
  local t = tide.zeros(nmod, b)
  for _, m in ipairs(subset) do t:select(1, m):fill(1) end
  return t
end

-- One z [B,D] per sample from q(z | x_given): a sample, or the mean when
-- opts.mean.
local function posterior_z(model, xs, given, mean)
  local tide = require("tide")
  local b = (xs[given[1]]):size(1)
  local mask = M.subset_mask(#names_of(model), given, b)
  if model.posterior_sample and not mean then return model:posterior_sample(xs, mask) end
  local mu, lv = model:posterior(xs, mask)
  if mean then return mu end
  return mu + (lv * 0.5):exp() * tide.randn(mu:shape())
end

local function generate(model, m, z)
  if model.generate_modality then return model:generate_modality(m, z) end
  local dec = model.decoders and model.decoders[m]
  if type(dec) == "table" and type(dec.generate) == "function" then return dec:generate(z) end
  return model:decode_mean(m, z)
end

local function with_eval(model, fn)
  local tide = require("tide")
  local was = model.training
  if model.eval then model:eval() end
  local ok, r = pcall(tide.no_grad, fn)
  if model.train and was then model:train(true) end
  if not ok then error(r, 0) end
  return r
end

-- Conditional coherence of one direction: the fraction of samples whose
-- modality `target`, generated from z ~ q(z | x_given), is classified as
-- their label. opts: target (m), given (list), batch (256), mean (false).
function M.conditional_coherence(model, xs, labels, classifiers, opts)
  local tide = require("tide")
  local target, given = opts.target, opts.given
  local n, batch = num_rows(xs), opts.batch or 256
  return with_eval(model, function()
    local correct = 0
    for start = 1, n, batch do
      local b = math.min(batch, n - start + 1)
      local z = posterior_z(model, rows_of(xs, start, b), given, opts.mean)
      local pred = predict(classifiers[target], generate(model, target, z))
      correct = correct + pred:eq(labels:narrow(1, start, b):reshape(-1)):sum():item()
    end
    return correct / n
  end)
end

local function name_of(model, subset)
  local parts = {}
  local names = names_of(model)
  for i, m in ipairs(subset) do parts[i] = names and names[m] or tostring(m) end
  return table.concat(parts, "+")
end

-- Every direction: for each target m, from each other modality alone and
-- from all the others together (when there are more than two).
-- -> {pairs = {{given =, target =, name = "a+b->c", acc =}, ...},
--     by_name = {name = acc}, mean = the mean over all pairs,
--     leave_one_out = the mean over targets of "all others -> target"}
function M.coherence(model, xs, labels, classifiers, opts)
  opts = opts or {}
  local nm = #names_of(model)
  local pairs_, by_name = {}, {}
  local sum, loo, nloo = 0, 0, 0
  for m = 1, nm do
    if classifiers[m] then
      local sets = {}
      for j = 1, nm do if j ~= m then sets[#sets + 1] = {j} end end
      local rest = {}
      for j = 1, nm do if j ~= m then rest[#rest + 1] = j end end
      if #rest > 1 then sets[#sets + 1] = rest end
      for _, g in ipairs(sets) do
        local acc = M.conditional_coherence(model, xs, labels, classifiers,
          {target = m, given = g, batch = opts.batch, mean = opts.mean})
        local name = name_of(model, g) .. "->" .. name_of(model, {m})
        pairs_[#pairs_ + 1] = {given = g, target = m, name = name, acc = acc}
        by_name[name] = acc
        sum = sum + acc
        if #g == #rest then loo, nloo = loo + acc, nloo + 1 end
      end
    end
  end
  return {pairs = pairs_, by_name = by_name, mean = sum / math.max(#pairs_, 1),
          leave_one_out = loo / math.max(nloo, 1)}
end

-- Unconditional coherence: z ~ p(z), every modality generated from the same
-- z and classified; the fraction of the n samples on which all classifiers
-- agree. opts: batch (256), seed.
function M.unconditional_coherence(model, classifiers, n, opts)
  opts = opts or {}
  local tide = require("tide")
  if opts.seed then tide.manual_seed(opts.seed) end
  local batch = opts.batch or 256
  return with_eval(model, function()
    local agree = 0
    for start = 1, n, batch do
      local b = math.min(batch, n - start + 1)
      local z = model.sample_prior and model:sample_prior(b) or tide.randn(b, model.zdim or model.latent)
      local first, all = nil, tide.ones(b)
      for m = 1, #names_of(model) do
        if classifiers[m] then
          local pred = predict(classifiers[m], generate(model, m, z))
          if first then all = all * pred:eq(first) else first = pred end
        end
      end
      agree = agree + all:sum():item()
    end
    return agree / n
  end)
end

-- Latent linear probe: multinomial logistic regression on standardized
-- latents (one tide.nn.Linear, full-batch Adam), fitted on the training
-- latents and scored on the test ones. z [N,D], y [N] 0-based ids.
-- opts: classes (max label + 1), steps (300), lr (0.05), weight_decay (1e-4), seed (1).
-- -> test accuracy, train accuracy
function M.linear_probe(z_train, y_train, z_test, y_test, opts)
  opts = opts or {}
  local tide = require("tide")
  tide.manual_seed(opts.seed or 1)
  local classes = opts.classes or (y_train:max():item() + 1)
  local mu = z_train:mean(1)
  local sd = (z_train:var(1, 0) + 1e-8):sqrt()
  local function std(z) return ((z - mu) / sd):detach() end
  local ztr, zte = std(z_train), std(z_test)
  local probe = tide.nn.Linear(z_train:size(2), classes)
  local opt = tide.optim.Adam(probe, {lr = opts.lr or 0.05, weight_decay = opts.weight_decay or 1e-4})
  local ytr = y_train:reshape(-1)
  for _ = 1, opts.steps or 300 do
    opt:zero_grad()
    tide.cross_entropy(probe(ztr), ytr):mean():backward()
    opt:step()
  end
  return tide.no_grad(function()
    local test = probe(zte):argmax(2):eq(y_test:reshape(-1)):mean():item()
    local train = probe(ztr):argmax(2):eq(ytr):mean():item()
    return test, train
  end)
end

return M
