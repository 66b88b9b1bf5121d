-- tide.models.dcmvae - D-CMVAE (Palumbo et al., ICLR 2024, after DiffuseVAE,
-- Pandey et al. 2022): a DDPM conditioned on a VAE's reconstructions, which
-- learns to turn the blurry VAE output into a sharp image of the same
-- content. The reconstruction y enters the UNet as extra input channels:
--
--   L = E_{t, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, y) ||^2,
--   y = recon(x) (self-modal: x_m -> x_m; cross-modal: x_n -> x_m), no gradient into the VAE.
--
-- Sampling: a CMVAE draw y (a chosen cluster, or a conditioning modality)
-- then the reverse chain of p_theta(x_{t-1} | x_t, y), DDIM or ancestral.
--
--   local DC = require("tide.models.dcmvae")
--   local m = DC{channels = 3, recon = function(x) return images end,   -- [B,C,H,W] in [0,1]
--                unet = {base = 32, mults = {1, 2}}, T = 1000, schedule = "linear"}
--   local loss = m:loss(x)                      -- x [B,C,H,W] in [0,1]
--   local sharp = m:refine(y, {steps = 50})     -- y [N,C,H,W] in [0,1] -> [0,1]
--
-- recon may take the batch table of a loader too: recon(batch) -> images;
-- loss(x, {y = ...}) skips it when the conditioning is already at hand.
-- DC.cmvae_recon(cmvae, m, src) and DC.cmvae_cluster_sampler(cmvae, m) build
-- recon / the conditioning draws from a tide.models.cmvae model (modality m,
-- from modality src: m itself for self-reconstruction, another for cross-modal).
local tide = require("tide")
local nn = tide.nn
local UNet = require("tide.models.unet")
local DDPM = require("tide.models.ddpm")

local DC = DDPM:extend("DCMVAE")

function DC:init(o)
  o = o or {}
  local C = o.channels or 1
  local u = {}
  for k, v in pairs(o.unet or {}) do u[k] = v end
  u.in_channels, u.cond_channels = C, C
  DDPM.init(self, {net = UNet.UNet(u), T = o.T, schedule = o.schedule, beta1 = o.beta1, betaT = o.betaT})
  self.recon = o.recon
  self.channels = C
end

-- [0,1] images -> [-1,1]
local function signed(x) return x * 2 - 1 end

-- The conditioning of a batch: 2 recon(x) - 1, without gradient.
function DC:condition(x, batch)
  if not self.recon then error("DCMVAE: no recon function (give opts.recon or loss(x, {y = ...}))", 3) end
  return tide.no_grad(function() return signed(self.recon(batch or x)):detach() end)
end

-- The eps-MSE of the conditional DDPM. x [B,C,H,W] in [0,1]; opts: y (the
-- reconstruction in [0,1], else recon(opts.batch or x)), t, eps.
function DC:loss(x, opts)
  opts = opts or {}
  local cond = opts.y and signed(opts.y) or self:condition(x, opts.batch)
  return DDPM.loss(self, signed(x), {t = opts.t, eps = opts.eps, cond = cond})
end

-- Refines VAE outputs y [N,C,H,W] in [0,1] -> [N,C,H,W] in [0,1].
-- opts: sampler ("ddim" (default) | "ancestral"), steps (50), eta (0), noise (x_T).
function DC:refine(y, opts)
  opts = opts or {}
  local n = y:size(1)
  local shape = y:shape()
  table.remove(shape, 1)
  local o = {cond = signed(y), shape = shape, steps = opts.steps, eta = opts.eta, noise = opts.noise,
             progress = opts.progress}
  local x = (opts.sampler == "ancestral") and self:sample(n, o) or self:ddim(n, o)
  return (x + 1) * 0.5
end

-- Samples: y = gen(n) (e.g. a CMVAE draw of one cluster), then refine(y).
-- Returns refined, y.
function DC:generate(n, gen, opts)
  local y = gen(n)
  return self:refine(y, opts), y
end

---------------------------------------------------------------- CMVAE glue

-- The decoder means of modality m (1-based) from the posterior mean of
-- modality src: a function batch -> [B,C,H,W] for DC{recon = ...}. The batch
-- is a loader batch ({x = {x_1, ..., x_M}}) or the stacked [M,B,C,H,W].
function DC.cmvae_recon(cmvae, m, src)
  return function(batch)
    local xs = batch.x or batch
    local out = cmvae:cross_generate(xs, src or m)        -- [M,B,C,H,W]
    return out:select(1, m):contiguous()
  end
end

-- A sampler n -> [n,C,H,W] of modality m from CMVAE clusters: clusters is
-- a cluster id (0-based) or a table of them (n split evenly, in order).
function DC.cmvae_cluster_sampler(cmvae, m, clusters)
  local list = type(clusters) == "number" and {clusters} or clusters
  if type(list) ~= "table" or #list == 0 then error("cmvae_cluster_sampler: give a cluster id or a list of them", 2) end
  return function(n)
    local out = cmvae:sample_clusters(math.ceil(n / #list), list)
    return out:select(1, m):narrow(1, 1, n):contiguous()
  end
end

return DC
