-- tide.models.vade - VaDE, Variational Deep Embedding (Jiang, Zheng, Tan,
-- Tang & Zhou, IJCAI 2017): a VAE whose prior is a mixture of Gaussians.
--
-- Generative model:  c ~ Cat(pi),  z | c ~ N(mu_c, diag s2_c),  x | z ~ p(x|z) (decoder)
-- Inference:         q(z|x) = N(mu~(x), diag s2~(x)),  q(c|x) = gamma(x)
-- with pi = softmax(pi_logits), mu_c and log s2_c learnable [K,Z].
--
-- Training (the paper's recipe): pretrain an autoencoder (pretrain_loss, the
-- code is mu~(x)), fit a diagonal GMM on the codes of the training set with
-- tide.cluster.gmm (init_gmm), then maximise the ELBO (loss).
--
--   local VaDE = require("tide.models.vade")
--   local m = VaDE.new{x_dim = 784, hidden = {500, 500, 2000}, z_dim = 10, k = 10}
--   local loss, stats = m:loss(x)           -- -mean ELBO of a batch [B,...]
--   m:init_gmm(x_all, {seed = 1})            -- after pretraining
--   local labels = m:predict(x_all)          -- argmax_c q(c|x) [N], 0-based
local tide = require("tide")
local nn = tide.nn
local B = require("tide_ffi")
local raise = B.raise

local M = {}
local LOG_2PI = math.log(2 * math.pi)

local VaDE = nn.Module:extend("VaDE")
M.VaDE = VaDE

-- Linear/ReLU stack: sizes {a, b, c} -> Linear(a,b) ReLU Linear(b,c) ReLU
-- (no activation after the last layer when last_act is false).
local function mlp(sizes, last_act)
  local seq = nn.Sequential()
  for i = 1, #sizes - 1 do
    seq:add(nn.Linear(sizes[i], sizes[i + 1]))
    if i < #sizes - 1 or last_act then seq:add(nn.ReLU()) end
  end
  return seq
end
M.mlp = mlp

local OPTIONS = {x_dim = true, hidden = true, z_dim = true, k = true, likelihood = true, scale = true,
                 encoder = true, decoder = true, h_dim = true, kind = true, width = true}

-- The encoder x -> (mu, logvar) and the decoder z -> [B,x_dim] of both
-- clustering models (also used by tide.models.cluster_vae), by opts.kind:
-- "mlp" (default): encoder = Linear/ReLU stack x_dim -> hidden..., heads
--   enc_mu and enc_logvar; decoder = the mirror stack (or your own encoder
--   giving h [B,h_dim] and decoder modules);
-- "conv": tide.models.nets' conv encoder and decoder for 1x28x28 images
--   (opts.width channels first, default 32), whose encoder has the heads.
function M.build_autoencoder(self, opts)
  self.kind = opts.kind or "mlp"
  if self.kind == "conv" then
    if self.x_dim ~= 784 then raise("kind 'conv' needs x_dim = 784 (1x28x28 images), got " .. self.x_dim) end
    local nets = require("tide.models.nets")
    local o = {kind = "conv", shape = {1, 28, 28}, latent = self.z_dim, width = opts.width}
    self.encoder = nets.encoder(o)
    self.decoder = nets.decoder(o)
    return
  elseif self.kind ~= "mlp" then
    raise("kind must be 'mlp' or 'conv', got " .. tostring(self.kind))
  end
  local hidden = opts.hidden or {500, 500, 2000}
  local enc_sizes, dec_sizes = {self.x_dim}, {self.z_dim}
  for i = 1, #hidden do enc_sizes[#enc_sizes + 1] = hidden[i] end
  for i = #hidden, 1, -1 do dec_sizes[#dec_sizes + 1] = hidden[i] end
  dec_sizes[#dec_sizes + 1] = self.x_dim
  local h_dim = opts.h_dim or hidden[#hidden]
  self.encoder = opts.encoder or mlp(enc_sizes, true)
  self.enc_mu = nn.Linear(h_dim, self.z_dim)
  self.enc_logvar = nn.Linear(h_dim, self.z_dim)
  self.decoder = opts.decoder or mlp(dec_sizes, false)
end

local function flat(x) return x:reshape(x:size(1), -1) end

-- q(z|x): mean and log-variance [B,Z].
function M.encode(self, x)
  if self.kind == "conv" then return self.encoder(x) end
  local h = self.encoder(flat(x))
  return self.enc_mu(h), self.enc_logvar(h)
end

-- The decoder's output [B,x_dim]: logits (Bernoulli) or means (Normal).
function M.decode(self, z) return flat(self.decoder(z)) end

-- The Linear layer giving the log-variance of q(z|x).
function M.logvar_head(self) return self.kind == "conv" and self.encoder.logvar or self.enc_logvar end

-- The modules of the autoencoder x -> mu -> x (for pre-training).
function M.autoencoder_modules(self)
  if self.kind == "conv" then return {self.encoder, self.decoder} end
  return {self.encoder, self.enc_mu, self.decoder}
end

-- opts: x_dim (784), hidden ({500, 500, 2000}: the encoder x -> h; the
-- decoder mirrors it), z_dim (10), k (10), likelihood ("bernoulli": the
-- decoder gives logits; "normal": means with a fixed scale opts.scale),
-- kind ("mlp" or "conv", see build_autoencoder), width (conv), or your own
-- encoder (x [B,x_dim] -> h [B,h_dim], give h_dim) and decoder
-- (z [B,z_dim] -> [B,x_dim]) modules.
function VaDE:init(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then raise("VaDE: unknown option '" .. tostring(k) .. "'") end
  end
  self.x_dim, self.z_dim, self.k = opts.x_dim or 784, opts.z_dim or 10, opts.k or 10
  self.likelihood, self.scale = opts.likelihood or "bernoulli", opts.scale or 1
  if self.likelihood ~= "bernoulli" and self.likelihood ~= "normal" then
    raise("VaDE: likelihood must be 'bernoulli' or 'normal', got " .. tostring(self.likelihood))
  end
  -- the mixture prior: pi = softmax(pi_logits), means mu_c, log-variances log s2_c
  self:register_parameter("pi_logits", {self.k}, nn.init.zeros_)
  self:register_parameter("mu_c", {self.k, self.z_dim}, nn.init.zeros_)
  self:register_parameter("logvar_c", {self.k, self.z_dim}, nn.init.zeros_)
  M.build_autoencoder(self, opts)
end

function M.new(opts) return VaDE(opts) end

VaDE.encode = M.encode              -- q(z|x): mu~, log s2~ [B,Z]
VaDE.decode = M.decode              -- [B,x_dim] logits or means
VaDE.logvar_head = M.logvar_head
VaDE.autoencoder_modules = M.autoencoder_modules

-- log p(x|z) summed over the pixels -> [B].
function VaDE:recon_log_prob(x, out)
  x = flat(x)
  if self.likelihood == "bernoulli" then return -tide.bce_with_logits(out, x):sum(2) end
  return tide.normal_log_prob(x, out, tide.full_like(out, self.scale)):sum(2)
end

-- z = mu + exp(logvar / 2) eps, eps ~ N(0, I) unless given [B,Z].
local function sample(mu, logvar, eps)
  eps = eps or tide.randn_like(mu)
  return mu + (logvar * 0.5):exp() * eps
end

-- log pi_c + E_q(z|x) log N(z; mu_c, s2_c) [B,K], closed form:
--   E_q log N(z; mu_c, s2_c) = -1/2 sum_d (log 2pi + log s2_cd + (s2~_d + (mu~_d - mu_cd)^2) / s2_cd)
-- = gmm_log_joint at z = mu~ (the (mu~ - mu_c)^2 part) - 1/2 s2~ . (1 / s2_c).
function VaDE:expected_log_joint(mu, logvar)
  local at_mean = tide.gmm_log_joint(mu, self.pi_logits, self.mu_c, self.logvar_c, 0)
  return at_mean - tide.matmul(logvar:exp(), (-self.logvar_c):exp():t()) * 0.5
end

-- gamma_c = q(c|x) = p(c|z) = pi_c N(z; mu_c, s2_c) / sum_c' pi_c' N(z; mu_c', s2_c')  [B,K]
-- (Bayes' rule at the sample z ~ q(z|x), eq. 16 of the paper; differentiable).
function VaDE:gamma_of(z)
  return tide.gmm_log_joint(z, self.pi_logits, self.mu_c, self.logvar_c, 0):softmax(-1)
end

-- The ELBO per sample [B] (one sample z ~ q(z|x); eps [B,Z] may be given):
--   L(x) = E_q(z,c|x)[log p(x|z) + log p(z|c) + log p(c) - log q(z|x) - log q(c|x)]
--        = log p(x|z) + sum_c gamma_c (log pi_c + E_q log p(z|c) - log gamma_c) + H[q(z|x)]
--   H[q(z|x)] = 1/2 sum_d (1 + log 2pi + log s2~_d)
-- The middle sum is td_gmm_elbo_joint(J, gamma) on the closed-form joint J.
function VaDE:elbo(x, eps)
  local mu, logvar = self:encode(x)
  local z = sample(mu, logvar, eps)
  local rec = self:recon_log_prob(x, self:decode(z))
  local gamma = self:gamma_of(z)
  local prior = tide.gmm_elbo_joint(self:expected_log_joint(mu, logvar), gamma)
  local entropy = ((logvar + (1 + LOG_2PI)) * 0.5):sum(2)
  return rec + prior + entropy, {rec = rec, prior = prior, entropy = entropy, gamma = gamma, z = z}
end

-- -mean ELBO of a batch, and {rec =, kl =} (means, as numbers) for logs.
function VaDE:loss(x, opts)
  local elbo, parts = self:elbo(x, opts and opts.eps)
  local loss = -elbo:mean()
  local rec = parts.rec:mean():item()
  return loss, {rec = -rec, kl = loss:item() + rec}
end

-- Autoencoder pre-training: -log p(x | z = mu~(x)), mean over the batch;
-- with target given, the input x is a corrupted copy of it (denoising).
function VaDE:pretrain_loss(x, target)
  local mu = self:encode(x)
  return -self:recon_log_prob(target or x, self:decode(mu)):mean()
end

-- The codes mu~(x) of a whole data set [N,...] -> [N,Z], in batches, no grad.
function VaDE:embed(x, batch)
  batch = batch or 1000
  local n, parts = x:size(1), {}
  tide.no_grad(function()
    for s = 1, n, batch do
      local mu = self:encode(x:narrow(1, s, math.min(batch, n - s + 1)))
      parts[#parts + 1] = mu
    end
  end)
  return #parts == 1 and parts[1] or tide.cat(parts, 1)
end

-- GMM initialization of the prior (after pre-training): diagonal GMM-EM on
-- the codes of x [N,...]; opts go to tide.cluster.gmm. Returns the fit.
-- With q_var = f, the log-variance head of q(z|x) is reset to the constant
-- log(f * mean_c s2_c) per dimension (zero weights): the pre-trained
-- autoencoder never trained that head, and its random output (s2~ near 1)
-- can be far larger than the clusters' spread of the codes.
function VaDE:init_gmm(x, opts)
  opts = opts or {}
  local gopts, f = {}, opts.q_var
  for k, v in pairs(opts) do if k ~= "q_var" then gopts[k] = v end end
  local g = tide.cluster.gmm(self:embed(x), self.k, gopts)
  self.pi_logits:copy_(g.logits)
  self.mu_c:copy_(g.means)
  self.logvar_c:copy_(g.logvars)
  if f then
    local head = self:logvar_head()
    head.weight:fill(0)
    head.bias:copy_((g.logvars:exp():mean(1) * f):log())
  end
  return g
end

-- q(c|x) [N,K] at z = mu~(x) (the encoder mean, no sampling), no grad.
function VaDE:predict_proba(x)
  return tide.gmm_responsibilities(self:embed(x), self.pi_logits, self.mu_c, self.logvar_c)
end

-- argmax_c q(c|x) [N] (0-based cluster ids).
function VaDE:predict(x) return self:predict_proba(x):argmax(2) end

---------------------------------------------------------------- input noise

-- Masking noise of denoising autoencoders: each pixel zeroed with
-- probability p (x [B,...] -> same shape).
function M.mask_noise(x, p)
  if not p or p <= 0 then return x end
  return x * tide.bernoulli(tide.full_like(x, 1 - p))
end

-- Maps [(2s+1)^2 * R, 28*28] for shifts (dy, dx) in [-s, s]^2 and R
-- rotations (degrees rot * {-1, -1/2, 0, 1/2, 1}, or none when rot = 0):
-- output pixel (i, j) reads, by nearest neighbour, the pixel of the image
-- zero-padded by s + 1 that the inverse rotation about the centre and the
-- inverse shift bring it to (a padding zero when that falls outside).
local affine_maps = {}
local function affine_map(s, rot)
  local key = s .. "/" .. rot
  if affine_maps[key] then return affine_maps[key] end
  local p = s + 1
  local P, t, n = 28 + 2 * p, {}, 0
  local angles = rot > 0 and {-rot, -rot / 2, 0, rot / 2, rot} or {0}
  for _, deg in ipairs(angles) do
    -- rounded, so quarter turns map pixel centres exactly (cos 90 is 6e-17)
    local c = math.floor(math.cos(math.rad(deg)) * 1e9 + 0.5) / 1e9
    local sn = math.floor(math.sin(math.rad(deg)) * 1e9 + 0.5) / 1e9
    for dy = -s, s do
      for dx = -s, s do
        n = n + 1
        for i = 0, 27 do
          for j = 0, 27 do
            local y, x = i - dy - 13.5, j - dx - 13.5
            local si = math.floor(c * y + sn * x + 13.5 + 0.5)
            local sj = math.floor(-sn * y + c * x + 13.5 + 0.5)
            if si < 0 or si > 27 or sj < 0 or sj > 27 then t[#t + 1] = 0
            else t[#t + 1] = (si + p) * P + (sj + p) end
          end
        end
      end
    end
  end
  affine_maps[key] = {map = tide.from_table(t, {n, 784}), pad = p}
  return affine_maps[key]
end

-- Random translations of 28x28 images x [B,1,28,28] (or [B,784]) by up to
-- s pixels in each direction, and rotations by up to rot degrees when rot
-- is given (uniform over the maps, drawn per image), zeros brought in: a
-- pad (concat) and one gather.
function M.random_shift(x, s, rot)
  rot = rot or 0
  if (not s or s <= 0) and rot <= 0 then return x end
  local a = affine_map(s or 0, rot)
  local b, p = x:size(1), a.pad
  local P = 28 + 2 * p
  local img = x:reshape(b, 28, 28)
  local zc, zr = tide.zeros(b, 28, p), tide.zeros(b, p, P)
  local padded = tide.cat({zr, tide.cat({zc, img, zc}, 3), zr}, 2):reshape(b, P * P)
  local ids = tide.categorical(tide.full({a.map:size(1)}, 1 / a.map:size(1)), b)
  return padded:gather(2, a.map:index_select(1, ids)):reshape(x:shape())
end

-- Samples of cluster c (0-based): decoder outputs (probabilities for
-- Bernoulli) of n draws z ~ N(mu_c, s2_c) -> [n, x_dim].
function VaDE:sample_cluster(c, n)
  return tide.no_grad(function()
    local mu = self.mu_c[c + 1]:reshape(1, -1)
    local sd = (self.logvar_c[c + 1]:reshape(1, -1) * 0.5):exp()
    local z = mu + sd * tide.randn(n, self.z_dim)
    local out = self:decode(z)
    return self.likelihood == "bernoulli" and out:sigmoid() or out
  end)
end

return M
