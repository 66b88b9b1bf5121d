-- tide.models.mmvae - the mixture-of-experts multimodal VAE of Shi et al.
-- (2019):
--
--   q(z | X) = 1/M sum_m q(z | x_m)
--
-- Every modality's samples decode every modality. The objective is the
-- "looser" importance-weighted bound, with the average over modalities
-- outside the log (stratified sampling of the mixture):
--
--   L(X) = 1/M sum_m log 1/K sum_k w_{m,k},   z_{m,k} ~ q(z | x_m)
--   log w_{m,k} = log p(z_{m,k}) + sum_n lambda_n log p(x_n | z_{m,k})
--                 - log q(z_{m,k} | X)
--
-- K = 1 is the mixture ELBO estimated with one sample per expert. The DReG
-- estimator (Tucker et al. 2019, as in Shi's m_dreg_looser) evaluates
-- log q(z | X) with the encoder parameters stopped, and weighs the gradient
-- through z by the squared normalized weights:
--
--   grad_theta = sum_m sum_k wt_{m,k} d lw_{m,k}
--   grad_phi   = sum_m sum_k wt_{m,k}^2 (d lw_{m,k} / d z) (d z / d phi),
--   wt_{m,k} = w_{m,k} / sum_k' w_{m,k'}
--
-- which needs two backward passes (z enters the bound as a detached leaf;
-- its gradient, scaled by wt, is then sent through the encoders):
-- model:dreg_backward(xs, opts) does both and returns the bound's value.
--
-- Missing modalities (mask [M,B]): the mixture is over the present experts,
-- q(z | X) = sum_m w_m q(z | x_m) with w_m = mask_m / count, the outer
-- average uses the same weights, and only present modalities are scored.
-- The loss is -L averaged over the batch.
local tide = require("tide")
local MM = require("tide.models.multimodal")
local X = require("tide.models.experts")

local MMVAE = MM.Base:extend("MMVAE")

-- opts: zdim (required), K (1: samples per expert), estimator ("iwae" or
-- "dreg"), beta (1: a weight on log p(z) - log q(z|X), 1 is the bound).
function MMVAE:init(mods, opts)
  opts = opts or {}
  if not opts.zdim then error("MMVAE: opts.zdim is required", 2) end
  self:init_modalities(mods, opts)
  self.K = opts.K or 1
  self.estimator = opts.estimator or "iwae"
end

-- The mixture weights [M,B] (nil: uniform and complete)
local function mix_weights(mask)
  if not mask then return nil end
  return X.uniform_weights(mask)
end

-- log w [M,K,B] for samples z [M,K,B,D] of the experts (mu, lv [M,B,D]);
-- qmu, qlv are the experts used in the mixture density (detached for DReG).
function MMVAE:log_w(xs, z, qmu, qlv, mask, w, beta)
  local M = self.nmod
  local logw = w and w:clamp(1e-30):log() or nil                 -- [M,B]
  -- log q(z | X) = log sum_m' w_m' q(z | x_m')
  local lq = X.mixture_log_prob(z, qmu, qlv, logw)               -- [M,K,B]
  local lw = (X.log_std_normal(z) - lq) * (beta or 1)
  for n = 1, M do
    local ll = self:log_lik(n, self:decode(n, z), xs[n])        -- [M,K,B]
    if mask then ll = ll * mask:select(1, n) end
    lw = lw + ll * self.lambdas[n]
  end
  return lw
end

-- 1/M sum_m logmeanexp_k lw (or sum_m w_m ... with a mask) -> [B]
local function looser(lw, w)
  local K = lw:size(2)
  local l = lw:logsumexp(2) - math.log(K)                        -- [M,B]
  if w then return (l * w):sum(1) end
  return l:mean(1)
end

-- opts: mask [M,B], K, eps [M,K,B,D] (noise, for tests), beta.
-- -> loss (0-d, -L averaged over the batch), stats {bound =}
function MMVAE:loss(xs, opts)
  opts = opts or {}
  local K, mask = opts.K or self.K, opts.mask
  local w = mix_weights(mask)
  local mu, lv = self:encode(xs)                                  -- [M,B,D]
  local z = X.rsample(mu:unsqueeze(2), lv:unsqueeze(2), opts.eps or tide.randn(self.nmod, K, mu:size(2), mu:size(3)))
  local lw = self:log_w(xs, z, mu, lv, mask, w, opts.beta)        -- [M,K,B]
  local L = looser(lw, w)
  local loss = -L:mean()
  return loss, {bound = -loss:item()}
end

MMVAE.forward = MMVAE.loss

-- DReG: runs both backward passes (gradients accumulate into the model's
-- .grad) and returns the loss value (-L averaged over the batch, a number)
-- and stats. opts as loss.
function MMVAE:dreg_backward(xs, opts)
  opts = opts or {}
  local K, mask = opts.K or self.K, opts.mask
  local w = mix_weights(mask)
  local mu, lv = self:encode(xs)
  local B = mu:size(2)
  local z = X.rsample(mu:unsqueeze(2), lv:unsqueeze(2), opts.eps or tide.randn(self.nmod, K, B, mu:size(3)))
  local zd = z:detach():requires_grad(true)
  local lw = self:log_w(xs, zd, mu:detach(), lv:detach(), mask, w, opts.beta)   -- [M,K,B]
  -- normalized weights over K, and the outer weights 1/M (or w_m)
  local wt = tide.no_grad(function() return lw:softmax(2) end)
  local outer = w and w:unsqueeze(2) or (1 / self.nmod)
  -- surrogate: -mean_b sum_m outer_m sum_k wt lw  (theta's gradient)
  local surrogate = -((lw * wt) * outer):sum() * (1 / B)
  surrogate:backward()
  -- phi: the gradient at z, weighed once more by wt
  local gz = zd:grad()
  z:backward(gz * wt:unsqueeze(-1))
  local L = tide.no_grad(function() return looser(lw, w):mean() end)
  return -L:item(), {bound = L:item()}
end

-- q(z | present modalities) as a Gaussian for the latent representation:
-- the moment-matched mean of the mixture and the log of its average variance.
function MMVAE:posterior(xs, mask)
  local mu, lv = self:encode(xs)
  local M = self.nmod
  local w = mask and X.uniform_weights(mask) or tide.full(M, 1, 1 / M)
  local ww = w:unsqueeze(-1)
  return (mu * ww):sum(1), (lv:exp() * ww):sum(1):log()
end

-- z [B,D] from the mixture of the present experts (coherence samples here)
function MMVAE:posterior_sample(xs, mask)
  local mu, lv = self:encode(xs)
  local M, B = self.nmod, mu:size(2)
  local w = mask and X.uniform_weights(mask) or tide.full(M, B, 1 / M)
  local idx = X.sample_index(w)
  return X.rsample(X.select(mu, idx), X.select(lv, idx))
end

-- Reconstruction / cross generation: decode z drawn from the mixture of the
-- present experts (the mean of a randomly chosen present expert per sample).
function MMVAE:reconstruct(xs, mask)
  return tide.no_grad(function()
    local mu = self:encode(xs)
    local b = mu:size(2)
    local w = mask and X.uniform_weights(mask) or tide.full(self.nmod, b, 1 / self.nmod)
    local z = X.select(mu, X.sample_index(w))
    return self:decode_all(z)
  end)
end

-- log importance weights with the mixture of the cond experts as proposal,
-- scoring the target modalities -> [K,B]
function MMVAE:log_weights(xs, K, cond, target)
  local M = self.nmod
  cond = cond or X.subsets(M, {min = M})[1]
  target = target or cond
  local mu, lv = self:encode(xs)
  local B = mu:size(2)
  local cm = tide.zeros(M, B)
  for _, m in ipairs(cond) do cm:select(1, m):fill(1) end
  local w = X.uniform_weights(cm)
  -- a proposal component per (k, b), uniform over the cond experts
  local idx = X.sample_index(tide.ones(#cond, K * B) / #cond)
  local comp = (tide.from_table(cond) - 1):index_select(1, idx)  -- 0-based modalities [K*B]
  local function pick(t) return X.select(t:unsqueeze(2):expand(M, K, B, t:size(3)):reshape(M, K * B, -1), comp) end
  local mus, lvs = pick(mu):reshape(K, B, -1), pick(lv):reshape(K, B, -1)
  local z = X.rsample(mus, lvs)
  local lw = X.log_std_normal(z) - X.mixture_log_prob(z, mu, lv, w:clamp(1e-30):log())
  for _, m in ipairs(target) do lw = lw + self:log_lik(m, self:decode(m, z), xs[m]) end
  return lw
end

return MMVAE
