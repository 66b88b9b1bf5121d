-- tide.distributions - Normal, Laplace, Bernoulli, Categorical, and closed
-- form KL divergences between two of the same family.
--
--   local D = tide.distributions
--   local q = D.Normal(mu, (logvar * 0.5):exp())
--   local z = q:rsample()                      -- reparameterized
--   local kl = D.kl(q, D.Normal(0, 1)):sum()
--
-- Parameters are tensors or numbers (0-d tensors) that broadcast together;
-- every method is elementwise over the batch shape, as in torch.distributions.
-- Categorical holds the classes on the last axis; its values are 0-based
-- class ids (float tensors of whole numbers), as everywhere in tide.
local B = require("tide_ffi")
local W = B.wrappers
local C = B.C
local raise = B.raise

local D = {}
local LOG_2PI = math.log(2 * math.pi)

local function T(x, cls, what)
  if x == nil then raise(("%s: %s is missing"):format(cls, what)) end
  return B.H.tensor(x, cls, what)
end

local function shape_str(s) return "[" .. table.concat(s, ",") .. "]" end

-- The broadcast shape of two shapes (tables).
local function bshape_of(sa, sb)
  local n = math.max(#sa, #sb)
  local out = {}
  for i = 1, n do
    local x, y = sa[#sa - n + i] or 1, sb[#sb - n + i] or 1
    if x ~= y and x ~= 1 and y ~= 1 then
      raise(("distributions: shapes %s and %s do not broadcast"):format(shape_str(sa), shape_str(sb)))
    end
    out[i] = x == 1 and y or x
  end
  return out
end

local function bshape(a, b) return bshape_of(a:shape(), b:shape()) end

local function concat_shape(sample_shape, batch)
  local out = {}
  for _, v in ipairs(sample_shape or {}) do out[#out + 1] = v end
  for _, v in ipairs(batch) do out[#out + 1] = v end
  return out
end

local function detached(fn)
  local prev = C.td_set_grad_enabled(0)
  local ok, r = pcall(fn)
  C.td_set_grad_enabled(prev)
  if not ok then error(r, 0) end
  return W.detach(r)
end

local function class(name)
  local c = {__name = name}
  c.__index = c
  c.__tostring = function(self) return self:repr() end
  D[name] = c
  return c
end

---------------------------------------------------------------- Normal

-- Normal(loc, scale): scale is the standard deviation.
local Normal = class("Normal")

setmetatable(Normal, {__call = function(_, loc, scale)
  local self = setmetatable({}, Normal)
  self.loc, self.scale = T(loc, "Normal", "loc"), T(scale, "Normal", "scale")
  self.batch_shape = bshape(self.loc, self.scale)
  return self
end})

function Normal:mean() return self.loc end
function Normal:stddev() return self.scale end
function Normal:variance() return W.square(self.scale) end

-- loc + scale * eps, eps ~ N(0, 1) of shape sample_shape .. batch_shape.
function Normal:rsample(sample_shape)
  local eps = W.randn(concat_shape(sample_shape, self.batch_shape))
  return W.add(self.loc, W.mul(self.scale, eps))
end

function Normal:sample(sample_shape)
  return detached(function() return self:rsample(sample_shape) end)
end

function Normal:log_prob(x) return W.normal_log_prob(T(x, "Normal", "x"), self.loc, self.scale) end

-- 1/2 + 1/2 log(2 pi) + log scale
function Normal:entropy()
  return W.add_scalar(W.log(W.expand(self.scale, self.batch_shape)), 0.5 + 0.5 * LOG_2PI)
end

function Normal:repr() return ("Normal(loc: %s, scale: %s)"):format(B.shape_str(self.loc), B.shape_str(self.scale)) end

---------------------------------------------------------------- Laplace

local Laplace = class("Laplace")

setmetatable(Laplace, {__call = function(_, loc, scale)
  local self = setmetatable({}, Laplace)
  self.loc, self.scale = T(loc, "Laplace", "loc"), T(scale, "Laplace", "scale")
  self.batch_shape = bshape(self.loc, self.scale)
  return self
end})

function Laplace:mean() return self.loc end
function Laplace:stddev() return W.mul_scalar(self.scale, math.sqrt(2)) end
function Laplace:variance() return W.mul_scalar(W.square(self.scale), 2) end

-- loc - scale * sign(u) * log(1 - |u|), u ~ U(-1, 1) (as torch: u >= -1 + eps)
function Laplace:rsample(sample_shape)
  local shape = concat_shape(sample_shape, self.batch_shape)
  local u = detached(function()
    local r = W.add_scalar(W.mul_scalar(W.rand(shape), 2), -1)
    return W.clamp(r, -1 + 1.1920929e-07, 1)
  end)
  -- sign(u) * log1p(-|u|), with sign(0) = 0
  local sgn = W.sub(W.gt(u, 0), W.lt(u, 0))
  local e = W.mul(sgn, W.log1p(W.neg(W.abs(u))))
  return W.sub(self.loc, W.mul(self.scale, e))
end

function Laplace:sample(sample_shape)
  return detached(function() return self:rsample(sample_shape) end)
end

function Laplace:log_prob(x) return W.laplace_log_prob(T(x, "Laplace", "x"), self.loc, self.scale) end

-- 1 + log(2 scale)
function Laplace:entropy()
  return W.add_scalar(W.log(W.expand(self.scale, self.batch_shape)), 1 + math.log(2))
end

function Laplace:repr() return ("Laplace(loc: %s, scale: %s)"):format(B.shape_str(self.loc), B.shape_str(self.scale)) end

---------------------------------------------------------------- Bernoulli

-- Bernoulli(logits) or Bernoulli{probs = p} / Bernoulli{logits = l}.
local Bernoulli = class("Bernoulli")

setmetatable(Bernoulli, {__call = function(_, arg)
  local self = setmetatable({}, Bernoulli)
  if type(arg) == "table" and not B.is_tensor(arg) and (arg.probs ~= nil or arg.logits ~= nil) then
    if arg.logits ~= nil then
      self.logits = T(arg.logits, "Bernoulli", "logits")
    else
      local p = W.clamp(T(arg.probs, "Bernoulli", "probs"), 1.1920929e-07, 1 - 1.1920929e-07)
      self.logits = W.sub(W.log(p), W.log1p(W.neg(p)))
    end
  else
    self.logits = T(arg, "Bernoulli", "logits")
  end
  self.batch_shape = self.logits:shape()
  return self
end})

function Bernoulli:probs() return W.sigmoid(self.logits) end
function Bernoulli:mean() return W.sigmoid(self.logits) end
function Bernoulli:variance()
  local p = W.sigmoid(self.logits)
  return W.mul(p, W.add_scalar(W.neg(p), 1))
end

-- x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)) = -bce_with_logits(l, x)
function Bernoulli:log_prob(x) return W.neg(W.bce_with_logits(self.logits, T(x, "Bernoulli", "x"))) end

function Bernoulli:sample(sample_shape)
  return detached(function()
    local p = W.sigmoid(self.logits)
    if sample_shape and #sample_shape > 0 then p = W.expand(p, concat_shape(sample_shape, self.batch_shape)) end
    return W.bernoulli(p)
  end)
end

function Bernoulli:rsample()
  raise("Bernoulli: rsample is not defined (the samples are discrete); use sample")
end

-- bce_with_logits(l, sigmoid(l))
function Bernoulli:entropy() return W.bce_with_logits(self.logits, W.sigmoid(self.logits)) end

function Bernoulli:repr() return ("Bernoulli(logits: %s)"):format(B.shape_str(self.logits)) end

---------------------------------------------------------------- Categorical

-- Categorical(logits) or Categorical{probs = p} / {logits = l}: classes on
-- the last axis; logits are normalized (logits - logsumexp).
local Categorical = class("Categorical")

setmetatable(Categorical, {__call = function(_, arg)
  local self = setmetatable({}, Categorical)
  local l
  if type(arg) == "table" and not B.is_tensor(arg) and (arg.probs ~= nil or arg.logits ~= nil) then
    if arg.logits ~= nil then l = T(arg.logits, "Categorical", "logits")
    else l = W.log(W.clamp(T(arg.probs, "Categorical", "probs"), 1.1920929e-07, 1)) end
  else
    l = T(arg, "Categorical", "logits")
  end
  if l.ndim < 1 then raise("Categorical: logits must have a class axis, got a 0-d tensor") end
  self.logits = W.log_softmax(l, -1)
  local s = l:shape()
  self.num_classes = s[#s]
  s[#s] = nil
  self.batch_shape = s
  return self
end})

function Categorical:probs() return W.exp(self.logits) end

-- log p(x) for 0-based class ids x of the batch shape (broadcast).
function Categorical:log_prob(x)
  x = T(x, "Categorical", "x")
  local bs = bshape_of(x:shape(), self.batch_shape)
  local idx = W.expand(x, bs):unsqueeze(-1)
  local shape = concat_shape(bs, {self.num_classes})
  local lg = W.expand(self.logits, shape)
  return W.reshape(W.gather(lg, -1, idx), bs)
end

-- -sum_c p_c log p_c
function Categorical:entropy()
  local pl = W.mul(W.exp(self.logits), self.logits)
  return W.neg(W.sum(pl, -1, false))
end

-- 0-based class ids of shape sample_shape .. batch_shape.
function Categorical:sample(sample_shape)
  return detached(function()
    local ns = 1
    for _, v in ipairs(sample_shape or {}) do ns = ns * v end
    local p = W.reshape(W.exp(self.logits), -1, self.num_classes)
    local s = W.categorical(p, ns) -- [rows, ns]
    local out = W.transpose(s, 1, 2) -- [ns, rows]
    return W.reshape(W.contiguous(out), concat_shape(sample_shape, self.batch_shape))
  end)
end

function Categorical:mean() raise("Categorical: the mean is not defined; use probs()") end

function Categorical:repr() return ("Categorical(logits: %s)"):format(B.shape_str(self.logits)) end

---------------------------------------------------------------- KL

local KL = {}

KL[Normal] = {[Normal] = function(p, q) return W.kl_normal(p.loc, p.scale, q.loc, q.scale) end}

-- log(q.scale / p.scale) + |p.loc - q.loc| / q.scale + (p.scale / q.scale) exp(-|p.loc - q.loc| / p.scale) - 1
KL[Laplace] = {[Laplace] = function(p, q)
  local ratio = W.div(p.scale, q.scale)
  local d = W.abs(W.sub(p.loc, q.loc))
  local t3 = W.mul(ratio, W.exp(W.neg(W.div(d, p.scale))))
  return W.add_scalar(W.add(W.sub(W.div(d, q.scale), W.log(ratio)), t3), -1)
end}

-- p (softplus(-lq) - softplus(-lp)) + (1 - p) (softplus(lq) - softplus(lp)), p = sigmoid(lp)
KL[Bernoulli] = {[Bernoulli] = function(p, q)
  local pp = W.sigmoid(p.logits)
  local t1 = W.mul(pp, W.sub(W.softplus(W.neg(q.logits)), W.softplus(W.neg(p.logits))))
  local t2 = W.mul(W.add_scalar(W.neg(pp), 1), W.sub(W.softplus(q.logits), W.softplus(p.logits)))
  return W.add(t1, t2)
end}

-- sum_c p_c (log p_c - log q_c)
KL[Categorical] = {[Categorical] = function(p, q)
  return W.sum(W.mul(W.exp(p.logits), W.sub(p.logits, q.logits)), -1, false)
end}

-- KL(p || q), elementwise over the batch shape (summed over classes for Categorical).
function D.kl(p, q)
  local mp, mq = getmetatable(p), getmetatable(q)
  local f = KL[mp] and KL[mp][mq]
  if not f then
    raise(("kl: no closed form for %s || %s"):format(mp and mp.__name or type(p), mq and mq.__name or type(q)))
  end
  return f(p, q)
end
D.kl_divergence = D.kl

return D
