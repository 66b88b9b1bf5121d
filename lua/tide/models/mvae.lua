-- tide.models.mvae - the multimodal VAE of Wu & Goodman (2018): a product
-- of Gaussian experts with the prior expert,
--
--   q(z | X_S) ∝ p(z) prod_{m in S} q(z | x_m),   p(z) = N(0, I)
--   1/s2 = 1 + sum_{m in S} 1/s2_m,   mu = s2 sum_{m in S} mu_m / s2_m
--
-- trained on the sum of ELBOs of the full set, of each modality alone, and
-- (M > 2) of k random subsets ("sub-sampled training", eq. 5):
--
--   L(X) = ELBO(X) + sum_m ELBO(x_m) + sum_{j=1..k} ELBO(X_j)
--   ELBO(X_S) = E_q(z|X_S)[ sum_{m in S} lambda_m log p(x_m | z) ]
--               - beta KL(q(z | X_S) || p(z))
--
-- with one reparameterized sample per term and beta annealed by the caller
-- (multimodal.anneal). Missing modalities (mask [M,B], 1 = present): the
-- product of subset S for sample b keeps the members present; a term whose
-- subset has no member present is dropped, and a reconstruction counts only
-- for a present modality. The loss is -L averaged over the batch.
--
-- With opts.cross (not in Wu & Goodman) every term reconstructs every
-- modality, sum_{m in S} becomes sum_{m = 1..M}: the unimodal posterior
-- q(z | x_m) must also explain the other modalities. Without it nothing ties
-- q(z | y) to q(z | x) on a 2-modality set (image + label): the experts can
-- split the latent space into private blocks (each expert's precision ~0
-- on the other's dims), with cross-modal coherence at chance.
--
--   local MVAE = require("tide.models.mvae")
--   local model = MVAE({image, label}, {zdim = 20})   -- modalities: see multimodal.lua
--   local loss, stats = model:loss(xs, {mask = mask, beta = 1})
--
-- All subsets' products are one td_poe call over [M, S*B, D] (experts
-- .subset_poe); each decoder runs once on the samples of every subset that
-- holds its modality (of every subset with cross).
local tide = require("tide")
local MM = require("tide.models.multimodal")
local X = require("tide.models.experts")

local MVAE = MM.Base:extend("MVAE")

-- opts: zdim (required), beta (1), subsets: "default" (joint + unimodal +
-- k random), "all" (every non-empty subset) or a list of subsets;
-- k (1, random subsets per step when M > 2); cross (false: each term
-- reconstructs the modalities of its subset; true: all of them).
function MVAE:init(mods, opts)
  opts = opts or {}
  if not opts.zdim then error("MVAE: opts.zdim is required", 2) end
  self:init_modalities(mods, opts)
  self.k = opts.k or 1
  self.subset_rule = opts.subsets or "default"
  self.cross = opts.cross or false
  self.mask_cache = {}
end

-- The subsets of this step, joint first, then each modality alone, then the
-- random ones (drawn with tide's generator).
function MVAE:step_subsets()
  local M, rule = self.nmod, self.subset_rule
  if type(rule) == "table" then return rule end
  if rule == "all" then return X.subsets(M) end
  local subs = {X.subsets(M, {min = M})[1]}
  for m = 1, M do subs[#subs + 1] = {m} end
  if M > 2 and self.k > 0 then
    local pool = X.subsets(M, {min = 2, max = M - 1})
    local perm = tide.randperm(#pool)
    for j = 1, math.min(self.k, #pool) do subs[#subs + 1] = pool[perm.data[j - 1] + 1] end
  end
  return subs
end

local function key_of(subs)
  local parts = {}
  for i, s in ipairs(subs) do parts[i] = table.concat(s, ",") end
  return table.concat(parts, ";")
end

-- smask [M,S] and, per modality, the positions (0-based) of the subsets holding it
function MVAE:subset_info(subs)
  local key = key_of(subs)
  local info = self.mask_cache[key]
  if info then return info end
  local rows = {}
  for m = 1, self.nmod do rows[m] = {} end
  for j, s in ipairs(subs) do
    if self.cross then
      for m = 1, self.nmod do table.insert(rows[m], j - 1) end
    else
      for _, m in ipairs(s) do table.insert(rows[m], j - 1) end
    end
  end
  local sel = {}
  for m = 1, self.nmod do
    local r = rows[m]
    local contiguous = #r > 0 and r[#r] - r[1] == #r - 1
    sel[m] = {first = r[1], n = #r, contiguous = contiguous,
              index = (#r > 0 and not contiguous) and tide.from_table(r) or nil,
              index_t = #r > 0 and tide.from_table(r) or nil}
  end
  info = {smask = X.subset_mask(subs, self.nmod), sel = sel}
  if #self.mask_cache < 64 then self.mask_cache[key] = info end
  return info
end

-- rows of t [S, ...] for modality m's subsets
local function take(t, s)
  if s.contiguous then return t:narrow(1, s.first + 1, s.n) end
  return t:index_select(1, s.index)
end

-- The objective's terms. opts: mask [M,B], beta, subsets (a list, this
-- step only), eps [S,B,D] (the noise, for tests).
-- -> loss (0-d), stats {rec =, kl =} (batch means, summed over terms)
function MVAE:loss(xs, opts)
  opts = opts or {}
  local mask, beta = opts.mask, opts.beta or self.beta
  local subs = opts.subsets or self:step_subsets()
  local info = self:subset_info(subs)
  local mu, lv = self:encode(xs)                                       -- [M,B,D]
  -- q(z | X_S) for every subset S at once
  local fm, flv = X.subset_poe(mu, lv, info.smask, {present = mask})   -- [S,B,D]
  -- a term counts when its subset has a member present
  local w = mask and info.smask:t():matmul(mask):gt(0.5) or nil        -- [S,B]
  local z = X.rsample(fm, flv, opts.eps)                               -- [S,B,D]
  local kl = X.kl_std_normal(fm, flv)                                  -- [S,B]
  if w then kl = kl * w end
  local kl_b = kl:sum(1)                                               -- [B]
  local rec_b
  for m = 1, self.nmod do
    local s = info.sel[m]
    if s.n > 0 then
      -- lambda_m log p(x_m | z_S) for the subsets S holding m (every S with cross)
      local ll = self:log_lik(m, self:decode(m, take(z, s)), xs[m])    -- [S_m,B]
      if w then ll = ll * take(w, s) * mask:select(1, m) end
      local r = ll:sum(1) * self.lambdas[m]
      rec_b = rec_b and rec_b + r or r
    end
  end
  local obj = rec_b - kl_b * beta
  local loss = -obj:mean()
  return loss, {rec = -rec_b:mean():item(), kl = kl_b:mean():item()}
end

MVAE.forward = MVAE.loss

-- q(z | present modalities): the product with the prior expert.
function MVAE:posterior(xs, mask)
  local mu, lv = self:encode(xs)
  return X.poe(mu, lv, mask)
end

-- log importance weights for tide.metrics: z ~ q(z | X_S) (K samples),
-- log w = sum_{m in T} log p(x_m | z) + log p(z) - log q(z | X_S) -> [K,B].
-- cond: modalities of the proposal S (default all), target: those scored
-- (default cond).
function MVAE:log_weights(xs, K, cond, target)
  local M = self.nmod
  cond = cond or X.subsets(M, {min = M})[1]
  target = target or cond
  local cm = tide.zeros(M, 1)
  for _, m in ipairs(cond) do cm.data[m - 1] = 1 end
  local mu, lv = self:encode(xs)
  local qm, qlv = X.poe(mu, lv, cm)
  local z = X.rsample(qm, qlv, K)                                       -- [K,B,D]
  local lw = X.log_std_normal(z) - X.log_normal(z, qm, qlv)
  for _, m in ipairs(target) do lw = lw + self:log_lik(m, self:decode(m, z), xs[m]) end
  return lw
end

return MVAE
