-- tide.models.ddpm - denoising diffusion probabilistic models (Ho et al.
-- 2020) with DDIM sampling (Song et al. 2021) and an EMA of the weights.
--
--   local DDPM = require("tide.models.ddpm")
--   local m = DDPM{net = UNet{...}, T = 1000, schedule = "linear"}   -- or "cosine"
--   local loss = m:loss(x0)             -- x0 [B,C,H,W] in [-1,1]
--   m:ema_update(0.999)                 -- after each optimizer step
--   local x = m:sample(n, {shape = {1,28,28}})           -- ancestral, T steps
--   local x = m:ddim(n, {shape = {1,28,28}, steps = 50, eta = 0})
--   m:with_ema(function() ... end)      -- runs with the EMA weights in place
--   DDPM{..., cond_drop = 0.1}; m:ddim(n, {cond = y, guidance = 2})   -- classifier-free guidance
--
-- Forward process: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), with
-- alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s; steps t = 0..T-1 here
-- (the paper's t = 1..T shifted by one).
-- Every network call is net(x_t, t, cond) with t a float tensor [B] of steps;
-- cond (D-CMVAE) is passed through unchanged, or zeroed: the null condition of
-- classifier-free guidance (Ho & Salimans 2022), see cond_drop and guidance.
local tide = require("tide")
local nn = tide.nn

local DDPM = nn.Module:extend("DDPM")

-- beta_t, linear from beta_1 to beta_T (Ho et al.) or from the cosine abar
-- (Nichol & Dhariwal 2021): abar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2),
-- beta_t = min(1 - abar(t+1)/abar(t), 0.999).
local function betas(kind, T, b1, bT)
  local b = {}
  if kind == "linear" then
    for i = 1, T do b[i] = T == 1 and b1 or b1 + (bT - b1) * (i - 1) / (T - 1) end
  elseif kind == "cosine" then
    local s = 0.008
    local function f(t) return math.cos((t / T + s) / (1 + s) * math.pi / 2) ^ 2 end
    for i = 1, T do b[i] = math.min(1 - f(i) / f(i - 1), 0.999) end
  else
    error("DDPM: schedule must be linear or cosine, got " .. tostring(kind), 3)
  end
  return b
end

function DDPM:init(opts)
  opts = opts or {}
  if not opts.net then error("DDPM: opts.net (a noise-prediction network) is required", 2) end
  self.net = opts.net
  self.T = opts.T or 1000
  self.schedule = opts.schedule or "linear"
  self.clip = opts.clip ~= false
  self.cond_drop = opts.cond_drop or 0
  if self.cond_drop < 0 or self.cond_drop >= 1 then
    error("DDPM: cond_drop is a probability in [0,1), got " .. tostring(self.cond_drop), 2)
  end
  local b = betas(self.schedule, self.T, opts.beta1 or 1e-4, opts.betaT or 0.02)
  -- per step (Lua index t+1): beta, alpha, abar, abar_prev
  local ab, abp, acc = {}, {}, 1
  for i = 1, self.T do
    abp[i] = acc
    acc = acc * (1 - b[i])
    ab[i] = acc
  end
  self.beta, self.abar, self.abar_prev = b, ab, abp
  local sa, s1a = {}, {}
  for i = 1, self.T do sa[i], s1a[i] = math.sqrt(ab[i]), math.sqrt(1 - ab[i]) end
  self.sqrt_abar_t = tide.tensor(sa)          -- [T]
  self.sqrt_1mabar_t = tide.tensor(s1a)       -- [T]
end

-- (c0, ct, var) of the posterior q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, var):
--   c0 = beta_t sqrt(abar_{t-1}) / (1 - abar_t)
--   ct = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)
--   var = beta_t (1 - abar_{t-1}) / (1 - abar_t)
function DDPM:posterior(t)
  local i = t + 1
  local bt, ab, abp = self.beta[i], self.abar[i], self.abar_prev[i]
  return bt * math.sqrt(abp) / (1 - ab), (1 - abp) * math.sqrt(1 - bt) / (1 - ab), bt * (1 - abp) / (1 - ab)
end

-- Uniform steps [B] in 0..T-1 (a float tensor of whole numbers).
function DDPM:random_steps(B)
  return tide.ones(self.T):categorical(B)
end

-- v [B] reshaped to [B,1,...,1] to scale each sample of x [B,...].
local function per_sample(v, x)
  local shape = {x:size(1)}
  for _ = 2, x.ndim do shape[#shape + 1] = 1 end
  return v:reshape(shape)
end

-- x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, per sample: t [B], eps like x0.
function DDPM:q_sample(x0, t, eps)
  return x0 * per_sample(self.sqrt_abar_t:index_select(1, t), x0)
       + eps * per_sample(self.sqrt_1mabar_t:index_select(1, t), x0)
end

-- cond [B,...] with each sample's condition replaced by the null one (zeros)
-- with probability p.
local function drop_condition(cond, p)
  return cond * per_sample(tide.rand(cond:size(1)):ge(p), cond)
end

-- L_simple = E_{t, eps} || eps - eps_theta(x_t, t) ||^2 (mean over all
-- elements). opts: t [B], eps (fixed noise), cond (dropped per sample with
-- probability cond_drop). Returns loss, x_t.
function DDPM:loss(x0, opts)
  opts = opts or {}
  local t = opts.t or self:random_steps(x0:size(1))
  local eps = opts.eps or tide.randn_like(x0)
  local xt = self:q_sample(x0, t, eps)
  local cond = opts.cond
  if cond and self.cond_drop > 0 then cond = drop_condition(cond, self.cond_drop) end
  return self.net(xt, t, cond):mse_loss(eps), xt
end

-- eps_theta(x_t, t, cond) for n samples at step t. With o.guidance = w > 0,
-- classifier-free guidance: (1 + w) eps(x_t, t, cond) - w eps(x_t, t, null),
-- the two in one batch of 2n.
function DDPM:eps(x, t, o)
  local w, n = o.guidance or 0, x:size(1)
  if w == 0 or not o.cond then return self.net(x, tide.full({n}, t), o.cond) end
  if self.cond_drop == 0 then
    error("DDPM: guidance needs a model trained with cond_drop > 0 (its null condition is untrained)", 3)
  end
  local e = self.net(tide.cat({x, x}, 1), tide.full({2 * n}, t), tide.cat({o.cond, tide.zeros_like(o.cond)}, 1))
  return e:narrow(1, 1, n) * (1 + w) - e:narrow(1, n + 1, n) * w
end

-- x_0 estimate from eps: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clamped to [-1, 1]
function DDPM:predict_x0(xt, t, eps)
  local i = t + 1
  local x0 = (xt - eps * math.sqrt(1 - self.abar[i])) * (1 / math.sqrt(self.abar[i]))
  return self.clip and x0:clamp(-1, 1) or x0
end

local function start_noise(self, n, opts)
  if opts.noise then return opts.noise end
  local shape = {n}
  for _, v in ipairs(opts.shape or {1, 28, 28}) do shape[#shape + 1] = v end
  return tide.randn(shape)
end

-- Ancestral sampling (Ho et al. Alg. 2, with x_0 clipped):
--   x_{t-1} = c0 x0_hat(x_t) + ct x_t + sqrt(var) z,  z ~ N(0, I) for t > 0.
-- opts: shape ({C,H,W}), cond, guidance (0), noise (x_T), from (start step,
-- default T-1), progress (fn(step)). Returns x_0 [n,C,H,W] in [-1,1].
function DDPM:sample(n, opts)
  opts = opts or {}
  return tide.no_grad(function()
    local x = start_noise(self, n, opts)
    for t = opts.from or self.T - 1, 0, -1 do
      local eps = self:eps(x, t, opts)
      local c0, ct, var = self:posterior(t)
      local mean = self:predict_x0(x, t, eps) * c0 + x * ct
      x = t > 0 and mean + tide.randn_like(x) * math.sqrt(var) or mean
      if opts.progress then opts.progress(t) end
    end
    return x
  end)
end

-- The DDIM sub-sequence of `steps` steps, evenly spaced, from T-1 down to 0.
function DDPM:ddim_steps(steps)
  local seq = {}
  for i = steps - 1, 0, -1 do seq[#seq + 1] = math.floor(i * self.T / steps + 0.5) end
  seq[1] = math.min(seq[1], self.T - 1)
  return seq
end

-- DDIM (Song et al. 2021, eq. 12), from t to the previous step s:
--   x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z,
--   sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s);
-- eta = 0 is deterministic given x_T. opts: steps (50), eta (0), shape,
-- cond, guidance (0), noise.
function DDPM:ddim(n, opts)
  opts = opts or {}
  local eta = opts.eta or 0
  local seq = self:ddim_steps(opts.steps or 50)
  return tide.no_grad(function()
    local x = start_noise(self, n, opts)
    for k, t in ipairs(seq) do
      local eps = self:eps(x, t, opts)
      local x0 = self:predict_x0(x, t, eps)
      local ab = self.abar[t + 1]
      local abs = seq[k + 1] and self.abar[seq[k + 1] + 1] or 1
      if not seq[k + 1] then
        x = x0
      else
        local sigma = eta * math.sqrt((1 - abs) / (1 - ab)) * math.sqrt(1 - ab / abs)
        -- with x0 clipped, eps is recomputed from it so the step stays on the DDIM path
        local e = (x - x0 * math.sqrt(ab)) * (1 / math.sqrt(1 - ab))
        x = x0 * math.sqrt(abs) + e * math.sqrt(math.max(1 - abs - sigma * sigma, 0))
        if sigma > 0 then x = x + tide.randn_like(x) * sigma end
      end
      if opts.progress then opts.progress(t) end
    end
    return x
  end)
end

---------------------------------------------------------------- EMA

-- ema <- decay ema + (1 - decay) theta, over the flat parameter buffer in
-- one engine pass: td_sgd_step's momentum buffer update b <- m b + (1 - d) g
-- with m = d = decay, g = theta, at lr 0 (theta itself is left unchanged).
function DDPM:ema_update(decay)
  local flat = self:flat_parameters()
  if not self._ema then
    self._ema = flat:clone():detach()
    return
  end
  flat:sgd_step(flat, self._ema, 0, decay, decay, 0, false, 2)
end

-- Trains with Adam (lr warmed up linearly over o.warmup steps, gradient
-- norm clipped at 1, the EMA updated after each step at o.ema) for o.steps
-- steps or, when o.steps is 0, o.minutes of wall time. loss_of(step) returns
-- the 0-d loss of a fresh batch. Prints the smoothed loss every 50 steps.
-- -> steps done, seconds, smoothed loss (nil when no step ran).
function DDPM:fit(loss_of, o)
  local now = require("tide.data.sys").now
  local opt = tide.optim.Adam(self, {lr = o.lr})
  local t0, step, avg = now(), 0, nil
  self:ema_update(o.ema)
  while true do
    if o.steps > 0 and step >= o.steps then break end
    if o.steps == 0 and now() - t0 >= o.minutes * 60 then break end
    step = step + 1
    opt:set_lr(o.lr * math.min(1, step / o.warmup))
    opt:zero_grad()
    local loss = loss_of(step)
    loss:backward()
    opt:clip_grad_norm(1)
    opt:step()
    self:ema_update(o.ema)
    local l = loss:item()
    avg = avg and 0.98 * avg + 0.02 * l or l
    if step % 50 == 0 then
      print(("step %d  loss %.4f  %.1f s"):format(step, avg, now() - t0))
      io.stdout:flush()
    end
  end
  return step, now() - t0, avg
end

function DDPM:ema_buffer() return self._ema end

function DDPM:set_ema_buffer(t)
  self._ema = t:clone():detach()
end

-- Runs fn() with the EMA weights in the parameters (the trained ones are put
-- back afterwards, even on error). Without an EMA, just fn().
function DDPM:with_ema(fn, ...)
  if not self._ema then return fn(...) end
  local flat = self:flat_parameters()
  local saved = flat:clone():detach()
  flat:copy_(self._ema)
  local r = {pcall(fn, ...)}
  flat:copy_(saved)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, table.maxn(r))
end

return DDPM
