-- tide.models.mmvae_plus - MMVAE+ (Palumbo, Daunhawer & Vogt, ICLR 2023):
-- a mixture-of-experts multimodal VAE whose latent space is split into a
-- shared z and a private w_m per modality; cross-modal reconstructions draw
-- the target's private part from a learnable auxiliary prior r_n.
--
--   local MMVAEPlus = require("tide.models.mmvae_plus")
--   local model = MMVAEPlus{modalities = 5, zdim = 32, wdim = 32, beta = 2.5,
--                           arch = "light" | "paper", samples = 1,
--                           objective = "elbo" | "iwae" | "dreg",
--                           scale_head = "softplus" | "softmax"}   -- posterior scales (polymnist_nets)
--   local loss, stats = model:backward(x)   -- x: {x_1..x_M} [B,C,H,W] or [M,B,C,H,W]
--
-- The bound, per modality m and importance sample k (z, w_m ~ q(.|x_m)):
--
--   lw_mk = log p(x_m | z, w_m) + sum_{n ~= m} log p(x_n | z, w~_n),  w~_n ~ r_n
--         + beta [log p(z) + log p(w_m) - log q(z|X) - log q(w_m|x_m)]
--   q(z|X) = 1/M sum_m' q(z|x_m')                                (mixture of experts)
--
--   elbo: L = 1/M sum_m lw_m1
--   iwae: L = 1/M sum_m log 1/K sum_k exp lw_mk                  (the sum over m outside)
--   dreg: the same bound with doubly reparameterized gradients (Tucker et al.):
--         log q terms see detached parameters, the encoders get their gradient
--         only through z and w, weighted by the squared normalized weights.
--
-- loss = -mean over the batch of L. Densities: q, p(z), p(w_m) and r_n are
-- Laplace (the paper's choice) or Normal (posterior = "normal"); p(z) and
-- p(w_m) are the standard ones, r_n has location 0 and a learnable scale;
-- p(x_n|.) is Laplace with scale 0.75 around the decoder's output (or
-- Normal with that standard deviation: likelihood = "normal").
-- CMVAE (tide.models.cmvae) is this model with a mixture prior p(z).
local tide = require("tide")
local nn = tide.nn
local nets = require("tide.models.polymnist_nets")

local MMVAEPlus = nn.Module:extend("MMVAEPlus")

local LOG = math.log
local SOFTPLUS_INV_1 = LOG(math.exp(1) - 1) -- softplus^-1(1): r_n starts at scale 1
local OBJECTIVES = {elbo = true, iwae = true, dreg = true}

local function fail(msg) error("MMVAEPlus: " .. msg, 3) end

local function check_family(f, what)
  if f ~= "laplace" and f ~= "normal" then fail(what .. " must be 'laplace' or 'normal', got " .. tostring(f)) end
  return f
end

-- log density, elementwise: Laplace(loc, scale) or Normal(loc, scale = std).
local function log_prob(family, x, loc, scale)
  if family == "laplace" then return tide.laplace_log_prob(x, loc, scale) end
  return tide.normal_log_prob(x, loc, scale)
end
MMVAEPlus.log_prob = log_prob

-- Standard noise of a family, no gradient: Laplace(0,1) is
-- -sign(u) log(1 - |u|), u ~ U(-1,1) (as torch's rsample); Normal(0,1) randn.
local function std_noise(family, shape)
  return tide.no_grad(function()
    if family == "normal" then return tide.randn(shape) end
    local u = (tide.rand(shape) * 2 - 1):clamp(-1 + 1.1920929e-07, 1)
    local sgn = u:gt(0) - u:lt(0)
    return -(sgn * (-u:abs()):log1p())
  end)
end
MMVAEPlus.std_noise = std_noise

-- xs: a list {x_1..x_M} of [B, ...] or a tensor [M,B,...] -> [M,B,...]
local function stacked(xs)
  if tide.is_tensor(xs) then return xs end
  if type(xs) ~= "table" or #xs == 0 then fail("inputs must be a list of M tensors [B,...] or a tensor [M,B,...]") end
  return tide.stack(xs, 1)
end
MMVAEPlus.stacked = stacked

function MMVAEPlus:init(o)
  o = o or {}
  self.M = o.modalities or 5
  self.zdim, self.wdim = o.zdim or 32, o.wdim or 32
  self.shape = o.shape or {3, 28, 28}
  self.beta = o.beta or 2.5
  self.samples = o.samples or 1
  self.objective = o.objective or (self.samples > 1 and "iwae" or "elbo")
  if not OBJECTIVES[self.objective] then fail("objective must be elbo, iwae or dreg, got " .. tostring(self.objective)) end
  self.posterior = check_family(o.posterior or "laplace", "posterior")
  self.likelihood = check_family(o.likelihood or "laplace", "likelihood")
  self.likelihood_scale = o.likelihood_scale or 0.75
  self.arch = o.arch or "light"
  local enc, dec = o.encoder, o.decoder
  if not enc then
    enc, dec = nets.make(self.arch, {modalities = self.M, zdim = self.zdim, wdim = self.wdim,
                                     shape = self.shape, hidden = o.hidden, scale_head = o.scale_head})
  end
  self.enc, self.dec = enc, dec
  -- what tide.load_model needs to rebuild it (none with custom networks)
  self.config = not o.encoder and {class = "tide.models.mmvae_plus", modalities = self.M, shape = self.shape,
                 zdim = self.zdim, wdim = self.wdim, hidden = o.hidden, arch = self.arch, beta = self.beta,
                 samples = self.samples, objective = self.objective, posterior = self.posterior,
                 likelihood = self.likelihood, likelihood_scale = self.likelihood_scale,
                 scale_head = nets.check_scale_head(o.scale_head)} or nil
  -- r_n: location 0, scale softplus(r_rho_n) + 1e-6, learnable
  self:register_parameter("r_rho", {self.M, 1, self.wdim}, function(t) nn.init.constant_(t, SOFTPLUS_INV_1) end)
  local eye = tide.zeros(self.M, 1, self.M, 1, 1)
  for m = 1, self.M do eye:narrow(1, m, 1):narrow(3, m, 1):fill(1) end
  self.eye = eye -- [tgt,1,src,1,1]: 1 where the target is the source (self-reconstruction)
end

-- scale of r_n [M,1,wdim]
function MMVAEPlus:r_scale() return nets.positive(self.r_rho) end

-- sum over the last axis of log Laplace(x | mean, b), b = likelihood_scale:
-- -P log(2b) - sum |x - mean| / b; with likelihood = "normal",
-- log N(x | mean, b^2): -P log(b sqrt(2 pi)) - sum (x - mean)^2 / (2 b^2).
-- tide.rowdist makes one pass over the [.., P] tensors each way (x broadcast).
local rowdist = tide.rowdist

function MMVAEPlus:log_likelihood(x, mean)
  local b = self.likelihood_scale
  local P = mean:size(-1)
  if self.likelihood == "normal" then
    return rowdist(x, mean, 2) * (-0.5 / (b * b)) - P * (LOG(b) + 0.5 * LOG(2 * math.pi))
  end
  return rowdist(x, mean, 1) * (-1 / b) - P * LOG(2 * b)
end

-- log p(z) summed over the last axis: [..., zdim] -> [...]
function MMVAEPlus:log_prior_z(z)
  return log_prob(self.posterior, z, 0, 1):sum(-1)
end

-- The encoders: x [M,B,...] -> mu_z, scale_z [M,B,zdim], mu_w, scale_w [M,B,wdim]
function MMVAEPlus:encode(xs) return self.enc(stacked(xs)) end

-- lw [K,M,B] (K importance samples per modality) and its parts. opts:
-- samples (K), objective ("dreg" detaches the posteriors), noise = {z =
-- [K,M,B,zdim], w = [K,M,B,wdim], r = [M_target,K,M_source,B,wdim]} standard
-- draws of the family (for tests; drawn when missing).
function MMVAEPlus:log_weights(x, o)
  o = o or {}
  x = stacked(x)
  local K = o.samples or self.samples
  local dreg = (o.objective or self.objective) == "dreg"
  local M, B = x:size(1), x:size(2)
  local Dz, Dw, fam = self.zdim, self.wdim, self.posterior
  if M ~= self.M then fail(("x has %d modalities, the model %d"):format(M, self.M)) end
  local P = x.numel / (M * B)
  local mz, sz, mw, sw = self.enc(x)
  local noise = o.noise or {}
  -- z, w_m ~ q(.|x_m): [K,M,B,D]
  local z = mz + sz * (noise.z or std_noise(fam, {K, M, B, Dz}))
  local w = mw + sw * (noise.w or std_noise(fam, {K, M, B, Dw}))
  local zi, wi = z, w
  if dreg then -- leaves: the encoders' gradient goes through z and w in a second pass
    zi, wi = z:detach():requires_grad(true), w:detach():requires_grad(true)
    mz, sz, mw, sw = mz:detach(), sz:detach(), mw:detach(), sw:detach()
  end
  -- decoder inputs [target n, K, source m, B, zdim + wdim]: (z_m, w_n) when
  -- n = m, else (z_m, w~_n) with w~_n ~ r_n
  local er = noise.r or std_noise(fam, {M, K, M, B, Dw})
  local wt = er * self:r_scale():reshape(M, 1, 1, 1, Dw)
  local own = wi:permute(2, 1, 3, 4):reshape(M, K, 1, B, Dw)
  local wsel = tide.where(self.eye, own, wt)
  local zsel = zi:reshape(1, K, M, B, Dz):expand(M, K, M, B, Dz)
  local zw = tide.cat({zsel, wsel}, 5):reshape(M, K * M * B, Dz + Dw)
  local mean = self.dec(zw):reshape(M, K, M, B, P)
  -- sum_n log p(x_n | z_m, .) -> [K,M,B]
  local lpx = self:log_likelihood(x:reshape(M, 1, 1, B, P), mean):sum(1)
  -- log q(z|X) = log 1/M sum_m' q(z|x_m') -> [K,M,B]
  local lqz = log_prob(fam, zi:reshape(K, M, 1, B, Dz), mz:reshape(1, 1, M, B, Dz), sz:reshape(1, 1, M, B, Dz))
  lqz = lqz:sum(5):logsumexp(3) - LOG(M)
  local lqw = log_prob(fam, wi, mw, sw):sum(4)
  local lpw = log_prob(fam, wi, 0, 1):sum(4)
  local lpz = self:log_prior_z(zi)
  local lw = lpx + (lpz + lpw - lqz - lqw) * self.beta
  return lw, {lpx = lpx, lpz = lpz, lpw = lpw, lqz = lqz, lqw = lqw, z = z, w = w, zi = zi, wi = wi, dreg = dreg}
end

-- loss (0-d tensor, -mean over the batch of the bound), stats, and for
-- dreg a function to call after loss:backward() (the encoders' pass).
function MMVAEPlus:loss(x, o)
  o = o or {}
  local lw, p = self:log_weights(x, o)
  local K = lw:size(1)
  local loss, after
  if p.dreg then
    local wk = tide.no_grad(function() return lw:softmax(1) end) -- [K,M,B], constant
    loss = -(lw * wk):sum(1):mean()
    after = function()
      local gz, gw = p.zi:grad(), p.wi:grad()
      local wk4 = wk:unsqueeze(4)
      local s = (p.z * tide.no_grad(function() return gz * wk4 end)):sum() +
                (p.w * tide.no_grad(function() return gw * wk4 end)):sum()
      s:backward()
    end
  elseif K == 1 then
    loss = -lw:mean()
  else
    loss = -(lw:logsumexp(1) - LOG(K)):mean()
  end
  local stats = tide.no_grad(function()
    return {rec = -p.lpx:mean():item(), lpz = p.lpz:mean():item(), kl = (p.lqz + p.lqw - p.lpz - p.lpw):mean():item()}
  end)
  return loss, stats, after
end

-- loss:backward() (and the dreg pass); returns loss, stats.
function MMVAEPlus:backward(x, o)
  local loss, stats, after = self:loss(x, o)
  loss:backward()
  if after then after() end
  return loss, stats
end

-- A step function for tide.train.fit{..., backward = false}: zero_grad,
-- backward, clipping, optimizer step.
function MMVAEPlus:fit_step(opt, clip)
  return function(batch)
    opt:zero_grad()
    local loss, stats = self:backward(batch.x)
    if clip then stats.grad_norm = opt:clip_grad_norm(clip) end
    opt:step()
    return loss, stats
  end
end

---------------------------------------------------------------- evaluation

-- The posterior parameters of a whole data set, in batches, without
-- gradient: {mu_z, scale_z [M,N,zdim], mu_w, scale_w [M,N,wdim]}.
function MMVAEPlus:embed(ds, o)
  o = o or {}
  local bs = o.batch_size or 500
  local parts = {{}, {}, {}, {}}
  local was = self.training
  self:eval()
  tide.no_grad(function()
    local n = ds:size()
    for s = 1, n, bs do
      local b = ds:range(s, math.min(bs, n - s + 1))
      local r = {self:encode(b.x)}
      for i = 1, 4 do parts[i][#parts[i] + 1] = r[i]:contiguous() end
    end
  end)
  self:train(was)
  local out = {}
  for i, k in ipairs({"mu_z", "scale_z", "mu_w", "scale_w"}) do out[k] = tide.cat(parts[i], 2) end
  return out
end

-- One draw z_m ~ q(z|x_m) per point and modality, from embed()'s output: [M,N,zdim]
function MMVAEPlus:sample_z(e)
  return e.mu_z + e.scale_z * std_noise(self.posterior, e.mu_z:shape())
end

-- Decodes z [N,zdim] with w~_n drawn from r_n (or from p(w) with
-- {prior_w = true}) for every modality n -> [M,N,C,H,W] (the model's shape), no gradient.
function MMVAEPlus:decode_all(z, o)
  o = o or {}
  return tide.no_grad(function()
    local M, N, Dw = self.M, z:size(1), self.wdim
    local scale = o.prior_w and 1 or self:r_scale():reshape(M, 1, Dw)
    local w = std_noise(self.posterior, {M, N, Dw}) * scale
    local zw = tide.cat({z:reshape(1, N, self.zdim):expand(M, N, self.zdim), w}, 3)
    local shape = {M, N}
    for _, v in ipairs(self.shape) do shape[#shape + 1] = v end
    return self.dec(zw):reshape(shape)
  end)
end

-- Cross-modal generation: from the posterior means of modality src
-- (1-based) of x, every modality -> [M,B,C,H,W].
function MMVAEPlus:cross_generate(x, src)
  local mz = tide.no_grad(function() return (self:encode(x)) end)
  return self:decode_all(mz:select(1, src):contiguous())
end

-- Unconditional samples: z ~ p(z) -> [M,N,C,H,W]
function MMVAEPlus:sample(n)
  return self:decode_all(std_noise(self.posterior, {n, self.zdim}), {prior_w = true})
end

return MMVAEPlus
