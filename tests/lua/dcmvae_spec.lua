-- tide.models.dcmvae beyond the loss (ddpm_spec.lua): checkpoints with their
-- config and the loaders' errors, batched chains, and the CMVAE glue of the
-- evaluation (reconstructions, cluster of an image, label / cluster keep
-- rates) on a CMVAE with stand-in networks whose answers are known by hand.
local tide = require("tide")
local nn = tide.nn
local DC = require("tide.models.dcmvae")
local CMVAE = require("tide.models.cmvae")

local function maxdiff(a, b) return (a - b):abs():max():item() end

local function tmpfile()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".safetensors"
end

local function tiny(o)
  tide.manual_seed(11)
  local opts = {channels = 1, T = 20, base = 4, mults = {1}, groups = 2}
  for k, v in pairs(o or {}) do opts[k] = v end
  return DC(opts)
end

-- A CMVAE on 2-d "images" (shape {2}) with zdim 2, wdim 1, 3 clusters:
--   encoder  mu_z = x_m, mu_w = x_m[1] / 2 (scales 1)
--   decoder  out = z + w (w added to both coordinates)
-- cluster locations (4,0), (-4,0), (0,4); Laplace prior with scale 1, so
-- argmax_c q(c|z) is the cluster nearest to z in L1.
local Enc = nn.Module:extend("StandInEncoder")
function Enc:forward(x)
  local ones = tide.ones(x:shape())
  local w = x:narrow(3, 1, 1) * 0.5
  return x, ones, w, tide.ones(w:shape())
end
local Dec = nn.Module:extend("StandInDecoder")
function Dec:forward(zw) return zw:narrow(3, 1, 2) + zw:narrow(3, 3, 1) end

local function standin(M)
  local cm = CMVAE{modalities = M or 2, zdim = 2, wdim = 1, shape = {2}, clusters = 3, encoder = Enc(), decoder = Dec()}
  cm.cluster_locs:detach():copy_(tide.tensor({{4, 0}, {-4, 0}, {0, 4}}))
  cm.r_rho:detach():fill(-30)               -- r_m scale ~ 1e-6: cross-modal w ~ 0
  cm:eval()
  return cm
end

describe("D-CMVAE checkpoints", function()
  it("save with their config; tide.load_model rebuilds the same network (conditional or not)", function()
    for _, cond in ipairs({true, false}) do
      local m = tiny({conditional = cond, cond_drop = 0.25})
      local path = tmpfile()
      m:save(path)
      local back = tide.load_model(path)
      os.remove(path)
      assert.equals(cond, back.conditional)
      assert.equals(cond and 0.25 or 0, back.cond_drop)
      assert.equals(cond and 2 or 1, back.net.inc.weight:size(2))
      assert.same({1}, back.config.mults)
      local x, t = tide.randn(2, 1, 4, 4), tide.tensor({3, 17})
      local c = cond and tide.randn(2, 1, 4, 4) or nil
      assert.equals(0, maxdiff(m.net(x, t, c), back.net(x, t, c)))
      assert.equals(m:num_parameters(), back:num_parameters())
    end
  end)

  it("load_ddpm checks the kind, channels and class; load_cmvae names a file that is not a CMVAE", function()
    local cpath, upath, bare = tmpfile(), tmpfile(), tmpfile()
    tiny():save(cpath)
    tiny({conditional = false}):save(upath)
    tide.save(bare, {w = tide.ones(2)})
    assert.equals(false, DC.load_ddpm(upath, {conditional = false, channels = 1}).conditional)
    assert.has_error(function() DC.load_ddpm(cpath, {conditional = false}) end,
                     cpath .. " is a conditional DDPM, expected an unconditional one")
    assert.has_error(function() DC.load_ddpm(upath, {channels = 3}) end,
                     upath .. " is a DDPM of 1-channel images, expected 3")
    local ok, err = pcall(DC.load_cmvae, cpath)
    assert.is_false(ok)
    assert.truthy(tostring(err):find(cpath .. " is not a CMVAE checkpoint (its config.class is tide.models.dcmvae)", 1,
                                     true))
    ok, err = pcall(DC.load_cmvae, bare)
    assert.is_false(ok)
    assert.truthy(tostring(err):find(bare .. " is not a CMVAE checkpoint", 1, true))
    assert.truthy(tostring(err):find("no config.class", 1, true))
    ok, err = pcall(DC.load_ddpm, bare)
    assert.truthy(tostring(err):find(bare .. " is not a DDPM / D%-CMVAE checkpoint"))
    for _, p in ipairs({cpath, upath, bare}) do os.remove(p) end
  end)

  it("load_cmvae returns a CMVAE with its chosen clusters", function()
    tide.manual_seed(3)
    local cm = CMVAE{modalities = 2, shape = {1, 4, 4}, zdim = 2, wdim = 2, hidden = 8, clusters = 3}
    cm:set_active(tide.tensor({1, 0, 1}))
    local path = tmpfile()
    cm:save(path)
    local back = DC.load_cmvae(path)
    os.remove(path)
    assert.same({1, 0, 1}, back.active:to_table())
    local x = tide.rand(5, 1, 4, 4)
    cm:eval()
    assert.same(DC.cmvae_cluster_of(cm, 2, x):to_table(), DC.cmvae_cluster_of(back, 2, x):to_table())
    for _, c in ipairs(DC.cmvae_cluster_of(back, 2, tide.rand(40, 1, 4, 4)):to_table()) do
      assert.is_true(c == 0 or c == 2)           -- never the pruned cluster 1
    end
  end)
end)

describe("D-CMVAE chains", function()
  it("refine in batches gives what one batch gives (DDIM, eta 0, same x_T)", function()
    local m = tiny()
    local y, noise = tide.rand(5, 1, 4, 4), tide.randn(5, 1, 4, 4)
    local one = m:refine(y, {steps = 3, noise = noise})
    local parts = m:refine(y, {steps = 3, noise = noise, batch = 2})
    assert.same({5, 1, 4, 4}, parts:shape())
    assert.is_true(maxdiff(one, parts) < 1e-6)
    -- the rows depend on their own conditioning: swapping y's rows swaps the outputs
    local perm = tide.tensor({4, 3, 2, 1, 0})
    local swapped = m:refine(y:index_select(1, perm), {steps = 3, noise = noise:index_select(1, perm), batch = 2})
    assert.is_true(maxdiff(swapped, one:index_select(1, perm)) < 1e-6)
  end)

  it("a truncated chain (from < 1) starts at the noised conditioning and runs the rest", function()
    local m = tiny()
    local y, noise = tide.rand(3, 1, 4, 4), tide.randn(3, 1, 4, 4)
    local full = m:refine(y, {steps = 4, noise = noise})
    assert.equals(0, maxdiff(full, m:refine(y, {steps = 4, noise = noise, from = 1})))
    -- from 0: x_0 = sqrt(abar_0) y + sqrt(beta_0) eps, then one step: y up to ~sqrt(beta_0) |eps_theta|
    for _, sampler in ipairs({"ddim", "ancestral"}) do
      local near = m:refine(y, {steps = 4, noise = noise, from = 0, sampler = sampler})
      assert.is_true(maxdiff(near, y) < 0.05, sampler)
    end
    assert.is_true(maxdiff(full, y) > 0.2)               -- an untrained network's full chain is not y
    -- T = 20, 4 DDIM steps {15, 10, 5, 0}: from 0.6 (step 11.4 -> 11) starts at 10 and runs 10, 5, 0
    local seen = {}
    m:refine(y, {steps = 4, from = 0.6, progress = function(t) seen[#seen + 1] = t end})
    assert.same({10, 5, 0}, seen)
    assert.same({15, 10, 5, 0}, m:ddim_steps(4))          -- restored afterwards
  end)

  it("an unconditional model samples images in [0,1], trains without recon, and refuses refine", function()
    local m = tiny({conditional = false})
    local x = m:sample_images(3, {steps = 2, shape = {1, 4, 4}, batch = 2})
    assert.same({3, 1, 4, 4}, x:shape())
    assert.is_true((-x):max():item() <= 0 and x:max():item() <= 1)
    local l = m:loss(tide.rand(2, 1, 4, 4))
    assert.is_true(l:item() > 0)
    assert.has_error(function() m:refine(tide.rand(1, 1, 4, 4)) end)
    assert.has_error(function() tiny():sample_images(1) end)
  end)
end)

describe("D-CMVAE evaluation pieces", function()
  local X = tide.tensor({{3.5, 0.2}, {-3, 1}, {0.5, 5}, {4, -1}})   -- nearest clusters 0, 1, 2, 0

  it("cmvae_cluster_of reads modality m alone and follows the chosen clusters", function()
    local cm = standin(3)
    for m = 1, 3 do assert.same({0, 1, 2, 0}, DC.cmvae_cluster_of(cm, m, X):to_table()) end
    assert.same({0, 1, 2, 0}, DC.cmvae_cluster_of(cm, 2, X, {batch = 3}):to_table())
    cm:set_active(tide.tensor({1, 0, 1}))
    -- (-3, 1): L1 distance 8 to cluster 0, 6 to cluster 2
    assert.same({0, 2, 2, 0}, DC.cmvae_cluster_of(cm, 1, X):to_table())
  end)

  it("content_keep: label and cluster agreement rates from known inputs", function()
    local cm = standin()
    -- label: the larger coordinate; the rows are the logits
    local clf = {predict = function(_, x) return x:argmax(2) end, forward = function(_, x) return x end}
    local refined = tide.tensor({{3.5, 0.2}, {-3, 1}, {4, 0.5}, {4, -1}})
    local drawn = tide.tensor({0, 1, 2, 1})       -- the clusters the sources came from
    local r = DC.content_keep{source = X, refined = refined, clusters = drawn, cmvae = cm, m = 2, clf = clf}
    -- sources' clusters 0,1,2,0 vs drawn 0,1,2,1: 3/4; refined's 0,1,0,0: 2/4
    assert.near(0.75, r.cluster_keep_cmvae, 1e-6)
    assert.near(0.5, r.cluster_keep_dcmvae, 1e-6)
    -- labels: sources 0,1,1,0; refined 0,1,0,0
    assert.near(0.75, r.label_keep, 1e-6)
    assert.same({0, 1, 0, 0}, r.clusters_refined:to_table())
    -- max softmax of the sources: sigmoid(3.3) = 0.964, sigmoid(4) = 0.982,
    -- sigmoid(4.5) = 0.989, sigmoid(5) = 0.993: above 0.975 the last three,
    -- whose labels are kept, changed, kept
    local sure = DC.content_keep{source = X, refined = refined, clusters = drawn, cmvae = cm, m = 2, clf = clf,
                                 confident = 0.975}
    assert.near(0.75, sure.confident_frac, 1e-6)
    assert.near(2 / 3, sure.label_keep_confident, 1e-6)
    assert.near(1, r.confident_frac, 1e-6)
    assert.is_nil(DC.content_keep{source = X, refined = X, clusters = drawn, cmvae = cm, m = 1}.label_keep)
    assert.has_error(function() DC.agreement(tide.zeros(3), tide.zeros(4)) end)
  end)

  it("cmvae_recon: self (w = its posterior mean), cross (w ~ r_m) and a mix of both, clamped to [0,1]", function()
    local cm = standin()
    local x1 = tide.tensor({{0.2, 0.4}, {0.1, 0.3}, {0.3, 0.2}})
    local x2 = tide.tensor({{0.6, 0.1}, {0.5, 0.5}, {0.9, 0.0}})
    local xs = tide.stack({x1, x2}, 1)
    -- self: z = x_2, w = x_2[1] / 2 -> x_2 + x_2[1] / 2, clamped
    local self2 = DC.cmvae_recon(cm, 2, 2)({x = {x1, x2}})
    assert.is_true(maxdiff(self2, (x2 + x2:narrow(2, 1, 1) * 0.5):clamp(0, 1)) < 1e-6)
    -- cross: z = x_1, w ~ r_2 (scale ~1e-6) -> x_1
    local cross = DC.cmvae_recon(cm, 2, 1)(xs)
    assert.is_true(maxdiff(cross, x1) < 1e-4)
    -- mix: each row is one of the two; both kinds appear in 40 rows
    local rows = {}
    for i = 1, 40 do rows[i] = (i - 1) % 3 end
    local idx = tide.tensor(rows)
    local big1, big2 = x1:index_select(1, idx), x2:index_select(1, idx)
    local mix = DC.cmvae_recon(cm, 2, "mix")({big1, big2})
    local s = (mix - (big2 + big2:narrow(2, 1, 1) * 0.5):clamp(0, 1)):abs():max(2)
    local c = (mix - big1):abs():max(2)
    local n_self, n_cross = 0, 0
    for i = 1, 40 do
      local a, b = s:at(i), c:at(i)
      assert.is_true(a < 1e-4 or b < 1e-4, "row " .. i .. " is neither")
      if a < 1e-4 then n_self = n_self + 1 else n_cross = n_cross + 1 end
    end
    assert.is_true(n_self > 0 and n_cross > 0)
    assert.has_error(function() DC.cmvae_recon(cm, 1, 3) end)
  end)

  it("cmvae_recon with {sample = true} decodes posterior draws, not the means", function()
    local cm = standin()
    local x = tide.full({200, 2}, 0.3)                         -- mean recon: 0.3 + 0.15 = 0.45
    local xs = tide.stack({x, x}, 1)
    local mean = DC.cmvae_recon(cm, 1, 1)(xs)
    assert.is_true(maxdiff(mean, tide.full({200, 2}, 0.45)) < 1e-6)
    local drawn = DC.cmvae_recon(cm, 1, 1, {sample = true})(xs)  -- z, w with scale-1 noise
    local off = (drawn - 0.45):abs():max(2)
    local n_at_mean = 0
    for i = 1, 200 do if off:at(i) < 1e-3 then n_at_mean = n_at_mean + 1 end end
    assert.is_true(n_at_mean < 5, n_at_mean .. " rows at the mean")
    assert.is_true((drawn - 0.45):abs():mean():item() > 0.2)
    assert.is_true((-drawn):max():item() <= 0 and drawn:max():item() <= 1)
  end)

  it("cmvae_samples: per images from each cluster in order, with their ids", function()
    local cm = standin()
    local imgs, ids, list = DC.cmvae_samples(cm, 1, 2, {2, 0})
    assert.same({4, 2}, imgs:shape())
    assert.same({2, 2, 0, 0}, ids:to_table())
    assert.same({2, 0}, list)
    assert.is_true((-imgs):max():item() <= 0 and imgs:max():item() <= 1)
  end)
end)
