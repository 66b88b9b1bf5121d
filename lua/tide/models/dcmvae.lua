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
--   DC{..., cond_drop = 0.1}; m:refine(y, {guidance = 2})   -- classifier-free guidance toward y
--   local u = DC{channels = 3, conditional = false, base = 16}   -- the unconditional DDPM
--   local x = u:sample_images(64, {steps = 50})                  -- [64,3,28,28] in [0,1]
--   m:save(path); tide.load_model(path)         -- the config (UNet sizes, T, ...) is saved with it
--
-- recon may take the batch table of a loader too: recon(batch) -> images;
-- loss(x, {y = ...}) skips it when the conditioning is already at hand.
--
-- CMVAE glue (modality m, 1-based): DC.cmvae_recon(cmvae, m, src) builds
-- recon (self-, cross-modal or mixed reconstructions), DC.cmvae_samples the
-- conditioning draws of chosen clusters, DC.cmvae_cluster_of the cluster
-- CMVAE gives an image of one modality, DC.content_keep how often the
-- refinement keeps the label and cluster of its source, DC.load_cmvae /
-- DC.load_ddpm the checkpoints, checked.
local tide = require("tide")
local UNet = require("tide.models.unet")
local DDPM = require("tide.models.ddpm")

local DC = DDPM:extend("DCMVAE")

-- opts: channels (1), conditional (true: the UNet takes `channels` more
-- input channels for y), recon, T, schedule, beta1, betaT, cond_drop (0: the
-- probability of training a sample with y zeroed, for guidance), and the UNet's
-- sizes as unet = {base =, mults =, groups =, temb =} or flat (base, mults,
-- groups, temb: the form of the saved config).
function DC:init(o)
  o = o or {}
  local C = o.channels or 1
  local cond = o.conditional ~= false
  local u = {base = o.base, mults = o.mults, groups = o.groups, temb = o.temb}
  for k, v in pairs(o.unet or {}) do u[k] = v end
  u.base, u.mults, u.groups = u.base or 32, u.mults or {1, 2}, u.groups or 8
  u.in_channels, u.cond_channels = C, cond and C or 0
  DDPM.init(self, {net = UNet.UNet(u), T = o.T, schedule = o.schedule, beta1 = o.beta1, betaT = o.betaT,
                   cond_drop = cond and o.cond_drop or 0})
  self.recon = o.recon
  self.channels, self.conditional = C, cond
  -- what tide.load_model needs to rebuild it
  self.config = {class = "tide.models.dcmvae", channels = C, conditional = cond, T = self.T,
                 schedule = self.schedule, beta1 = o.beta1, betaT = o.betaT, cond_drop = self.cond_drop,
                 base = u.base, mults = u.mults, groups = u.groups, temb = u.temb}
end

-- [0,1] images -> [-1,1]
local function signed(x) return x * 2 - 1 end

-- The conditioning of a batch: 2 recon(x) - 1, without gradient.
function DC:condition(x, batch)
  if not self.recon then error("DCMVAE: no recon function (give opts.recon or loss(x, {y = ...}))", 3) end
  return tide.no_grad(function() return signed(self.recon(batch or x)):detach() end)
end

-- The eps-MSE of the (conditional) DDPM. x [B,C,H,W] in [0,1]; opts: y (the
-- reconstruction in [0,1], else recon(opts.batch or x)), t, eps.
function DC:loss(x, opts)
  opts = opts or {}
  local cond
  if self.conditional then cond = opts.y and signed(opts.y) or self:condition(x, opts.batch) end
  return DDPM.loss(self, signed(x), {t = opts.t, eps = opts.eps, cond = cond})
end

-- DDPM's DDIM sub-sequence, cut at the start step of a truncated chain
-- (refine with opts.from).
function DC:ddim_steps(steps)
  local seq = DDPM.ddim_steps(self, steps)
  if not self.truncate_at then return seq end
  local out = {}
  for _, t in ipairs(seq) do if t <= self.truncate_at then out[#out + 1] = t end end
  return out
end

-- The start step of a chain truncated at the fraction `from` of T: for DDIM
-- the first step of the sub-sequence at or below from * (T - 1).
local function start_step(self, from, opts)
  local t = math.floor(from * (self.T - 1) + 0.5)
  if opts.sampler == "ancestral" then return t end
  for _, s in ipairs(DDPM.ddim_steps(self, opts.steps or 50)) do if s <= t then return s end end
  return 0
end

-- One chain of b samples; with opts.from < 1 it starts at x_t0 = q(x_t0 | x_0 = y)
-- (the conditioning itself, noised: a truncated chain, as SDEdit / DiffuseVAE's
-- second formulation) instead of pure noise.
local function one_chain(self, b, o, from, opts)
  if not from or from >= 1 then
    return (opts.sampler == "ancestral") and self:sample(b, o) or self:ddim(b, o)
  end
  local t0 = start_step(self, from, opts)
  o.noise = self:q_sample(o.cond, tide.full({b}, t0), o.noise or tide.randn_like(o.cond))
  if opts.sampler == "ancestral" then
    o.from = t0
    return self:sample(b, o)
  end
  self.truncate_at = t0
  local ok, x = pcall(self.ddim, self, b, o)
  self.truncate_at = nil
  if not ok then error(x, 0) end
  return x
end

-- n samples in batches of opts.batch (100), cond01 [n,C,H,W] in [0,1] or
-- nil -> [n,C,H,W] in [0,1]
local function run_chain(self, n, cond01, opts)
  local bs = opts.batch or 100
  local shape = opts.shape or {self.channels, 28, 28}
  local outs = {}
  for s = 1, n, bs do
    local b = math.min(bs, n - s + 1)
    local o = {shape = shape, steps = opts.steps, eta = opts.eta, progress = opts.progress, guidance = opts.guidance,
               cond = cond01 and signed(cond01:narrow(1, s, b)) or nil,
               noise = opts.noise and opts.noise:narrow(1, s, b) or nil}
    local x = one_chain(self, b, o, cond01 and opts.from, opts)
    outs[#outs + 1] = (x + 1) * 0.5
  end
  return #outs == 1 and outs[1] or tide.cat(outs, 1)
end

-- Refines VAE outputs y [N,C,H,W] in [0,1] -> [N,C,H,W] in [0,1].
-- opts: sampler ("ddim" (default) | "ancestral"), steps (50: DDIM steps over
-- the whole chain), eta (0), noise (x_T [N,C,H,W], or the noise of x_t0),
-- batch (100 images per chain), from (1: the full chain from pure noise;
-- f < 1: from y noised to step f (T - 1), the rest of the chain only),
-- guidance (0: w of classifier-free guidance, for a model trained with cond_drop).
function DC:refine(y, opts)
  if not self.conditional then error("DCMVAE:refine: this is an unconditional DDPM (conditional = false)", 2) end
  opts = opts or {}
  local shape = y:shape()
  table.remove(shape, 1)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.shape = shape
  return run_chain(self, y:size(1), y, o)
end

-- Unconditional samples [n,C,H,W] in [0,1]; opts as refine, plus shape ({C,28,28}).
function DC:sample_images(n, opts)
  if self.conditional then error("DCMVAE:sample_images: a conditional model samples with refine(y)", 2) end
  return run_chain(self, n, nil, opts or {})
end

-- Samples: y = gen(n) (e.g. a CMVAE draw of one cluster), then refine(y).
-- Returns refined, y.
function DC:generate(n, gen, opts)
  local y = gen(n)
  return self:refine(y, opts), y
end

---------------------------------------------------------------- checkpoints

local function check_class(path, want, what)
  local cfg = require("tide.serialize").read_config(path)
  if cfg.class ~= want then
    error(("%s is not a %s checkpoint (%s)"):format(path, what, cfg.class and ("its config.class is " .. cfg.class)
          or "it has no config.class: saved from a model without a config"), 3)
  end
  return cfg
end

-- A tide.models.cmvae checkpoint (examples/cmvae.lua, examples/main.lua):
-- the model with its chosen clusters, in eval mode.
function DC.load_cmvae(path)
  check_class(path, "tide.models.cmvae", "CMVAE")
  return tide.load_model(path)
end

-- A DDPM / D-CMVAE checkpoint of this module (examples/ddpm.lua,
-- examples/dcmvae.lua). opts: conditional (true | false, checked when
-- given), channels (checked when given).
function DC.load_ddpm(path, opts)
  opts = opts or {}
  local cfg = check_class(path, "tide.models.dcmvae", "DDPM / D-CMVAE")
  if opts.conditional ~= nil and cfg.conditional ~= opts.conditional then
    error(("%s is a%s DDPM, expected a%s one"):format(path, cfg.conditional and " conditional" or "n unconditional",
          opts.conditional and " conditional" or "n unconditional"), 2)
  end
  if opts.channels and cfg.channels ~= opts.channels then
    error(("%s is a DDPM of %d-channel images, expected %d"):format(path, cfg.channels, opts.channels), 2)
  end
  return tide.load_model(path)
end

---------------------------------------------------------------- CMVAE glue

local function image_shape(cmvae, n)
  local s = {n}
  for _, v in ipairs(cmvae.shape) do s[#s + 1] = v end
  return s
end

-- recon for DC{recon = ...}: the decoder mean of modality m (1-based),
-- clamped to [0,1], from z = the posterior mean of a source modality:
--   src = m         self-reconstruction, w_m = the posterior mean of q(w_m|x_m)
--   src = n ~= m    cross-modal, w_m ~ r_m (the auxiliary prior of MMVAE+)
--   src = "mix"     per sample, a source drawn uniformly from the M modalities
-- The batch is a loader batch ({x = {x_1, ..., x_M}}), the list, or the
-- stacked [M,B,C,H,W]. Without gradient. opts.sample: z ~ q(z|x_src) and
-- w_m ~ q(w_m|x_m) instead of the means (closer to what decoding a prior
-- draw z ~ p(z|c) gives at sampling time).
function DC.cmvae_recon(cmvae, m, src, opts)
  src = src or m
  local draw = opts and opts.sample
  if src ~= "mix" and (type(src) ~= "number" or src < 1 or src > cmvae.M) then
    error(("cmvae_recon: src must be a modality 1..%d or 'mix', got %s"):format(cmvae.M, tostring(src)), 2)
  end
  local MMVAEPlus = require("tide.models.mmvae_plus")
  return function(batch)
    local xs = batch.x or batch
    return tide.no_grad(function()
      local mz, sz, mw, sw = cmvae:encode(xs)                   -- [M,B,zdim], [M,B,wdim]
      local M, B = mz:size(1), mz:size(2)
      if draw then
        mz = mz + sz * MMVAEPlus.std_noise(cmvae.posterior, mz:shape())
        mw = mw + sw * MMVAEPlus.std_noise(cmvae.posterior, mw:shape())
      end
      local ids = src == "mix" and tide.ones(M):categorical(B) or tide.full({B}, src - 1)
      local onehot = ids:reshape(1, B, 1):eq(tide.arange(0, M):reshape(M, 1, 1))   -- [M,B,1]
      local z = (mz * onehot):sum(1)                            -- [B,zdim]
      local own = onehot:select(1, m)                           -- [B,1]: 1 = self-reconstruction
      local r = MMVAEPlus.std_noise(cmvae.posterior, {B, cmvae.wdim}) * cmvae:r_scale():select(1, m)
      local w = mw:select(1, m) * own + r * (1 - own)           -- [B,wdim]
      local zw = tide.cat({z, w}, 2):reshape(1, B, cmvae.zdim + cmvae.wdim):expand(M, B, cmvae.zdim + cmvae.wdim)
      return cmvae.dec(zw:contiguous()):select(1, m):reshape(image_shape(cmvae, B)):clamp(0, 1)
    end)
  end
end

-- `per` samples of modality m from each cluster of `clusters` (0-based ids;
-- default: CMVAE's chosen clusters by decreasing p(c)), z ~ p(z|c), w ~ p(w):
-- images [K*per,C,H,W] in [0,1] (cluster after cluster), their cluster ids
-- [K*per] (0-based), the list of clusters.
function DC.cmvae_samples(cmvae, m, per, clusters)
  local out, list = cmvae:sample_clusters(per, clusters)
  local ids = {}
  for _, c in ipairs(list) do for _ = 1, per do ids[#ids + 1] = c end end
  return out:select(1, m):contiguous():clamp(0, 1), tide.tensor(ids), list
end

-- A sampler n -> [n,C,H,W] of modality m from CMVAE clusters: clusters is
-- a cluster id (0-based) or a table of them (n split evenly, in order).
function DC.cmvae_cluster_sampler(cmvae, m, clusters)
  local list = type(clusters) == "number" and {clusters} or clusters
  if type(list) ~= "table" or #list == 0 then error("cmvae_cluster_sampler: give a cluster id or a list of them", 2) end
  return function(n)
    local out = cmvae:sample_clusters(math.ceil(n / #list), list)
    return out:select(1, m):narrow(1, 1, n):contiguous():clamp(0, 1)
  end
end

-- The cluster CMVAE gives images x [N,C,H,W] of modality m alone:
-- argmax_c q(c|z) at z = the mean of q(z|x_m) (x in slot m of the encoder's
-- input, zeros in the others, which modality m's encoder does not read).
-- -> [N] (0-based). opts: batch (500).
function DC.cmvae_cluster_of(cmvae, m, x, opts)
  local bs = (opts and opts.batch) or 500
  local n, out = x:size(1), {}
  local was = cmvae.training
  cmvae:eval()
  tide.no_grad(function()
    for s = 1, n, bs do
      local b = math.min(bs, n - s + 1)
      local shape = x:narrow(1, s, b):shape()
      table.insert(shape, 1, cmvae.M)
      local xs = tide.zeros(shape)
      table.remove(shape, 1)
      table.insert(shape, 1, 1)
      xs:narrow(1, m, 1):copy_(x:narrow(1, s, b):reshape(shape))
      local mz = cmvae:encode(xs)
      out[#out + 1] = cmvae:log_joint(mz:select(1, m):contiguous()):argmax(2)
    end
  end)
  cmvae:train(was)
  return #out == 1 and out[1] or tide.cat(out, 1)
end

-- The rate at which two label tensors [N] agree.
function DC.agreement(a, b)
  if a.numel ~= b.numel then
    error(("agreement: %d labels against %d"):format(a.numel, b.numel), 2)
  end
  return a:reshape(-1):eq(b:reshape(-1)):mean():item()
end

-- How much of its source a refinement keeps. o: source (CMVAE samples
-- [N,C,H,W] of modality m), refined (their refinements), clusters ([N] the
-- cluster each source was drawn from), cmvae, m, clf (optional, a
-- tide.classifier of modality m), confident (0.9). -> {label_keep (clf's
-- label of refined = that of source; nil without clf), label_keep_confident
-- and confident_frac (the same rate over the sources the classifier gives
-- probability >= confident, and their share: a blurred blend of two digits
-- has no label to keep), cluster_keep_cmvae (cluster of source = its
-- cluster), cluster_keep_dcmvae (cluster of refined = its source's
-- cluster), labels_source, labels_refined, clusters_source, clusters_refined}.
function DC.content_keep(o)
  local r = {}
  if o.clf then
    local C = require("tide.classifier")
    local p = C.probs(o.clf, o.source)
    r.labels_source, r.labels_refined = p:argmax(2), C.predict(o.clf, o.refined)
    r.label_keep = DC.agreement(r.labels_refined, r.labels_source)
    local sure = p:max(2):ge(o.confident or 0.9)
    local n_sure = sure:sum():item()
    r.confident_frac = n_sure / sure.numel
    r.label_keep_confident = n_sure > 0 and (r.labels_refined:eq(r.labels_source) * sure):sum():item() / n_sure or nil
  end
  r.clusters_source = DC.cmvae_cluster_of(o.cmvae, o.m, o.source)
  r.clusters_refined = DC.cmvae_cluster_of(o.cmvae, o.m, o.refined)
  r.cluster_keep_cmvae = DC.agreement(r.clusters_source, o.clusters)
  r.cluster_keep_dcmvae = DC.agreement(r.clusters_refined, o.clusters)
  return r
end

return DC
