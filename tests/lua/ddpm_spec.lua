-- tide.models.ddpm: the schedules, q(x_t|x_0) in closed form, the posterior
-- coefficients against hand values, the loss on a fixed case, ancestral and
-- DDIM sampling (eta = 0 deterministic), the EMA, the training loop.
local tide = require("tide")
local DDPM = require("tide.models.ddpm")
local nn = tide.nn

-- A stand-in eps-network: eps_theta(x, t, cond) = w * x (+ cond), no time use.
local Lin = nn.Module:extend("LinEps")
function Lin:init() self:register_parameter("w", {1}, function(t) t:fill(0.5) end) end
function Lin:forward(x, t, cond)
  local y = x * self.w
  return cond and y + cond or y
end

local function close(a, b, tol, what)
  assert(math.abs(a - b) <= tol * (1 + math.abs(b)), ("%s: %.9g vs %.9g"):format(what, a, b))
end

describe("DDPM schedule", function()
  it("is linear from 1e-4 to 0.02 over 1000 steps with abar the running product", function()
    local m = DDPM{net = Lin()}
    close(m.beta[1], 1e-4, 1e-12, "beta_1")
    close(m.beta[1000], 0.02, 1e-12, "beta_T")
    close(m.beta[500], 1e-4 + (0.02 - 1e-4) * 499 / 999, 1e-12, "beta_500")
    close(m.abar[1], 1 - 1e-4, 1e-12, "abar_1")
    close(m.abar[2], (1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)), 1e-12, "abar_2")
    -- log abar_T = sum log(1 - beta): about -10.05 for this schedule (abar_T ~ 4.0e-5)
    local s = 0
    for i = 1, 1000 do s = s + math.log(1 - (1e-4 + 0.0199 * (i - 1) / 999)) end
    close(math.log(m.abar[1000]), s, 1e-9, "log abar_T")
    assert(m.abar[1000] < 1e-4 and m.abar[1000] > 1e-5)
  end)

  it("cosine: abar(t) = f(t)/f(0) and betas capped at 0.999", function()
    local m = DDPM{net = Lin(), schedule = "cosine", T = 100}
    local f = function(t) return math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ^ 2 end
    close(m.abar[50], f(50) / f(0), 1e-9, "abar_50")
    assert(m.beta[100] <= 0.999)
    assert.has_error(function() DDPM{net = Lin(), schedule = "quadratic"} end)
  end)
end)

describe("DDPM forward process and posterior", function()
  it("q_sample is sqrt(abar_t) x0 + sqrt(1 - abar_t) eps per sample", function()
    local m = DDPM{net = Lin()}
    local x0 = tide.tensor({{0.5, -1}, {1, 0.25}})
    local eps = tide.tensor({{1, 2}, {-0.5, 0.75}})
    local t = tide.tensor({0, 999})
    local xt = m:q_sample(x0, t, eps):to_table()
    local a0, a1 = m.abar[1], m.abar[1000]
    close(xt[1][1], math.sqrt(a0) * 0.5 + math.sqrt(1 - a0) * 1, 1e-6, "x_t[1,1]")
    close(xt[1][2], math.sqrt(a0) * -1 + math.sqrt(1 - a0) * 2, 1e-6, "x_t[1,2]")
    close(xt[2][1], math.sqrt(a1) * 1 + math.sqrt(1 - a1) * -0.5, 1e-6, "x_t[2,1]")
    close(xt[2][2], math.sqrt(a1) * 0.25 + math.sqrt(1 - a1) * 0.75, 1e-6, "x_t[2,2]")
  end)

  it("posterior coefficients match hand values at t = 1 (paper's t = 2) and t = 0", function()
    local m = DDPM{net = Lin()}
    local b1, b2 = 1e-4, 1e-4 + 0.0199 / 999
    local ab1, ab2 = 1 - b1, (1 - b1) * (1 - b2)
    local c0, ct, var = m:posterior(1)
    close(c0, b2 * math.sqrt(ab1) / (1 - ab2), 1e-9, "c0")
    close(ct, (1 - ab1) * math.sqrt(1 - b2) / (1 - ab2), 1e-9, "ct")
    close(var, b2 * (1 - ab1) / (1 - ab2), 1e-9, "var")
    -- by hand: beta_2 = 1.19920e-4, 1 - abar_2 = 2.19908e-4 -> c0 = 0.54532
    close(c0, 0.54532, 1e-4, "c0 by hand")
    local c00, ct0, var0 = m:posterior(0)
    close(c00, 1, 1e-9, "c0 at t=0")
    close(ct0, 0, 1e-9, "ct at t=0")
    close(var0, 0, 1e-9, "var at t=0")
    -- the posterior mean is the mean of the joint Gaussian: E[x_{t-1}|x_t,x_0]
    -- with x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) n gives the same c0, ct
    local t = 700
    local c0b, ctb = m:posterior(t)
    local abp, bt = m.abar[t], m.beta[t + 1]
    local k = math.sqrt(1 - bt) * (1 - abp) / ((1 - bt) * (1 - abp) + bt)
    close(ctb, k, 1e-9, "ct by conditioning")
    close(c0b, math.sqrt(abp) * (1 - k * math.sqrt(1 - bt)), 1e-9, "c0 by conditioning")
  end)
end)

describe("DDPM loss and sampling", function()
  it("the loss on a fixed case is mean((w x_t - eps)^2) with its gradient", function()
    local m = DDPM{net = Lin()}
    local x0 = tide.tensor({{0.5, -1}, {1, 0.25}})
    local eps = tide.tensor({{1, 2}, {-0.5, 0.75}})
    local t = tide.tensor({10, 500})
    local loss, xt = m:loss(x0, {t = t, eps = eps})
    local X, E = xt:to_table(), {{1, 2}, {-0.5, 0.75}}
    local s, g = 0, 0
    for i = 1, 2 do for j = 1, 2 do
      local r = 0.5 * X[i][j] - E[i][j]
      s, g = s + r * r, g + 2 * r * X[i][j]
    end end
    close(loss:item(), s / 4, 1e-6, "loss")
    loss:backward()
    close(m.net.w:grad():item(), g / 4, 1e-5, "dloss/dw")
  end)

  it("DDIM with eta = 0 is deterministic given x_T; eta = 1 is not", function()
    local m = DDPM{net = Lin(), T = 100}
    local noise = tide.randn(3, 1, 4, 4)
    local a = m:ddim(3, {noise = noise, steps = 10, shape = {1, 4, 4}})
    tide.randn(5)
    local b = m:ddim(3, {noise = noise, steps = 10, shape = {1, 4, 4}})
    assert.equals(0, (a - b):abs():max():item())
    local c = m:ddim(3, {noise = noise, steps = 10, eta = 1})
    local d = m:ddim(3, {noise = noise, steps = 10, eta = 1})
    assert.is_true((c - d):abs():max():item() > 1e-3)
    assert.same({90, 80, 70, 60, 50, 40, 30, 20, 10, 0}, m:ddim_steps(10))
  end)

  it("a DDIM step with eta = 0 and a perfect eps network returns x_0", function()
    -- eps_theta = cond (the true noise); every x0_hat equals x0
    local m = DDPM{net = Lin(), T = 50, clip = false}
    m.net.w:detach():fill(0)
    local x0 = tide.tensor({{0.3, -0.7}})
    local eps = tide.tensor({{0.4, 1.2}})
    assert.equals(40, m:ddim_steps(5)[1])
    local xT = m:q_sample(x0, tide.tensor({40}), eps)
    local out = m:ddim(1, {noise = xT, steps = 5, cond = eps}):to_table()
    -- x_s stays sqrt(abar_s) x0 + sqrt(1 - abar_s) eps, so eps_theta = eps stays exact
    close(out[1][1], 0.3, 1e-4, "x0[1]")
    close(out[1][2], -0.7, 1e-4, "x0[2]")
  end)

  it("ancestral sampling ends at the posterior mean of the last step (no noise at t = 0)", function()
    local m = DDPM{net = Lin(), T = 3}
    local x = m:sample(2, {noise = tide.zeros(2, 1, 2, 2)})
    -- with x_T = 0, w = 0.5: each step adds noise for t > 0 only; shapes are kept
    assert.same({2, 1, 2, 2}, x:shape())
    assert.is_true(x:abs():max():item() <= 1 + 1e-6)
  end)
end)

describe("DDPM classifier-free guidance", function()
  it("cond_drop zeroes whole samples' conditions in the loss, about p of them", function()
    -- x0 = 0, eps = 0: x_t = 0, so eps_theta = kept_i * cond_i and the loss
    -- is (kept samples) * (1 + 4) / (2 B) with cond = [1, 2] per sample
    local B = 2000
    local cond = tide.tensor({1, 2}):reshape(1, 2):expand(B, 2):contiguous()
    local x0, t = tide.zeros(B, 2), tide.zeros(B)
    local full = DDPM{net = Lin()}:loss(x0, {t = t, eps = x0, cond = cond}):item()
    close(full, 2.5, 1e-6, "no dropping")
    local kept = DDPM{net = Lin(), cond_drop = 0.3}:loss(x0, {t = t, eps = x0, cond = cond}):item() * 2 * B / 5
    assert.is_true(math.abs(kept - math.floor(kept + 0.5)) < 0.02, "whole samples dropped: " .. kept)
    assert.is_true(math.abs(kept / B - 0.7) < 0.05, ("kept %d of %d, p = 0.3"):format(kept, B))
    assert.has_error(function() DDPM{net = Lin(), cond_drop = 1} end)
  end)

  it("guidance w gives (1 + w) eps(x, y) - w eps(x, null): here the chain of cond (1 + w) y", function()
    -- with eps_theta = 0.5 x + cond, the guided eps is 0.5 x + (1 + w) cond
    local m = DDPM{net = Lin(), T = 100, cond_drop = 0.1}
    local noise, y = tide.randn(3, 1, 4, 4), tide.randn(3, 1, 4, 4) * 0.1
    local guided = m:ddim(3, {noise = noise, steps = 10, cond = y, guidance = 2})
    local scaled = m:ddim(3, {noise = noise, steps = 10, cond = y * 3})
    local plain = m:ddim(3, {noise = noise, steps = 10, cond = y})
    assert.is_true((guided - scaled):abs():max():item() < 1e-5)
    assert.is_true((guided - plain):abs():max():item() > 1e-3)
    local anc = m:sample(3, {noise = noise, cond = y, guidance = 2, from = 5})
    assert.same({3, 1, 4, 4}, anc:shape())
    assert.has_error(function() DDPM{net = Lin()}:ddim(1, {cond = y:narrow(1, 1, 1), guidance = 1, shape = {1, 4, 4}}) end,
                     "DDPM: guidance needs a model trained with cond_drop > 0 (its null condition is untrained)")
  end)
end)

describe("DDPM EMA", function()
  it("ema <- d ema + (1 - d) theta on the flat buffer, and with_ema swaps and restores", function()
    local m = DDPM{net = Lin()}
    m:ema_update(0.9)                       -- starts at theta = 0.5
    m.net.w:detach():fill(1.5)
    m:ema_update(0.9)
    close(m:ema_buffer():item(), 0.9 * 0.5 + 0.1 * 1.5, 1e-6, "ema")
    m:ema_update(0.5)
    close(m:ema_buffer():item(), 0.5 * 0.6 + 0.5 * 1.5, 1e-6, "ema 2")
    local inside = m:with_ema(function() return m.net.w:item() end)
    close(inside, 1.05, 1e-6, "EMA weights inside")
    close(m.net.w:item(), 1.5, 1e-7, "weights restored")
  end)

  it("fit takes o.steps Adam steps on loss_of(step), with the EMA behind the weights", function()
    local m = DDPM{net = Lin()}
    local seen = {}
    -- loss (w - 2)^2: Adam moves w from 0.5 towards 2 by about lr a step
    local steps, secs, avg = m:fit(function(step)
      seen[#seen + 1] = step
      return (m.net.w - 2):square():sum()
    end, {steps = 4, minutes = 0, lr = 0.1, warmup = 1, ema = 0.5})
    assert.same({1, 2, 3, 4}, seen)
    assert.equals(4, steps)
    assert.is_true(secs >= 0 and avg > 0)
    local w = m.net.w:item()
    assert.is_true(w > 0.8 and w < 1.0, "w after 4 steps: " .. w)
    local e = m:ema_buffer():item()
    assert.is_true(e > 0.5 and e < w, "ema " .. e .. " lags w " .. w)
  end)
end)

describe("D-CMVAE", function()
  local DC = require("tide.models.dcmvae")
  -- stand-in for CMVAE's reconstruction: a blur (2x2 average, then nearest up-sampling)
  local function blur(x) return x:avg_pool2d(2, 2):upsample_nearest2d(2) end

  local function model()
    tide.manual_seed(7)
    return DC{channels = 1, recon = blur, T = 100, unet = {base = 8, mults = {1}, groups = 2}}
  end

  it("is the conditional DDPM loss with y = 2 recon(x) - 1 as extra UNet channels", function()
    local m = model()
    assert.equals(2, m.net.inc.weight:size(2))          -- image + conditioning channel
    local x = tide.rand(2, 1, 8, 8)
    local t, eps = tide.tensor({3, 60}), tide.randn(2, 1, 8, 8)
    local got = m:loss(x, {t = t, eps = eps})
    local xt = m:q_sample(x * 2 - 1, t, eps)
    local want = m.net(xt, t, blur(x) * 2 - 1):mse_loss(eps)
    assert.is_true(math.abs(got:item() - want:item()) < 1e-6)
    local other = m:loss(x, {t = t, eps = eps, y = tide.zeros(2, 1, 8, 8)})
    assert.is_true(math.abs(other:item() - got:item()) > 1e-6)   -- the conditioning is used
    got:backward()
    local _, g = m:flat_parameters()
    assert.is_true(g:abs():sum():item() > 0)
  end)

  it("refines VAE outputs: shape kept, deterministic with DDIM eta = 0, depends on y", function()
    local m = model()
    local y = blur(tide.rand(3, 1, 8, 8))
    local noise = tide.randn(3, 1, 8, 8)
    local a = m:refine(y, {steps = 4, noise = noise})
    local b = m:refine(y, {steps = 4, noise = noise})
    assert.same({3, 1, 8, 8}, a:shape())
    assert.equals(0, (a - b):abs():max():item())
    assert.is_true((a - 0.5):abs():max():item() <= 0.5 + 1e-6)
    local c = m:refine(y * 0, {steps = 4, noise = noise})
    assert.is_true((a - c):abs():max():item() > 1e-4)
    local r, y2 = m:generate(2, function(n) return blur(tide.rand(n, 1, 8, 8)) end, {steps = 2})
    assert.same({2, 1, 8, 8}, r:shape())
    assert.same({2, 1, 8, 8}, y2:shape())
    assert.has_error(function() DC{channels = 1, unet = {base = 8, mults = {1}, groups = 2}}:loss(tide.rand(1, 1, 8, 8)) end)
  end)
end)
