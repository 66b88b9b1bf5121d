-- tide.cluster.gmm - EM for a mixture of Gaussians with diagonal covariances
-- on any matrix x [N,D], on the engine's kernels td_gmm_estep (log
-- responsibilities and the log-likelihood) and td_gmm_mstep.
--
--   local g = cluster.gmm(z, 10, {n_init = 1, max_iter = 100, tol = 1e-3, reg_covar = 1e-6, seed = 1})
--   g.logits [K] log weights    g.weights [K]    g.means [K,D]    g.logvars [K,D] (log variances)
--   g.labels [N]    g.loglik (mean log-likelihood per point)    g.converged    g.n_iter
--   g:predict(x2), g:predict_proba(x2) [N2,K], g:score(x2) (mean log p), g:score_samples(x2) [N2]
--
-- EM as scikit-learn's GaussianMixture(covariance_type = "diag"):
--   E step: r_nc = pi_c N(x_n; mu_c, diag s2_c) / sum_c' (...)
--   M step: N_c = sum_n r_nc, pi_c = N_c / N, mu_c = sum_n r_nc x_n / N_c,
--           s2_c = sum_n r_nc (x_n - mu_c)^2 / N_c + reg_covar
-- stopping when the mean log-likelihood changes by less than tol; a last E
-- step gives the labels. Initialization: the M step on the one-hot labels of
-- a k-means run (init = "kmeans", the default; opts.kmeans are its options,
-- n_init = 1 unless given), the M step on given labels (init = {labels =
-- [N]}) or given parameters (init = {logits =, means =, logvars =}, or
-- weights = instead of logits). With n_init > 1, the run of the highest
-- final log-likelihood is kept.
local ffi = require("ffi")
local tide = require("tide")
local B = require("tide_ffi")
local raise = B.raise
local KM = require("tide.cluster.kmeans")

local M = {}

local GMM = {}
GMM.__index = GMM
M.GMM = GMM

local OPTIONS = {n_init = true, max_iter = true, tol = true, reg_covar = true, seed = true, init = true,
                 kmeans = true, verbose = true}

local function whole(v, name, fname, lo)
  if type(v) ~= "number" or v ~= math.floor(v) or v < lo then
    raise(("%s: %s must be a whole number >= %d, got %s"):format(fname, name, lo, tostring(v)))
  end
  return v
end

-- Parameters from responsibilities r [N,K] (one M step).
local function from_resp(x, r, reg)
  local k, d = r:size(2), x:size(2)
  local p = {logits = tide.zeros(k), means = tide.zeros(k, d), logvars = tide.zeros(k, d)}
  tide.gmm_mstep(x, r, reg, p.logits, p.means, p.logvars)
  return p
end

local function check_param(t, name, shape, fname)
  if not tide.is_tensor(t) then raise(("%s: init.%s must be a tensor"):format(fname, name)) end
  local s = t:shape()
  local ok = #s == #shape
  for i = 1, #shape do ok = ok and s[i] == shape[i] end
  if not ok then
    raise(("%s: init.%s %s must be [%s]"):format(fname, name, B.shape_str(t), table.concat(shape, ",")))
  end
  return t:detach():clone()
end

local function initial_params(x, k, opts, reg, fname)
  local init = opts.init or "kmeans"
  local n, d = x:size(1), x:size(2)
  if init == "kmeans" then
    local ko = {n_init = 1}
    for key, v in pairs(opts.kmeans or {}) do ko[key] = v end
    local km = KM.kmeans(x, k, ko)
    return from_resp(x, tide.one_hot(km.labels, k), reg)
  end
  if type(init) ~= "table" then
    raise(fname .. ": init must be 'kmeans' or a table {labels =} or {logits | weights, means, logvars}")
  end
  if init.labels then
    local lab = init.labels
    if not tide.is_tensor(lab) then lab = tide.from_table(lab) end
    if lab.ndim ~= 1 or lab:size(1) ~= n then
      raise(("%s: init.labels %s must be [N] = [%d]"):format(fname, B.shape_str(lab), n))
    end
    return from_resp(x, tide.one_hot(lab, k), reg)
  end
  local p = {means = check_param(init.means, "means", {k, d}, fname),
             logvars = check_param(init.logvars, "logvars", {k, d}, fname)}
  if init.logits then
    p.logits = check_param(init.logits, "logits", {k}, fname)
  elseif init.weights then
    p.logits = check_param(init.weights, "weights", {k}, fname):log()
  else
    raise(fname .. ": init needs logits or weights")
  end
  return p
end

-- EM from p (changed in place) -> mean log-likelihood, converged, iterations.
local function em(x, p, max_iter, tol, reg)
  local ll = ffi.new("double[1]")
  local n = x:size(1)
  local lb, it = -math.huge, 0
  for i = 1, max_iter do
    it = i
    local prev = lb
    local logr = tide.gmm_estep(x, p.logits, p.means, p.logvars, ll)
    tide.gmm_mstep(x, logr:exp(), reg, p.logits, p.means, p.logvars)
    lb = tonumber(ll[0]) / n
    if math.abs(lb - prev) < tol then return lb, true, it end
  end
  return lb, false, it
end

-- GMM-EM of x [N,D] with k components. opts: n_init (1), max_iter (100),
-- tol (1e-3), reg_covar (1e-6), seed (tide.manual_seed first), init, kmeans,
-- verbose.
function M.gmm(x, k, opts)
  local fname = "cluster.gmm"
  opts = opts or {}
  for key in pairs(opts) do
    if not OPTIONS[key] then raise(("%s: unknown option '%s'"):format(fname, tostring(key))) end
  end
  x = KM.points(x, fname)
  whole(k, "k", fname, 1)
  if k > x:size(1) then raise(("%s: k = %d is more than the %d points of x"):format(fname, k, x:size(1))) end
  local n_init = whole(opts.n_init or 1, "n_init", fname, 1)
  local max_iter = whole(opts.max_iter or 100, "max_iter", fname, 1)
  local tol, reg = opts.tol or 1e-3, opts.reg_covar or 1e-6
  if opts.seed then tide.manual_seed(opts.seed) end
  local best
  for run = 1, n_init do
    local p = initial_params(x, k, opts, reg, fname)
    local lb, conv, it = em(x, p, max_iter, tol, reg)
    if opts.verbose then
      print(("gmm run %d: mean log-likelihood %.6g after %d iterations%s"):format(run, lb, it,
            conv and "" or " (not converged)"))
    end
    if not best or lb > best.loglik then
      p.loglik, p.converged, p.n_iter, p.k = lb, conv, it, k
      best = p
    end
  end
  local g = setmetatable(best, GMM)
  g.weights = g.logits:exp()
  g.labels = g:predict(x)
  return g
end

-- p(c|x) [N,K].
function GMM:predict_proba(x)
  x = KM.points(x, "GMM:predict_proba")
  return tide.gmm_responsibilities(x, self.logits, self.means, self.logvars)
end

-- argmax_c p(c|x) [N], 0-based.
function GMM:predict(x)
  x = KM.points(x, "GMM:predict")
  return tide.gmm_estep(x, self.logits, self.means, self.logvars, nil):argmax(2)
end

-- log p(x_n) [N].
function GMM:score_samples(x)
  x = KM.points(x, "GMM:score_samples")
  return tide.no_grad(tide.gmm_elbo, x, self.logits, self.means, self.logvars, nil)
end

-- mean_n log p(x_n).
function GMM:score(x)
  x = KM.points(x, "GMM:score")
  local ll = ffi.new("double[1]")
  tide.gmm_estep(x, self.logits, self.means, self.logvars, ll)
  return tonumber(ll[0]) / x:size(1)
end

function GMM:__tostring()
  return ("GMM(k=%d, diag, mean log-likelihood=%.6g, n_iter=%d%s)"):format(self.k, self.loglik, self.n_iter,
    self.converged and "" or ", not converged")
end

return M
