-- tide.models.cmvae - the Clustering Multimodal VAE (Palumbo, Manduchi,
-- Laguna, Chopard & Vogt, ICLR 2024): MMVAE+ with a mixture prior on the
-- shared latent,
--
--   p(c) = softmax(logits)_c,  p(z|c) = Laplace(mu_c, s_c) or Normal(mu_c, s_c^2)
--   q(c|z,X) = p(c) p(z|c) / sum_c' p(c') p(z|c')                  (Bayes' rule)
--
-- and the bound of MMVAE+ (tide.models.mmvae_plus) with the expectation over
-- c taken exactly,
--
--   lw_m = log p(x_m|z,w_m) + sum_{n~=m} log p(x_n|z,w~_n)
--        + beta E_q(c|z,X)[log p(c) p(z|c) p(w_m) / (q(z|X) q(w_m|x_m) q(c|z,X))]
--
-- Since q(c|z,X) is the prior's posterior, E_q(c)[log p(c)p(z|c) - log q(c|z,X)]
-- = log sum_c p(c) p(z|c) = log p(z): the fused kernels td_gmm_log_joint
-- (J [N,K] = log p(c) + log p(z|c)) and td_gmm_elbo_joint (its log-sum-exp,
-- whose gradient is q(c|z,X) dJ) compute it in one pass each way.
--
--   local CMVAE = require("tide.models.cmvae")
--   local model = CMVAE{modalities = 5, clusters = 40, zdim = 32, wdim = 32, beta = 2.5,
--                       prior = "laplace" | "normal", learn_scales = false, arch = "light"}
--   local loss, stats = model:backward(batch.x)
--   local res = model:choose_k(val_ds)     -- post-hoc K (tide.cluster.posthoc), prunes the prior
--   local pred = model:predict(test_ds)    -- cluster ids [N] (0-based)
--   model:save("cmvae.safetensors"); tide.load_model("cmvae.safetensors")  -- config and chosen K included
local tide = require("tide")
local nn = tide.nn
local MMVAEPlus = require("tide.models.mmvae_plus")
local posthoc = require("tide.cluster.posthoc")

local CMVAE = MMVAEPlus:extend("CMVAE")

local PRUNED = -1e30 -- logit offset of a pruned cluster (finite: no 0 * inf)

function CMVAE:init(o)
  o = o or {}
  MMVAEPlus.init(self, o)
  local K, D = o.clusters or 40, self.zdim
  self.nclusters = K
  self.prior = o.prior or self.posterior
  if self.prior ~= "laplace" and self.prior ~= "normal" then
    error("CMVAE: prior must be 'laplace' or 'normal', got " .. tostring(self.prior), 2)
  end
  self.family = self.prior == "laplace" and 1 or 0
  self:register_parameter("cluster_logits", {K}, nn.init.zeros_)
  self:register_parameter("cluster_locs", {K, D}, function(t) nn.init.uniform_(t, -1, 1) end)
  -- log-scales (Laplace) or log-variances (Normal), the kernel's convention; 0: scale 1
  if o.learn_scales then
    self:register_parameter("cluster_scales", {K, D}, nn.init.zeros_)
  else
    self.fixed_scales = tide.zeros(K, D)
  end
  self.active = tide.ones(K) -- 1 = kept by the post-hoc choice of K
  if self.config then
    self.config.class, self.config.clusters, self.config.prior = "tide.models.cmvae", K, self.prior
    self.config.learn_scales = o.learn_scales or false
  end
  if o.active then self:set_active(tide.from_table(o.active)) end
end

-- {logits [K] (pruned clusters at -1e30), locs [K,D], scales [K,D], family}
function CMVAE:prior_params()
  local logits = self.cluster_logits
  if self.pruned then logits = logits + (self.active - 1) * (-PRUNED) end
  return {logits = logits, locs = self.cluster_locs, scales = self.cluster_scales or self.fixed_scales,
          family = self.family}
end

-- J = log p(c) + log p(z|c): z [N,D] -> [N,K]
function CMVAE:log_joint(z)
  local p = self:prior_params()
  return tide.gmm_log_joint(z, p.logits, p.locs, p.scales, p.family)
end

-- log p(z) = E_q(c|z)[log p(c) p(z|c) - log q(c|z)]: [..., D] -> [...]
function CMVAE:log_prior_z(z)
  local s = z:shape()
  local D = table.remove(s)
  local lp = tide.gmm_elbo_joint(self:log_joint(z:reshape(-1, D)), nil)
  return lp:reshape(s)
end

-- q(c|z) [N,K] for z [N,D], no gradient.
function CMVAE:cluster_probs(z)
  return tide.no_grad(function() return self:log_joint(z):softmax(2) end)
end

-- Places the mixture on the data (as VaDE initializes its GMM): k-means
-- with K centers on the posterior means z_m of a data set (every modality's
-- points pooled), cluster_locs = the centers, p(c) uniform. opts: seed,
-- n_init (1), max_points (4000: a random subset of the M*N means).
function CMVAE:init_clusters(ds, o)
  o = o or {}
  local e = self:embed(ds, o)
  tide.no_grad(function()
    local z = e.mu_z:reshape(-1, self.zdim)
    local maxn = o.max_points or 4000
    if z:size(1) > maxn then z = z:index_select(1, tide.randperm(z:size(1)):narrow(1, 1, maxn)) end
    local km = tide.cluster.kmeans(z, self.nclusters, {n_init = o.n_init or 1, seed = o.seed or 1})
    self.cluster_locs:copy_(km.centers)
    self.cluster_logits:fill(0)
  end)
end

-- Keeps only the clusters where mask [K] is 1 (the others get p(c) = 0).
function CMVAE:set_active(mask)
  self.active = mask:clone()
  self.pruned = mask:sum():item() < self.nclusters
  if self.config then self.config.active = mask:to_table() end
end

-- Cluster ids [N] (0-based) of a data set: per modality argmax_c q(c|z_m)
-- at the posterior mean (or a draw, {sample = true}), then the mode over
-- modalities (ties to the larger mean probability).
function CMVAE:predict(ds, o)
  o = o or {}
  local e = self:embed(ds, o)
  return tide.no_grad(function()
    local z = o.sample and self:sample_z(e) or e.mu_z
    local M, N = z:size(1), z:size(2)
    local J = self:log_joint(z:reshape(M * N, self.zdim)):reshape(M, N, self.nclusters)
    return (posthoc.vote(J:softmax(3)))
  end)
end

-- The post-hoc choice of K on a data set (the validation split): one draw
-- z_m ~ q(z|x_m) per point and modality, then tide.cluster.posthoc.select with
-- this prior; keeps the chosen clusters (set_active) unless {apply = false}.
-- Returns the result of select (k, active, curve, ...).
function CMVAE:choose_k(ds, o)
  o = o or {}
  local e = self:embed(ds, o)
  local res = tide.no_grad(function()
    local z = self:sample_z(e)
    local p = self:prior_params()
    return posthoc.select{z = z, logits = p.logits, locs = p.locs, scales = p.scales, family = p.family,
                          beta = o.beta or self.beta, active = self.active}
  end)
  if o.apply ~= false then self:set_active(res.active) end
  return res
end

-- Samples per cluster: for each cluster c of `clusters` (0-based ids; default
-- the active ones), n draws z ~ p(z|c) decoded with w ~ p(w) -> [M, #clusters * n, C,H,W]
-- (row-major: cluster after cluster) and the list of clusters.
function CMVAE:sample_clusters(n, clusters)
  local p = self:prior_params()
  if not clusters then
    clusters = {}
    local pi = p.logits:softmax(1)
    -- by decreasing p(c)
    local order = {}
    for c = 1, self.nclusters do
      if self.active:at(c) > 0 then order[#order + 1] = {c - 1, pi:at(c)} end
    end
    table.sort(order, function(a, b) return a[2] > b[2] end)
    for i, v in ipairs(order) do clusters[i] = v[1] end
  end
  local idx = {}
  for _, c in ipairs(clusters) do for _ = 1, n do idx[#idx + 1] = c end end
  local z = tide.no_grad(function()
    local ids = tide.from_table(idx)
    local loc = p.locs:index_select(1, ids)
    local sc = p.scales:index_select(1, ids)
    local std = self.family == 1 and sc:exp() or (sc * 0.5):exp()
    return loc + std * MMVAEPlus.std_noise(self.prior, loc:shape())
  end)
  return self:decode_all(z, {prior_w = true}), clusters
end

return CMVAE
