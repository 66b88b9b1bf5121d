-- metrics/likelihood.lua - importance-sampled log-likelihoods (IWAE with
-- K = 1000 samples) and the variance of the log importance weights,
-- marginal, joint and conditional (MVAE, Wu & Goodman 2018, Table 1).
-- Exact definitions: docs/metrics.md, "Likelihoods".
--
--   local r = metrics.log_likelihood(vae, x_test, {K = 1000, chunk = 100, batch = 100})
--   print(r.ll, r.var)              -- mean over samples of log p(x) and of Var_k log w_k
--   local j = metrics.log_likelihood(mvae, {img, lbl}, {target = {1, 2}, given = {1, 2}})  -- joint
--   local c = metrics.log_likelihood(mvae, {img, lbl}, {target = {1}, given = {2}})        -- log p(img | lbl)
--
-- Models (the interface is written out in coherence.lua):
--   the unimodal VAE: model:log_weights(x, {K =}) -> lw [K,B];
--   a multimodal model (model.names): with S = given = target (marginal,
--   joint) its own model:log_weights(xs, K, S, S) when it has one, else
--     log w_k = sum_{m in S} log p(x_m | z_k) + log p(z_k) - log q(z_k | x_S),  z_k ~ q(z | x_S)
--   from model:posterior (a Gaussian); and with target T and given G
--   disjoint (conditional), log p(x_T | x_G) with q(z | x_G) standing in
--   for p(z | x_G):
--     log w_k = sum_{m in T} log p(x_m | z_k),  z_k ~ q(z | x_G) = model:posterior(xs, mask_G)
local M = {}

local LOG_2PI = math.log(2 * math.pi)

local function same_set(a, b)
  if #a ~= #b then return false end
  local s = {}
  for _, v in ipairs(a) do s[v] = true end
  for _, v in ipairs(b) do if not s[v] then return false end end
  return true
end

local function disjoint(a, b)
  local s = {}
  for _, v in ipairs(a) do s[v] = true end
  for _, v in ipairs(b) do if s[v] then return false end end
  return true
end

-- K samples [K,B,D] of model:posterior(xs, mask of subset) and their log q [K,B]
local function posterior(model, xs, subset, k)
  local tide = require("tide")
  local mask = require("tide.metrics.coherence").subset_mask(#model.names, subset, xs[subset[1]]:size(1))
  local mu, lv = model:posterior(xs, mask)
  local s = mu:shape()
  table.insert(s, 1, k)
  local z = mu + (lv * 0.5):exp() * tide.randn(s)
  local lq = ((z - mu):square() * (-lv):exp() + lv):sum(-1) + mu:size(-1) * LOG_2PI
  return z, lq * -0.5
end

-- Log importance weights lw [k,B] of one chunk of k samples (no gradient);
-- opts: K, target, given (lists of modality numbers; default all).
function M.log_weights(model, xs, opts)
  opts = opts or {}
  local tide = require("tide")
  local k = opts.K or 1
  return tide.no_grad(function()
    if not model.names then return (model:log_weights(xs, {K = k})) end
    local target = opts.target
    if not target then
      target = {}
      for m = 1, #model.names do target[m] = m end
    end
    local given = opts.given or target
    local joint = same_set(target, given)
    if not joint and not disjoint(target, given) then
      error("metrics.log_weights: target and given must be equal (marginal/joint) or disjoint (conditional)", 3)
    end
    if joint and model.log_weights then return model:log_weights(xs, k, given, target) end
    local z, lq = posterior(model, xs, given, k)
    local lw
    for _, m in ipairs(target) do
      local l = model:log_lik(m, model:decode(m, z), xs[m])
      lw = lw and lw + l or l
    end
    if joint then
      local lp = model.log_prior and model:log_prior(z) or (z:square():sum(-1) + z:size(-1) * LOG_2PI) * -0.5
      lw = lw + lp - lq
    end
    return lw
  end)
end

-- log 1/K sum_k exp(lw_k) over axis 1: lw [K,B] -> [B]
function M.log_mean_exp(lw)
  return lw:logsumexp(1) - math.log(lw:size(1))
end

-- Var_k lw_k (population variance, 1/K) over axis 1: lw [K,B] -> [B]
function M.log_weight_variance(lw)
  return lw:var(1, 0)
end

-- rows [start, start+count) of x (a tensor or a list of tensors)
local function rows_of(xs, start, count)
  local tide = require("tide")
  if tide.is_tensor(xs) then return xs:narrow(1, start, count) end
  local out = {}
  for m, x in pairs(xs) do out[m] = x:narrow(1, start, count) end
  return out
end

local function num_rows(xs)
  local tide = require("tide")
  if tide.is_tensor(xs) then return xs:size(1) end
  for _, x in pairs(xs) do return x:size(1) end
end

-- The IWAE estimate with K importance samples and the variance of the log
-- weights, over the whole data: -> {ll = mean_n log p^(x_n), var = mean_n
-- Var_k log w_nk, n = N, K = K, per_sample = [N] estimates}.
-- opts: K (1000), chunk (samples per pass, 100), batch (data rows per pass,
-- 100), target, given, seed (reseeds tide's generator first).
function M.log_likelihood(model, xs, opts)
  opts = opts or {}
  local tide = require("tide")
  local K, chunk, batch = opts.K or 1000, opts.chunk or 100, opts.batch or 100
  if opts.seed then tide.manual_seed(opts.seed) end
  local n = num_rows(xs)
  local lls, sum_ll, sum_var = {}, 0, 0
  local was_training = model.training
  if model.eval then model:eval() end
  for start = 1, n, batch do
    local b = math.min(batch, n - start + 1)
    local xb = rows_of(xs, start, b)
    local parts = {}
    for k0 = 1, K, chunk do
      local k = math.min(chunk, K - k0 + 1)
      parts[#parts + 1] = M.log_weights(model, xb, {K = k, target = opts.target, given = opts.given})
    end
    local lw = #parts == 1 and parts[1] or tide.cat(parts, 1)      -- [K,b]
    local ll = M.log_mean_exp(lw)
    lls[#lls + 1] = ll
    sum_ll = sum_ll + ll:sum():item()
    sum_var = sum_var + M.log_weight_variance(lw):sum():item()
  end
  if model.train and was_training then model:train(true) end
  return {ll = sum_ll / n, var = sum_var / n, n = n, K = K, per_sample = tide.cat(lls, 1)}
end

return M
