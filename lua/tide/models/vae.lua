-- tide.models.vae - the variational autoencoder (Kingma & Welling 2014) with
-- the importance weighted bound (IWAE, Burda et al. 2016) and the doubly
-- reparameterized gradient estimator (DReG, Tucker et al. 2018).
--
--   local VAE = require("tide.models.vae")
--   local model = VAE{shape = {1, 28, 28}, latent = 20, hidden = {512, 512},
--                     likelihood = "bernoulli", objective = "elbo", K = 1, beta = 1}
--   local loss, stats = model:loss(x)          -- x [B,1,28,28] in [0,1]
--
-- Model: p(z) = N(0, I), p(x|z) from the decoder (likelihood "bernoulli"
-- with logits, "gaussian" or "laplace" with a scale: a number, default 1,
-- or "learn" for one learned log-scale), q(z|x) = N(mu(x), diag exp(lv(x))).
--
-- Options: shape, latent, kind ("mlp" | "conv"), hidden, width (see
-- tide.models.nets), or your own encoder (x -> mu, logvar) and decoder
-- (z [..., D] -> [..., shape]); likelihood, scale, beta, K, objective
-- ("elbo" | "iwae" | "dreg").
--
-- Every objective is per sample ([B]); loss() is minus its batch mean.
-- eps (a tensor [K,B,D]) may replace the random noise anywhere K is taken,
-- so a test can fix z = mu + sigma * eps.
local tide = require("tide")
local nn = tide.nn
local nets = require("tide.models.nets")
local X = require("tide.models.experts")

local VAE = nn.Module:extend("VAE")

function VAE:init(opts)
  opts = opts or {}
  self.shape = opts.shape or {1, 28, 28}
  self.latent = opts.latent or 20
  self.likelihood = opts.likelihood or "bernoulli"
  self.beta = opts.beta or 1
  self.K = opts.K or 1
  self.objective = opts.objective or "elbo"
  local netopts = {kind = opts.kind, shape = self.shape, latent = self.latent, hidden = opts.hidden,
                   width = opts.width, act = opts.act}
  self.enc = opts.encoder or nets.encoder(netopts)
  self.dec = opts.decoder or nets.decoder(netopts)
  if self.likelihood == "gaussian" or self.likelihood == "laplace" then
    if opts.scale == "learn" then
      self:register_parameter("log_scale", {1}, nn.init.zeros_)
    else
      self.fixed_scale = opts.scale or 1
    end
  elseif self.likelihood ~= "bernoulli" then
    error("VAE: likelihood must be bernoulli, gaussian or laplace, got " .. tostring(self.likelihood), 2)
  end
  if self.objective ~= "elbo" and self.objective ~= "iwae" and self.objective ~= "dreg" then
    error("VAE: objective must be elbo, iwae or dreg, got " .. tostring(self.objective), 2)
  end
end

---------------------------------------------------------------- pieces

-- q(z|x): mu, logvar [B,D]
function VAE:encode(x) return self.enc(x) end

-- z [..., B, D] -> decoder output [..., B, shape] (logits or means)
function VAE:decode(z) return self.dec(z) end

function VAE:scale()
  if self.log_scale then return self.log_scale:exp() end
  return self.fixed_scale
end

-- log p(x|z) summed over the pixels: out [..., B, shape], x [B, shape] -> [..., B]
function VAE:log_px(x, out)
  return nets.log_likelihood(self.likelihood, out, x, self:scale())
end

-- The mean of p(x|z) from a decoder output.
function VAE:mean(out) return nets.mean(self.likelihood, out) end

-- z_k = mu + sigma * eps_k: K samples [K,B,D] (eps given, or drawn)
local function draw(mu, logvar, k)
  local eps = tide.is_tensor(k) and k or nil
  if not eps then
    local s = mu:shape()
    table.insert(s, 1, k or 1)
    eps = tide.randn(s)
  end
  return X.rsample(mu, logvar, eps)
end

local function samples_arg(self, opts)
  opts = opts or {}
  return opts.eps or opts.K or self.K
end

---------------------------------------------------------------- objectives

-- ELBO = E_q[log p(x|z)] - beta KL(q(z|x) || p(z)), the expectation over K
-- samples, the KL in closed form:
--   KL = 1/2 sum_d (exp(lv) + mu^2 - lv - 1)
-- -> elbo, rec, kl [B]
function VAE:elbo(x, opts)
  local mu, lv = self:encode(x)
  local z = draw(mu, lv, samples_arg(self, opts))           -- [K,B,D]
  local rec = self:log_px(x, self:decode(z)):mean(1)        -- [B]
  local kl = X.kl_std_normal(mu, lv)
  return rec - kl * self.beta, rec, kl
end

-- log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)),  z_k ~ q(z|x)
-- -> lw [K,B], and z, mu, lv. With opts.dreg the posterior's parameters are
-- held fixed in log q (stop-gradient), and z reaches the encoder through a
-- gradient hook (see VAE:dreg).
function VAE:log_weights(x, opts)
  local mu, lv = self:encode(x)
  local z = draw(mu, lv, samples_arg(self, opts))
  local zin, hook = z, nil
  local qmu, qlv = mu, lv
  if opts and opts.dreg then
    hook = tide.ones(z:size(1), z:size(2), 1)
    -- sg(z) + c (z - sg(z)) has the value of z; its gradient reaches z times c
    local zd = z:detach()
    zin = zd + hook * (z - zd)
    qmu, qlv = mu:detach(), lv:detach()
  end
  local lpx = self:log_px(x, self:decode(zin))              -- [K,B]
  local lw = lpx + (X.log_std_normal(zin) - X.log_normal(zin, qmu, qlv)) * self.beta
  return lw, hook, lpx
end

-- IWAE_K = log 1/K sum_k w_k  -> [B]
function VAE:iwae(x, opts)
  local lw = self:log_weights(x, opts)
  return lw:logsumexp(1) - math.log(lw:size(1))
end

-- DReG (Tucker et al. 2018): with normalized weights wt_k = w_k / sum_j w_j
-- (held constant),
--   decoder:  grad = sum_k wt_k   d/dtheta log w_k
--   encoder:  grad = sum_k wt_k^2 d log w_k/dz_k  dz_k/dphi  (log q with sg params)
-- The surrogate sum_k wt_k log w_k gives the first; the hook on z multiplies
-- what reaches the encoder by wt_k once more. -> surrogate [B], IWAE value [B]
function VAE:dreg(x, opts)
  opts = opts or {}
  local lw, hook = self:log_weights(x, {eps = opts.eps, K = opts.K, dreg = true})
  local k = lw:size(1)
  local wt = tide.no_grad(function() return lw:detach():softmax(1) end)   -- [K,B]
  hook:copy_(wt:reshape(k, -1, 1))
  local surrogate = (lw * wt):sum(1)
  local value = tide.no_grad(function() return lw:detach():logsumexp(1) - math.log(k) end)
  return surrogate, value
end

-- The training loss (minus the batch mean of the objective) and stats.
function VAE:loss(x, opts)
  opts = opts or {}
  local objective = opts.objective or self.objective
  if objective == "elbo" then
    local elbo, rec, kl = self:elbo(x, opts)
    return -elbo:mean(), {elbo = elbo:mean():item(), rec = rec:mean():item(), kl = kl:mean():item()}
  elseif objective == "iwae" then
    local v = self:iwae(x, opts)
    return -v:mean(), {iwae = v:mean():item()}
  elseif objective == "dreg" then
    local s, v = self:dreg(x, opts)
    return -s:mean(), {iwae = v:mean():item()}
  end
  error("VAE:loss: objective must be elbo, iwae or dreg, got " .. tostring(objective), 2)
end

---------------------------------------------------------------- generation

-- n images: the means of p(x|z), z ~ N(0, I) -> [n, shape]
function VAE:sample(n)
  return tide.no_grad(function()
    return self:mean(self:decode(tide.randn(n, self.latent)))
  end)
end

-- the mean of p(x | z = mu(x)) -> [B, shape]
function VAE:reconstruct(x)
  return tide.no_grad(function()
    local mu = self:encode(x)
    return self:mean(self:decode(mu))
  end)
end

-- the posterior means mu(x) [B,D] (features for probes and clustering)
function VAE:embed(x)
  return tide.no_grad(function() return (self:encode(x)) end)
end

return VAE
