-- tide.models.cluster_vae - the one-step clustering VAE (Su Jianlin, "VAE
-- part 4: a one-step clustering scheme", kexue.fm 2018): a VAE whose code z
-- is classified by p(y|z), each class y with its own Gaussian q(z|y) =
-- N(mu_y, I), trained in one stage (no pre-training, no separate k-means).
--
-- Notation of the post: p(z|x) the encoder, q(x|z) the decoder, p(y|z) the
-- classifier, q(z|y) = N(mu_y, I), q(y) uniform over the K classes. The loss
-- per sample, with z ~ p(z|x) (one reparameterized sample):
--
--   L(x) = -log q(x|z) + sum_y p(y|z) log( p(z|x) / q(z|y) ) + KL( p(y|z) || q(y) )
--
-- and since sum_y p(y|z) = 1 and log q(y) = -log K,
--
--   L(x) = -log q(x|z) + log p(z|x) - sum_y p(y|z) (log q(y) + log q(z|y) - log p(y|z))
--
-- where the sum is td_gmm_elbo_joint(J, p(y|z)) on J = td_gmm_log_joint(z,
-- zero logits, mu_y, zero log-variances) = log q(y) + log q(z|y).
--
--   local CVAE = require("tide.models.cluster_vae")
--   local m = CVAE.new{x_dim = 784, hidden = {500, 500, 2000}, z_dim = 10, k = 10}
--   local loss, stats = m:loss(x)       -- mean L over the batch
--   local labels = m:predict(x_all)     -- argmax_y p(y | z = encoder mean) [N], 0-based
local tide = require("tide")
local nn = tide.nn
local B = require("tide_ffi")
local raise = B.raise
local V = require("tide.models.vade")

local M = {}

local ClusterVAE = nn.Module:extend("ClusterVAE")
M.ClusterVAE = ClusterVAE

local OPTIONS = {x_dim = true, hidden = true, z_dim = true, k = true, cls_hidden = true, likelihood = true,
                 scale = true, encoder = true, decoder = true, h_dim = true, means_init = true, kind = true,
                 width = true}

-- opts: x_dim (784), hidden ({500, 500, 2000}; the decoder mirrors it),
-- z_dim (10), k (10), cls_hidden (256: the classifier z -> 256 -> K),
-- likelihood ("bernoulli" or "normal" with the fixed scale opts.scale),
-- kind ("mlp" or "conv"), width, encoder/decoder/h_dim as in
-- tide.models.vade, means_init (std of the N(0, s^2) init of mu_y; 0, the
-- post's zeros, by default).
function ClusterVAE:init(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then raise("ClusterVAE: unknown option '" .. tostring(k) .. "'") end
  end
  self.x_dim, self.z_dim, self.k = opts.x_dim or 784, opts.z_dim or 10, opts.k or 10
  self.likelihood, self.scale = opts.likelihood or "bernoulli", opts.scale or 1
  if self.likelihood ~= "bernoulli" and self.likelihood ~= "normal" then
    raise("ClusterVAE: likelihood must be 'bernoulli' or 'normal', got " .. tostring(self.likelihood))
  end
  local s = opts.means_init or 0
  self:register_parameter("class_means", {self.k, self.z_dim}, function(t)
    if s > 0 then return nn.init.normal_(t, 0, s) end
    return nn.init.zeros_(t)
  end)
  V.build_autoencoder(self, opts)
  self.classifier = V.mlp({self.z_dim, opts.cls_hidden or 256, self.k}, false)
end

function M.new(opts) return ClusterVAE(opts) end

local function flat(x) return x:reshape(x:size(1), -1) end

ClusterVAE.encode = V.encode        -- p(z|x): mean and log-variance [B,Z]
ClusterVAE.decode = V.decode        -- q(x|z): logits or means [B,x_dim]
ClusterVAE.logvar_head = V.logvar_head
ClusterVAE.autoencoder_modules = V.autoencoder_modules

-- log q(x|z) summed over the pixels -> [B].
function ClusterVAE:recon_log_prob(x, out)
  x = flat(x)
  if self.likelihood == "bernoulli" then return -tide.bce_with_logits(out, x):sum(2) end
  return tide.normal_log_prob(x, out, tide.full_like(out, self.scale)):sum(2)
end

-- log p(y|z) [B,K].
function ClusterVAE:classify(z) return self.classifier(z):log_softmax(-1) end

-- The loss per sample [B] (eps [B,Z] may be given) and its parts.
function ClusterVAE:losses(x, eps)
  local mu, logvar = self:encode(x)
  local sd = (logvar * 0.5):exp()
  local z = mu + sd * (eps or tide.randn_like(mu))
  local rec = self:recon_log_prob(x, self:decode(z))                       -- log q(x|z)
  local log_pzx = tide.normal_log_prob(z, mu, sd):sum(2)                   -- log p(z|x)
  local py = self:classify(z):exp()                                        -- p(y|z)
  local J = tide.gmm_log_joint(z, tide.zeros(self.k), self.class_means,    -- log q(y) + log q(z|y)
                               tide.zeros(self.k, self.z_dim), 0)
  local prior = tide.gmm_elbo_joint(J, py)  -- sum_y p(y|z) (log q(y) + log q(z|y) - log p(y|z))
  return -rec + log_pzx - prior, {rec = rec, log_pzx = log_pzx, prior = prior, py = py, z = z}
end

-- Mean loss of a batch, and {rec =, kl =} (numbers) for logs.
function ClusterVAE:loss(x, opts)
  local l, parts = self:losses(x, opts and opts.eps)
  local loss = l:mean()
  local rec = parts.rec:mean():item()
  return loss, {rec = -rec, kl = loss:item() + rec}
end

-- The encoder means of a whole data set [N,...] -> [N,Z], no grad.
function ClusterVAE:embed(x, batch)
  batch = batch or 1000
  local n, parts = x:size(1), {}
  tide.no_grad(function()
    for s = 1, n, batch do
      parts[#parts + 1] = (self:encode(x:narrow(1, s, math.min(batch, n - s + 1))))
    end
  end)
  return #parts == 1 and parts[1] or tide.cat(parts, 1)
end

-- p(y | z = encoder mean) [N,K], no grad.
function ClusterVAE:predict_proba(x)
  local z = self:embed(x)
  return tide.no_grad(function() return self:classify(z):exp() end)
end

-- argmax_y p(y|z) [N] (0-based cluster ids).
function ClusterVAE:predict(x) return self:predict_proba(x):argmax(2) end

-- Samples of class y (0-based): decoder outputs of z ~ N(mu_y, I) -> [n, x_dim].
function ClusterVAE:sample_cluster(y, n)
  return tide.no_grad(function()
    local z = self.class_means[y + 1]:reshape(1, -1) + tide.randn(n, self.z_dim)
    local out = self:decode(z)
    return self.likelihood == "bernoulli" and out:sigmoid() or out
  end)
end

return M
