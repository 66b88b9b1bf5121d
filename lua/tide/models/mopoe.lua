-- tide.models.mopoe - the mixture-of-products-of-experts VAE of Sutter et
-- al. (2021): the posterior is a mixture over the products of experts of all
-- non-empty subsets S of the modalities,
--
--   q(z | X) = 1/|P| sum_{S in P} q~(z | X_S),   q~(z | X_S) = PoE({q(z | x_m)}_{m in S})
--
-- trained on the ELBO with the KL of the mixture bounded by the average of
-- the subsets' KLs (Jensen), as in Sutter's code:
--
--   L(X) = E_{S ~ U(P), z ~ q~(z|X_S)}[ sum_m lambda_m log p(x_m | z) ]
--          - beta sum_S 1/|P| KL(q~(z | X_S) || p(z))
--
-- One subset is drawn per sample (Sutter assigns the batch to subsets in
-- equal slices; a draw per sample has the same expectation). The product of
-- a subset has no prior expert (opts.prior_expert = true adds it).
-- Missing modalities (mask [M,B]): the mixture is over the subsets of the
-- present modalities (uniform over those), and only present modalities
-- are scored. The loss is -L averaged over the batch.
--
-- All subsets' products are one td_poe call over [M, S*B, D]; for M = 5
-- that is 31 subsets.
local tide = require("tide")
local MM = require("tide.models.multimodal")
local X = require("tide.models.experts")

local MoPoE = MM.Base:extend("MoPoE")

-- opts: zdim (required), beta (1), prior_expert (false).
function MoPoE:init(mods, opts)
  opts = opts or {}
  if not opts.zdim then error("MoPoE: opts.zdim is required", 2) end
  self:init_modalities(mods, opts)
  self.prior_expert = opts.prior_expert and true or false
  self.subsets = X.subsets(self.nmod)
  self.smask = X.subset_mask(self.subsets, self.nmod)
end

-- q~(z | X_S) for every subset: mean, logvar [S,B,D] and the mixture
-- weights [S,B] (uniform over the subsets whose members are all present)
function MoPoE:subset_posteriors(xs, mask)
  local mu, lv = self:encode(xs)
  local fm, flv, valid = X.subset_poe(mu, lv, self.smask, {present = mask, prior = self.prior_expert})
  return fm, flv, X.uniform_weights(valid)
end

-- opts: mask [M,B], beta, index [B] (0-based subset per sample, for tests;
-- default drawn from the mixture weights), eps [B,D] (noise, for tests).
-- -> loss (0-d), stats {rec =, kl =}
function MoPoE:loss(xs, opts)
  opts = opts or {}
  local mask, beta = opts.mask, opts.beta or self.beta
  local fm, flv, w = self:subset_posteriors(xs, mask)                 -- [S,B,D], [S,B]
  -- sum_S w_S KL(q~_S || p)
  local kl_b = (X.kl_std_normal(fm, flv) * w):sum(1)                  -- [B]
  -- z from the subset drawn for each sample
  local idx = opts.index or X.sample_index(w)
  local z = X.rsample(X.select(fm, idx), X.select(flv, idx), opts.eps) -- [B,D]
  local rec_b
  for m = 1, self.nmod do
    local ll = self:log_lik(m, self:decode(m, z), xs[m])              -- [B]
    if mask then ll = ll * mask:select(1, m) end
    ll = ll * self.lambdas[m]
    rec_b = rec_b and rec_b + ll or ll
  end
  local loss = -(rec_b - kl_b * beta):mean()
  return loss, {rec = -rec_b:mean():item(), kl = kl_b:mean():item()}
end

MoPoE.forward = MoPoE.loss

-- q~(z | X_present): the product of the present experts (the subset of all
-- present modalities, one component of the mixture).
function MoPoE:posterior(xs, mask)
  local mu, lv = self:encode(xs)
  if self.prior_expert then return X.poe(mu, lv, mask) end
  return X.poe_noprior(mu, lv, mask)
end

-- z [B,D] from the mixture: a subset of the present modalities per sample,
-- then its product (coherence samples here)
function MoPoE:posterior_sample(xs, mask)
  local fm, flv, w = self:subset_posteriors(xs, mask)
  local idx = X.sample_index(w)
  return X.rsample(X.select(fm, idx), X.select(flv, idx))
end

-- log importance weights with the product of the cond experts as proposal
-- (the mixture component of that subset), scoring the target modalities -> [K,B]
function MoPoE:log_weights(xs, K, cond, target)
  local M = self.nmod
  cond = cond or X.subsets(M, {min = M})[1]
  target = target or cond
  local cm = tide.zeros(M, 1)
  for _, m in ipairs(cond) do cm.data[m - 1] = 1 end
  local qm, qlv = self:posterior(xs, cm)
  local z = X.rsample(qm, qlv, K)
  local lw = X.log_std_normal(z) - X.log_normal(z, qm, qlv)
  for _, m in ipairs(target) do lw = lw + self:log_lik(m, self:decode(m, z), xs[m]) end
  return lw
end

return MoPoE
