-- tide.cluster - clustering on any matrix [N,D] (pixels, latent means, ...),
-- with the engine's kernels doing the work:
--
--   local cluster = tide.cluster
--   local km = cluster.kmeans(z, 10, {n_init = 10, seed = 1})   -- kmeans.lua
--   local g  = cluster.gmm(z, 10, {reg_covar = 1e-6})            -- gmm.lua (diagonal EM)
--   km.labels, km.centers, km.inertia, km:predict(z2)
--   g.labels, g.means, g.logvars, g.logits, g.loglik, g:predict(z2), g:predict_proba(z2)
--
-- Other files of this folder (e.g. a post-hoc choice of K) load on first
-- use as cluster.<name>.
local KM = require("tide.cluster.kmeans")
local GM = require("tide.cluster.gmm")

local cluster = {
  kmeans = KM.kmeans,
  KMeans = KM.KMeans,
  gmm = GM.gmm,
  GMM = GM.GMM,
}

return setmetatable(cluster, {
  __index = function(t, k)
    if type(k) ~= "string" or not package.searchpath("tide.cluster." .. k, package.path) then return nil end
    local m = require("tide.cluster." .. k)
    rawset(t, k, m)
    return m
  end,
})
