-- tide.optim - Adam / AdamW (amsgrad, weight decay) and SGD (momentum,
-- dampening, nesterov, weight decay) on the engine's fused kernels
-- (td_adam_step, td_sgd_step), learning-rate schedules, and clipping by the
-- global gradient norm (td_grad_norm, td_scale_).
--
--   local opt = tide.optim.Adam(model, {lr = 1e-3})
--   loss:backward(); opt:clip_grad_norm(1.0); opt:step(); opt:zero_grad()
--
-- What an optimizer updates: a module (its slice of the model's flat
-- parameter buffer, stepped as one vector by one kernel call), a tensor
-- (with a contiguous .grad), or a list of these; a list element may also be
-- a group {params = ..., lr = ..., ...} with its own hyperparameters.
-- Hyperparameters follow torch.optim's names and defaults.
local B = require("tide_ffi")
local W = B.wrappers
local raise = B.raise
local nnmod = require("tide.nn.module")

local optim = {}

---------------------------------------------------------------- groups

local function copy_table(t)
  local out = {}
  for k, v in pairs(t or {}) do out[k] = v end
  return out
end

-- One updated vector: a module slice or a tensor; state tensors made lazily.
local function make_target(x, fname)
  if nnmod.is_module(x) then return {module = x} end
  if B.is_tensor(x) then return {tensor = x} end
  raise(fname .. ": expects modules or tensors (or groups {params = ...}), got " .. type(x))
end

-- The (param, grad) vectors of a target now; grad is nil when a tensor has
-- none yet. A module's slice is fetched again when its model was rebuilt.
local function vectors(tg, fname)
  if tg.tensor then
    local p = tg.tensor
    local g = W.get_grad(p)
    if g ~= nil and not W.is_contiguous(g) then raise(fname .. ": the gradient of a " .. B.shape_str(p) .. " tensor is not contiguous") end
    return p, g
  end
  local m = tg.module
  local id = m:buffer_id()
  if tg.id ~= id or tg.p == nil then
    local p, g = m:flat_parameters()
    if tg.n ~= nil and tg.n ~= p.numel then
      raise(("%s: the model's parameter count changed from %d to %d since the optimizer was made"):format(
        fname, tg.n, p.numel))
    end
    tg.p, tg.g, tg.n, tg.id = p, g, p.numel, id
  end
  return tg.p, tg.g
end

local function parse_groups(params, defaults, fname)
  if params == nil then raise(fname .. "(params, opts): params is missing") end
  local list
  if nnmod.is_module(params) or B.is_tensor(params) or (type(params) == "table" and params.params ~= nil) then
    list = {params}
  elseif type(params) == "table" then
    list = params
  else
    raise(fname .. ": params must be a module, a tensor or a list, got " .. type(params))
  end
  local groups = {}
  for _, e in ipairs(list) do
    local g = copy_table(defaults)
    local items = e
    if type(e) == "table" and not nnmod.is_module(e) and e.params ~= nil then
      for k, v in pairs(e) do if k ~= "params" then g[k] = v end end
      items = e.params
    end
    if nnmod.is_module(items) or B.is_tensor(items) then items = {items} end
    g.targets = {}
    for _, x in ipairs(items) do g.targets[#g.targets + 1] = make_target(x, fname) end
    groups[#groups + 1] = g
  end
  if #groups == 0 then raise(fname .. ": nothing to optimize") end
  return groups
end

---------------------------------------------------------------- Optimizer

local Optimizer = {}
Optimizer.__index = Optimizer

local function new_optimizer(kind, params, opts, defaults, fname)
  local d = copy_table(defaults)
  for k, v in pairs(opts or {}) do
    if d[k] == nil then raise(("%s: unknown option '%s'"):format(fname, tostring(k))) end
    d[k] = v
  end
  local self = setmetatable({kind = kind, name = fname, defaults = d}, Optimizer)
  self.param_groups = parse_groups(params, d, fname)
  for _, g in ipairs(self.param_groups) do
    for k in pairs(g) do
      if k ~= "targets" and defaults[k] == nil then raise(("%s: unknown option '%s' in a group"):format(fname, k)) end
    end
    g.initial_lr = g.lr
    for _, tg in ipairs(g.targets) do tg.step = 0 end
    if kind ~= "sgd" and type(g.betas) ~= "table" then raise(fname .. ": betas must be a table {beta1, beta2}") end
  end
  self:_fetch() -- builds the models now, so parameters move before training
  return self
end

function Optimizer:_fetch()
  for _, g in ipairs(self.param_groups) do
    for _, tg in ipairs(g.targets) do vectors(tg, self.name) end
  end
end

local function zeros_like(p) return W.zeros(p.numel) end

local function adam_target(self, g, tg)
  local p, grad = vectors(tg, self.name)
  if grad == nil or p.numel == 0 then return end
  if tg.exp_avg == nil then
    tg.exp_avg, tg.exp_avg_sq = zeros_like(p), zeros_like(p)
    if g.amsgrad then tg.max_exp_avg_sq = zeros_like(p) end
  end
  tg.step = tg.step + 1
  local pv, gv = p, grad
  if p.ndim ~= 1 then pv, gv = W.reshape(p, -1), W.reshape(grad, -1) end
  W.adam_step(pv, gv, tg.exp_avg, tg.exp_avg_sq, g.amsgrad and tg.max_exp_avg_sq or nil, g.lr, g.betas[1],
              g.betas[2], g.eps, g.weight_decay, tg.step, g.amsgrad and 1 or 0, self.kind == "adamw" and 1 or 0)
end

local function sgd_target(self, g, tg)
  local p, grad = vectors(tg, self.name)
  if grad == nil or p.numel == 0 then return end
  if g.momentum ~= 0 and tg.momentum_buffer == nil then tg.momentum_buffer = zeros_like(p) end
  tg.step = tg.step + 1
  local pv, gv = p, grad
  if p.ndim ~= 1 then pv, gv = W.reshape(p, -1), W.reshape(grad, -1) end
  W.sgd_step(pv, gv, g.momentum ~= 0 and tg.momentum_buffer or nil, g.lr, g.momentum, g.dampening,
             g.weight_decay, g.nesterov and 1 or 0, tg.step)
end

-- One update of every parameter that has a gradient.
function Optimizer:step()
  local fn = self.kind == "sgd" and sgd_target or adam_target
  for _, g in ipairs(self.param_groups) do
    for _, tg in ipairs(g.targets) do fn(self, g, tg) end
  end
  self.steps = (self.steps or 0) + 1
  return self
end

function Optimizer:zero_grad()
  for _, g in ipairs(self.param_groups) do
    for _, tg in ipairs(g.targets) do
      local _, grad = vectors(tg, self.name)
      if grad ~= nil and grad.numel > 0 then W.fill(grad, 0) end
    end
  end
  return self
end

-- The gradients (flat slices, or tensors' .grad), for clipping.
function Optimizer:grads()
  local out = {}
  for _, g in ipairs(self.param_groups) do
    for _, tg in ipairs(g.targets) do
      local _, grad = vectors(tg, self.name)
      if grad ~= nil then out[#out + 1] = grad end
    end
  end
  return out
end

function Optimizer:clip_grad_norm(max_norm) return optim.clip_grad_norm(self:grads(), max_norm) end

-- The learning rate of group i (default 1); set_lr(v) sets every group's.
function Optimizer:get_lr(i) return self.param_groups[i or 1].lr end

function Optimizer:set_lr(v)
  for _, g in ipairs(self.param_groups) do g.lr = v end
  return self
end

local STATE_KEYS = {adam = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, adamw = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
                    sgd = {"momentum_buffer"}}

-- {kind =, steps =, groups = {{lr =, ..., targets = {{step =, exp_avg =, ...}}}}};
-- the state tensors are the live ones (copy them to keep a snapshot).
function Optimizer:state_dict()
  local sd = {kind = self.kind, steps = self.steps or 0, groups = {}}
  for gi, g in ipairs(self.param_groups) do
    local gs = {targets = {}}
    for k, v in pairs(g) do if k ~= "targets" then gs[k] = v end end
    for ti, tg in ipairs(g.targets) do
      local ts = {step = tg.step}
      for _, k in ipairs(STATE_KEYS[self.kind]) do ts[k] = tg[k] end
      gs.targets[ti] = ts
    end
    sd.groups[gi] = gs
  end
  return sd
end

-- Restores a state_dict (values copied into fresh state tensors).
function Optimizer:load_state_dict(sd)
  if sd.kind ~= self.kind then raise(("%s: load_state_dict: state of a '%s' optimizer"):format(self.name, tostring(sd.kind))) end
  if #sd.groups ~= #self.param_groups then
    raise(("%s: load_state_dict: %d groups, the optimizer has %d"):format(self.name, #sd.groups, #self.param_groups))
  end
  self:_fetch()
  for gi, g in ipairs(self.param_groups) do
    local gs = sd.groups[gi]
    if #gs.targets ~= #g.targets then raise(self.name .. ": load_state_dict: group " .. gi .. " differs in size") end
    for k, v in pairs(gs) do if k ~= "targets" and k ~= "initial_lr" then g[k] = v end end
    if gs.initial_lr ~= nil then g.initial_lr = gs.initial_lr end
    for ti, tg in ipairs(g.targets) do
      local ts = gs.targets[ti]
      tg.step = ts.step or 0
      local p = vectors(tg, self.name)
      for _, k in ipairs(STATE_KEYS[self.kind]) do
        local v = ts[k]
        if v ~= nil then
          if v.numel ~= p.numel then
            raise(("%s: load_state_dict: %s of group %d has %d values, the parameters %d"):format(
              self.name, k, gi, v.numel, p.numel))
          end
          tg[k] = W.clone(W.detach(W.reshape(v, -1)))
        else
          tg[k] = nil
        end
      end
    end
  end
  self.steps = sd.steps or 0
  return self
end

---------------------------------------------------------------- constructors

local ADAM_DEFAULTS = {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0, amsgrad = false}

-- Adam(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0 (L2, added to the gradient), amsgrad=false})
function optim.Adam(params, opts) return new_optimizer("adam", params, opts, ADAM_DEFAULTS, "Adam") end

-- AdamW(params, {..., weight_decay=1e-2 (decoupled: p *= 1 - lr*wd)})
function optim.AdamW(params, opts)
  local d = copy_table(ADAM_DEFAULTS)
  d.weight_decay = 1e-2
  return new_optimizer("adamw", params, opts, d, "AdamW")
end

-- SGD(params, {lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=false})
function optim.SGD(params, opts)
  local o = opts or {}
  if o.lr == nil then raise("SGD: lr is required") end
  return new_optimizer("sgd", params, opts,
                       {lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false}, "SGD")
end

---------------------------------------------------------------- clipping

-- Scales the gradients in place so that their global L2 norm is at most
-- max_norm (torch.nn.utils.clip_grad_norm_: factor max_norm/(norm + 1e-6)
-- when below 1). what: a module, an optimizer, a tensor or a list of
-- gradient tensors. Returns the norm before clipping.
function optim.clip_grad_norm(what, max_norm)
  local grads
  if nnmod.is_module(what) then
    local _, g = what:flat_parameters()
    grads = {g}
  elseif getmetatable(what) == Optimizer then
    grads = what:grads()
  elseif B.is_tensor(what) then
    grads = {what}
  elseif type(what) == "table" then
    grads = what
  else
    raise("clip_grad_norm: expects a module, an optimizer or gradient tensors")
  end
  if type(max_norm) ~= "number" then raise("clip_grad_norm(what, max_norm): max_norm must be a number") end
  local norm = W.grad_norm(grads)
  local coef = max_norm / (norm + 1e-6)
  if coef < 1 then
    for _, g in ipairs(grads) do W.scale_(g, coef) end
  end
  return norm
end

---------------------------------------------------------------- schedules

-- A schedule sets every group's lr to initial_lr * factor(epoch), for
-- epoch = 0 at construction and +1 per sched:step() (PyTorch's closed forms).
local Scheduler = {}
Scheduler.__index = Scheduler

local function new_scheduler(opt, factor, name)
  if getmetatable(opt) ~= Optimizer then raise(name .. ": the first argument must be an optimizer") end
  local self = setmetatable({optimizer = opt, factor = factor, last_epoch = 0, name = name}, Scheduler)
  self:_apply()
  return self
end

function Scheduler:_apply()
  for _, g in ipairs(self.optimizer.param_groups) do g.lr = self.factor(self.last_epoch, g.initial_lr) end
end

function Scheduler:step()
  self.last_epoch = self.last_epoch + 1
  self:_apply()
  return self.optimizer.param_groups[1].lr
end

function Scheduler:get_last_lr()
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
  return out
end

function Scheduler:state_dict() return {last_epoch = self.last_epoch} end

function Scheduler:load_state_dict(sd)
  self.last_epoch = sd.last_epoch
  self:_apply()
end

local function num(v, what, name)
  if type(v) ~= "number" then raise(("%s: %s must be a number, got %s"):format(name, what, type(v))) end
  return v
end

-- LambdaLR(opt, fn): lr = initial_lr * fn(epoch).
function optim.LambdaLR(opt, fn)
  return new_scheduler(opt, function(e, base) return base * fn(e) end, "LambdaLR")
end

-- StepLR(opt, step_size, gamma=0.1): lr = initial_lr * gamma^floor(epoch/step_size).
function optim.StepLR(opt, step_size, gamma)
  num(step_size, "step_size", "StepLR")
  gamma = gamma or 0.1
  return new_scheduler(opt, function(e, base) return base * gamma ^ math.floor(e / step_size) end, "StepLR")
end

-- ExponentialLR(opt, gamma): lr = initial_lr * gamma^epoch.
function optim.ExponentialLR(opt, gamma)
  num(gamma, "gamma", "ExponentialLR")
  return new_scheduler(opt, function(e, base) return base * gamma ^ e end, "ExponentialLR")
end

-- CosineAnnealingLR(opt, T_max, eta_min=0): eta_min + (initial_lr - eta_min) (1 + cos(pi epoch/T_max)) / 2.
function optim.CosineAnnealingLR(opt, t_max, eta_min)
  num(t_max, "T_max", "CosineAnnealingLR")
  eta_min = eta_min or 0
  return new_scheduler(opt, function(e, base)
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2
  end, "CosineAnnealingLR")
end

-- LinearLR(opt, start_factor=1/3, end_factor=1, total_iters=5): the factor
-- goes linearly from start_factor to end_factor over total_iters epochs.
local function linear_factor(e, s, f, n)
  if e >= n then return f end
  return s + (f - s) * e / n
end

function optim.LinearLR(opt, start_factor, end_factor, total_iters)
  local s, f, n = start_factor or 1 / 3, end_factor or 1, total_iters or 5
  return new_scheduler(opt, function(e, base) return base * linear_factor(e, s, f, n) end, "LinearLR")
end

-- WarmupLR(opt, warmup, after=nil, start_factor=0): linear warmup from
-- start_factor * initial_lr over `warmup` epochs, then the schedule `after`
-- (a function(epoch, base) -> lr, or a scheduler made on the same
-- optimizer) counted from the end of the warmup; constant without one.
function optim.WarmupLR(opt, warmup, after, start_factor)
  num(warmup, "warmup", "WarmupLR")
  local s = start_factor or 0
  local afn
  if type(after) == "function" then afn = after
  elseif getmetatable(after) == Scheduler then afn = after.factor
  elseif after == nil then afn = function(_, base) return base end
  else raise("WarmupLR: after must be a scheduler or a function") end
  return new_scheduler(opt, function(e, base)
    if e < warmup then return base * linear_factor(e, s, 1, warmup) end
    return afn(e - warmup, base)
  end, "WarmupLR")
end

optim.Optimizer = Optimizer
optim.Scheduler = Scheduler
return optim
