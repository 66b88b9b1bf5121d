-- tide.models.gated_vae - the gated-fusion multimodal VAE (HZAU-VAE in its
-- source): Gaussian experts for each modality and one for the joint input,
-- a gating MLP whose softmax weighs them per sample, and weighted
-- log-linear pooling of the experts in closed form:
--
--   experts   q_m(z | x_m), m = 1..M, and q_J(z | X)
--   gate      w(X) = softmax(g(h)) in the simplex of M + 1 experts
--   pooling   q(z | X) ∝ prod_S q_S(z)^{w_S}:
--             1/s2 = sum_S w_S / s2_S,   mu = s2 sum_S w_S mu_S / s2_S
--   ELBO      L(X) = E_q[ sum_m lambda_m log p(x_m | z) ] - beta KL(q(z|X) || N(0, I))
--
-- h, the input of the gate and of the joint expert, is the concatenation of
-- the unimodal experts' (mu_m, logvar_m), zeroed for missing modalities:
-- the joint input as the unimodal encoders see it, for any modality
-- (opts.joint_encoder = a module f(xs, mask) -> mu, logvar replaces the
-- joint expert, e.g. an MLP on the raw concatenated inputs).
-- Missing modalities (mask [M,B]): their gate logits get log 1e-30 (weight
-- ~0); the joint expert is always present; only present modalities are
-- scored. The pooling is the fused td_weighted_pool. The loss is -L
-- averaged over the batch.
local tide = require("tide")
local nn = tide.nn
local MM = require("tide.models.multimodal")
local X = require("tide.models.experts")

local Gated = MM.Base:extend("GatedVAE")

local function mlp(nin, hidden, nout)
  local layers, d = {}, nin
  for _, h in ipairs(hidden) do
    layers[#layers + 1] = nn.Linear(d, h)
    layers[#layers + 1] = nn.ReLU()
    d = h
  end
  layers[#layers + 1] = nn.Linear(d, nout)
  return nn.Sequential(layers)
end

-- The default joint expert: an MLP on h (the experts' parameters).
local JointExpert = nn.Module:extend("JointExpert")
function JointExpert:init(nin, hidden, zdim)
  self.net = mlp(nin, hidden, 2 * zdim)
  self.zdim = zdim
end
function JointExpert:forward(h)
  local o = self.net(h)
  return o:narrow(2, 1, self.zdim), o:narrow(2, self.zdim + 1, self.zdim)
end

-- opts: zdim (required), beta (1), gate_hidden ({64}), joint_hidden ({128}),
-- joint_encoder (a module f(xs, mask) -> mu, logvar).
function Gated:init(mods, opts)
  opts = opts or {}
  if not opts.zdim then error("GatedVAE: opts.zdim is required", 2) end
  self:init_modalities(mods, opts)
  local M, D = self.nmod, self.zdim
  self.gate = mlp(2 * M * D, opts.gate_hidden or {64}, M + 1)
  if opts.joint_encoder then
    self.joint = opts.joint_encoder
    self.joint_raw = true
  else
    self.joint = JointExpert(2 * M * D, opts.joint_hidden or {128}, D)
  end
end

-- The M + 1 experts [M+1,B,D] and the gate weights [M+1,B].
function Gated:experts(xs, mask)
  local M = self.nmod
  local mu, lv = self:encode(xs)                                  -- [M,B,D]
  local B = mu:size(2)
  local pm, plv = mu, lv
  if mask then
    local m3 = mask:unsqueeze(-1)
    pm, plv = mu * m3, lv * m3
  end
  -- h = [mu_1, lv_1, ..., mu_M, lv_M] per sample: [B, 2 M D]
  local h = tide.cat({pm, plv}, 3):permute(2, 1, 3):reshape(B, -1)
  local jm, jlv
  if self.joint_raw then jm, jlv = self.joint(xs, mask) else jm, jlv = self.joint(h) end
  local logits = self.gate(h)                                     -- [B, M+1]
  if mask then
    local present = tide.cat({mask, tide.ones(1, B)}, 1):t()      -- [B, M+1]
    logits = logits + present:clamp(1e-30):log()
  end
  local w = logits:softmax(-1):t()                                -- [M+1, B]
  local emu = tide.cat({mu, jm:unsqueeze(1)}, 1)
  local elv = tide.cat({lv, jlv:unsqueeze(1)}, 1)
  return emu, elv, w
end

-- 1/s2 = sum_S w_S / s2_S ;  mu = s2 sum_S w_S mu_S / s2_S
function Gated:posterior(xs, mask)
  local emu, elv, w = self:experts(xs, mask)
  return X.weighted_pool(emu, elv, w)
end

-- opts: mask [M,B], beta, eps [B,D] (noise, for tests).
-- -> loss (0-d), stats {rec =, kl =, w_joint = mean gate weight of the joint expert}
function Gated:loss(xs, opts)
  opts = opts or {}
  local mask, beta = opts.mask, opts.beta or self.beta
  local emu, elv, w = self:experts(xs, mask)
  local qm, qlv = X.weighted_pool(emu, elv, w)                    -- [B,D]
  local z = X.rsample(qm, qlv, opts.eps)
  local kl_b = X.kl_std_normal(qm, qlv)                           -- [B]
  local rec_b
  for m = 1, self.nmod do
    local ll = self:log_lik(m, self:decode(m, z), xs[m])
    if mask then ll = ll * mask:select(1, m) end
    ll = ll * self.lambdas[m]
    rec_b = rec_b and rec_b + ll or ll
  end
  local loss = -(rec_b - kl_b * beta):mean()
  return loss, {rec = -rec_b:mean():item(), kl = kl_b:mean():item(),
                w_joint = w:select(1, self.nmod + 1):mean():item()}
end

Gated.forward = Gated.loss

-- log importance weights with q(z | X_cond) (the gated pooling of the cond
-- modalities, the others masked) as proposal, scoring the target -> [K,B]
function Gated:log_weights(xs, K, cond, target)
  local M = self.nmod
  cond = cond or X.subsets(M, {min = M})[1]
  target = target or cond
  local B = xs[1]:size(1)
  local cm = tide.zeros(M, B)
  for _, m in ipairs(cond) do cm:select(1, m):fill(1) end
  local qm, qlv = self:posterior(xs, cm)
  local z = X.rsample(qm, qlv, K)
  local lw = X.log_std_normal(z) - X.log_normal(z, qm, qlv)
  for _, m in ipairs(target) do lw = lw + self:log_lik(m, self:decode(m, z), xs[m]) end
  return lw
end

return Gated
