-- tide.cluster.posthoc - the post-hoc choice of the number of clusters of CMVAE
-- (Palumbo et al., ICLR 2024): train with too many clusters, then prune.
--
--   local posthoc = tide.cluster.posthoc   -- or require("tide.cluster.posthoc")
--   local r = posthoc.select{z = z,            -- [M,N,D]: one draw z_m ~ q(z|x_m) per modality and point
--                            logits = l, locs = mu, scales = s, family = 1,  -- the prior (td_gmm_log_joint's)
--                            beta = 2.5, active = mask}                   -- mask [K] optional
--   r.k, r.active (mask [K]), r.assign ([N], 0-based), r.curve = {ks, values, entropy, elbo}
--   posthoc.plot("k.png", r)
--
-- With A the active clusters (p(c) renormalized over A), for every point n
-- and modality m:
--   p(c|z_nm)                      over c in A (Bayes' rule on the prior)
--   h_nm = H(p(c|z_nm)) / log |A|  normalized entropy
--   e_nm = sum_c p(c|z) [log p(z|c) + log pi_c - log p(c|z)] / D   normalized ELBO term
--   criterion(A) = beta mean(h) - mean(e)                          penalized normalized entropy
-- Each point goes to the mode over modalities of argmax_c p(c|z_nm); a
-- cluster's mass is the sum of its points' confidence (the mean over
-- modalities of p(assigned cluster | z_nm)). The active cluster of least mass
-- is pruned, everything recomputed, down to two clusters; the chosen set is
-- the one of least criterion (never the one-cluster state).
local tide = require("tide")

local H = {}

local BIG = 1e30

-- The mode over modalities of argmax_c p [M,N,K] -> [N] (0-based), ties
-- going to the cluster of larger mean probability; also that mean [N,K].
function H.vote(p)
  local K = p:size(3)
  local counts = tide.one_hot(p:argmax(3), K):sum(1)   -- [N,K]
  local pbar = p:mean(1)                               -- [N,K]
  return (counts + pbar * 1e-3):argmax(2), pbar
end

-- One evaluation of the active set mask [K]: J [M*N,K] with logits pruned.
local function evaluate(o, mask, M, N, D)
  local K = mask.numel
  local ka = mask:sum():item()
  local logits = o.logits + (mask - 1) * BIG
  local J = tide.gmm_log_joint(o.z:reshape(M * N, D), logits, o.locs, o.scales, o.family) -- [M*N,K]
  local logp = J:log_softmax(2)
  local p = logp:exp()
  local ent = -(p * logp):sum(2) * (1 / math.log(ka))     -- [M*N]
  local elbo = J:logsumexp(2) * (1 / D)                   -- = sum_c p (J - log p) / D
  local h, e = ent:mean():item(), elbo:mean():item()
  local assign, pbar = H.vote(p:reshape(M, N, K))
  local conf = pbar:gather(2, assign:reshape(N, 1))       -- [N,1]
  local mass = (tide.one_hot(assign, K) * conf):sum(1)    -- [K]
  return {k = ka, criterion = o.beta * h - e, entropy = h, elbo = e, assign = assign, mass = mass,
          active = mask:clone()}
end

-- select{z, logits, locs, scales, family, beta, active}: see the top.
function H.select(o)
  assert(type(o) == "table", "posthoc.select{z =, logits =, locs =, scales =, family =, beta =}")
  return tide.no_grad(function()
    local z = o.z
    if not tide.is_tensor(z) then z = tide.stack(z, 1) end
    if z.ndim == 2 then z = z:reshape(1, z:size(1), z:size(2)) end
    local M, N, D = z:size(1), z:size(2), z:size(3)
    local K = o.logits.numel
    local opts = {z = z, logits = o.logits:detach(), locs = o.locs:detach(), scales = o.scales:detach(),
                  family = o.family or 1, beta = o.beta or 1}
    local mask = o.active and o.active:clone() or tide.ones(K)
    local pi = o.logits:detach():softmax(1)
    local steps = {}
    while mask:sum():item() >= 2 do
      local r = evaluate(opts, mask, M, N, D)
      steps[#steps + 1] = r
      if r.k <= 2 then break end
      -- prune the active cluster of least mass (ties: the smaller p(c))
      local score = r.mass + pi * 1e-6 + (1 - mask) * BIG
      local c = (-score):argmax():item()
      mask[c + 1] = 0
    end
    assert(#steps > 0, "posthoc.select: needs at least two active clusters")
    local best = steps[1]
    for _, r in ipairs(steps) do if r.criterion < best.criterion then best = r end end
    local curve = {ks = {}, values = {}, entropy = {}, elbo = {}}
    for i = #steps, 1, -1 do -- by increasing K
      local r = steps[i]
      local j = #curve.ks + 1
      curve.ks[j], curve.values[j], curve.entropy[j], curve.elbo[j] = r.k, r.criterion, r.entropy, r.elbo
    end
    return {k = best.k, active = best.active, assign = best.assign, criterion = best.criterion, curve = curve,
            steps = steps}
  end)
end

-- The criterion against K as a PNG (tide.viz.k_curve), the chosen K marked.
function H.plot(path, r, opts)
  opts = opts or {}
  return tide.viz.k_curve(path, r.curve.ks, r.curve.values, {best = r.k, criterion = "penalized entropy",
                          title = opts.title or "post-hoc choice of K", backend = opts.backend})
end

return H
