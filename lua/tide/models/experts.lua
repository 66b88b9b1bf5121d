-- tide.models.experts - fusion of Gaussian experts for multimodal VAEs:
-- products of experts (MVAE), weighted log-linear pooling (the gated-fusion
-- VAE), mixtures (MMVAE) and mixtures of products over subsets (MoPoE).
--
--   local X = require("tide.models.experts")
--   local mu, lv = X.poe({mu1, mu2}, {lv1, lv2}, mask)         -- [B,D] each
--
-- Shapes. An expert is a diagonal Gaussian given by its mean and
-- log-variance, [B,D] each. E experts are stacked as [E,B,D] (X.stack, or
-- pass a Lua list of [B,D] tensors wherever [E,B,D] is expected). Masks and
-- weights are [E,B], or anything broadcasting to it: [E,1] is one value per
-- expert (not [E]: broadcasting aligns the last axis). Mask entries are 1
-- (present) or 0 (missing) and take no gradient; weights (>= 0) do.
-- Component indices are 0-based values in a tensor, as everywhere in tide.
--
-- Fusion (fused engine kernels, one pass forward and backward over [E,B,D]):
--   X.poe(mu, lv [, mask])          product with the prior expert N(0, I):
--       1/s2 = 1 + sum_e m_e / s2_e,   mean = s2 sum_e m_e mu_e / s2_e
--       -> mean, logvar [B,D]; a sample with no expert present gets the prior
--   X.poe_noprior(mu, lv [, mask])  the same without the prior (fails when a
--       sample has no expert present)
--   X.weighted_pool(mu, lv, w)      1/s2 = sum_e w_e / s2_e,
--       mean = s2 sum_e w_e mu_e / s2_e, w [E,B] with gradient (gate weights)
--
-- Subsets of M modalities (MVAE's sub-sampled ELBOs, MoPoE):
--   X.subsets(M [, {min =, max =}])  all subsets with min..max members (1..M),
--       each a sorted list of 1-based modality numbers, ordered by size then
--       lexicographically: {1}, {2}, ..., {1,2}, ..., {1,...,M}
--   X.subset_mask(subsets, M)       -> [M,S]: 1 where modality m is in subset s
--   X.subset_poe(mu, lv, smask [, {present =, prior =}])  the product of
--       experts of every subset at once (one kernel call over [M,S*B,D]):
--       -> mean, logvar [S,B,D], and valid [S,B] (1 where every member of
--       subset s is present for sample b; all 1 without `present` [M,B]).
--       The product of (s, b) uses the members present; with prior = false
--       (default true) a subset with none present uses all its members,
--       which gives a finite but meaningless expert: weigh it by `valid`.
--
-- Mixtures (MMVAE, MoPoE):
--   X.uniform_weights(valid)        [K,B] 0/1 -> weights valid / sum_k valid
--   X.sample_index(w)               [K,B] weights (columns sum to 1) ->
--       [B] 0-based component ids, one draw per sample (tide's generator)
--   X.select(x, idx)                x [K,B,...], idx [B] -> [B,...]: row b of
--       component idx[b]; differentiable in x (a one-hot weighted sum)
--   X.mixture_log_prob(z, mu, lv [, logw])   log sum_e w_e N(z; mu_e, s2_e)
--       summed over D: z [..., B, D], mu/lv [E,B,D], logw [E,B] (log weights;
--       default log 1/E) -> [..., B]
--
-- Gaussians:
--   X.rsample(mu, lv [, K | eps])   mu + exp(lv/2) eps: [B,D], or [K,B,D]
--       with K samples; eps (a tensor broadcasting to the result) is the
--       noise to use, for repeatable tests
--   X.log_normal(z, mu, lv)         log N(z; mu, exp(lv)) summed over the
--       last axis (broadcasting) -> [...]
--   X.log_std_normal(z)             log N(z; 0, I) summed over the last axis
--   X.kl_std_normal(mu, lv)         KL(N(mu, exp(lv)) || N(0, I)) summed over
--       the last axis -> [...]
--   X.stack(list)                   {[B,D], ...} -> [E,B,D]
local tide = require("tide")

local X = {}
local LOG_2PI = math.log(2 * math.pi)

---------------------------------------------------------------- helpers

function X.stack(list)
  if tide.is_tensor(list) then return list end
  if type(list) ~= "table" or #list == 0 then error("experts.stack: expects a non-empty list of [B,D] tensors", 2) end
  return tide.stack(list, 1)
end
local stack = X.stack

-- [2,B,D] (mean, logvar) -> two [B,D] views
local function halves(out)
  return out:select(1, 1), out:select(1, 2)
end

---------------------------------------------------------------- fusion

-- 1/s2 = 1 + sum_e m_e / s2_e ;  mean = s2 sum_e m_e mu_e / s2_e
function X.poe(mu, logvar, mask)
  return halves(tide.poe(stack(mu), stack(logvar), mask))
end

-- 1/s2 = sum_e m_e / s2_e ;  mean = s2 sum_e m_e mu_e / s2_e
function X.poe_noprior(mu, logvar, mask)
  return halves(tide.poe_noprior(stack(mu), stack(logvar), mask))
end

-- 1/s2 = sum_e w_e / s2_e ;  mean = s2 sum_e w_e mu_e / s2_e
function X.weighted_pool(mu, logvar, w)
  return halves(tide.weighted_pool(stack(mu), stack(logvar), w))
end

---------------------------------------------------------------- subsets

local function popcount(b)
  local n = 0
  while b > 0 do
    n = n + b % 2
    b = math.floor(b / 2)
  end
  return n
end

function X.subsets(m, opts)
  opts = opts or {}
  local lo, hi = opts.min or 1, opts.max or m
  if type(m) ~= "number" or m < 1 or m > 20 or m ~= math.floor(m) then
    error("experts.subsets: M must be a whole number in 1..20, got " .. tostring(m), 2)
  end
  local out = {}
  for bits = 1, 2 ^ m - 1 do
    local n = popcount(bits)
    if n >= lo and n <= hi then
      local s, b = {}, bits
      for i = 1, m do
        if b % 2 == 1 then s[#s + 1] = i end
        b = math.floor(b / 2)
      end
      out[#out + 1] = s
    end
  end
  table.sort(out, function(a, b)
    if #a ~= #b then return #a < #b end
    for i = 1, #a do
      if a[i] ~= b[i] then return a[i] < b[i] end
    end
    return false
  end)
  return out
end

function X.subset_mask(subsets, m)
  local s = #subsets
  local t = tide.zeros(m, s)
  for j, sub in ipairs(subsets) do
    for _, i in ipairs(sub) do
      if i < 1 or i > m then error(("experts.subset_mask: modality %d is not in 1..%d"):format(i, m), 2) end
      t.data[(i - 1) * s + (j - 1)] = 1
    end
  end
  return t
end

-- valid[s,b] = 1 when no member of subset s is missing for sample b:
-- (smask^T (1 - present))[s,b] = 0.
local function subset_valid(smask, present)
  local missing = smask:t():matmul(1 - present)
  return missing:lt(0.5)
end

function X.subset_poe(mu, logvar, smask, opts)
  opts = opts or {}
  mu, logvar = stack(mu), stack(logvar)
  local m, b, d = mu:size(1), mu:size(2), mu:size(3)
  local s = smask:size(2)
  if smask:size(1) ~= m then
    error(("experts.subset_poe: subset mask [%d,%d] does not match %d experts"):format(smask:size(1), s, m), 2)
  end
  local prior = opts.prior ~= false
  local present = opts.present
  local mask, valid
  if present then
    mask = smask:reshape(m, s, 1) * present:reshape(m, 1, b)          -- [M,S,B]
    valid = subset_valid(smask, present)                               -- [S,B]
    if not prior then
      -- (s, b) pairs with no member present: use the whole subset
      local none = mask:sum(1, true):lt(0.5)                           -- [1,S,B]
      mask = tide.where(none, smask:reshape(m, s, 1), mask)
    end
    mask = mask:reshape(m, s * b)
  else
    mask = smask:reshape(m, s, 1):expand(m, s, b):reshape(m, s * b)
    valid = tide.ones(s, b)
  end
  local function rep(t) return t:reshape(m, 1, b, d):expand(m, s, b, d):reshape(m, s * b, d) end
  local out = (prior and tide.poe or tide.poe_noprior)(rep(mu), rep(logvar), mask)
  out = out:reshape(2, s, b, d)
  local fm, flv = halves(out)
  return fm, flv, valid
end

---------------------------------------------------------------- mixtures

function X.uniform_weights(valid)
  return valid / valid:sum(1, true):clamp(1e-30)
end

function X.sample_index(w)
  return tide.no_grad(function()
    return tide.categorical(w:t():contiguous(), 1):reshape(-1)
  end)
end

function X.select(x, idx)
  local k = x:size(1)
  local shape = x:shape()
  local oh = tide.one_hot(idx, k):t()                       -- [K,B]
  local wshape = {k, shape[2]}
  for i = 3, #shape do wshape[i] = 1 end
  return (x * oh:reshape(wshape)):sum(1)
end

-- log sum_e w_e N(z; mu_e, s2_e): z [..., B, D] against E experts [E,B,D]
-- gives [..., E, B] log densities, then a log-sum-exp over E.
function X.mixture_log_prob(z, mu, logvar, logw)
  mu, logvar = stack(mu), stack(logvar)
  local e = mu:size(1)
  local zs = z:unsqueeze(-3)                                -- [..., 1, B, D]
  local lp = X.log_normal(zs, mu, logvar)                   -- [..., E, B]
  if logw then lp = lp + logw else lp = lp - math.log(e) end
  return lp:logsumexp(-2)
end

---------------------------------------------------------------- Gaussians

function X.rsample(mu, logvar, k)
  local std = (logvar * 0.5):exp()
  local eps
  if tide.is_tensor(k) then eps = k
  elseif k then
    local s = mu:shape()
    table.insert(s, 1, k)
    eps = tide.randn(s)
  else eps = tide.randn(mu:shape()) end
  return mu + std * eps
end

-- log N(z; mu, e^lv) = -1/2 (log 2 pi + lv + (z - mu)^2 e^-lv), summed over D
function X.log_normal(z, mu, logvar)
  local diff = z - mu
  return ((diff:square() * (-logvar):exp() + logvar):sum(-1) + z:size(-1) * LOG_2PI) * -0.5
end

function X.log_std_normal(z)
  return (z:square():sum(-1) + z:size(-1) * LOG_2PI) * -0.5
end

-- KL(N(mu, e^lv) || N(0, I)) = -1/2 sum_d (1 + lv - mu^2 - e^lv)
function X.kl_std_normal(mu, logvar)
  return ((logvar:exp() + mu:square() - logvar - 1):sum(-1)) * 0.5
end

return X
