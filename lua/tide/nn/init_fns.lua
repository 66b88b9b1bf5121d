-- nn/init_fns.lua - tide.nn.init: in-place initializers on tide's seeded
-- generator (tide.manual_seed), with PyTorch's formulas. Each returns t.
local B = require("tide_ffi")
local W = B.wrappers
local C = B.C

local I = {}

local function fill_from(t, src)
  local prev = C.td_set_grad_enabled(0)
  W.copy_(t, src)
  C.td_set_grad_enabled(prev)
  return t
end

function I.uniform_(t, a, b)
  a, b = a or 0, b or 1
  return fill_from(t, W.add_scalar(W.mul_scalar(W.rand(t:shape()), b - a), a))
end

function I.normal_(t, mean, std)
  mean, std = mean or 0, std or 1
  return fill_from(t, W.add_scalar(W.mul_scalar(W.randn(t:shape()), std), mean))
end

function I.constant_(t, v)
  W.fill(t, v)
  return t
end

function I.zeros_(t) return I.constant_(t, 0) end
function I.ones_(t) return I.constant_(t, 1) end

-- fan_in, fan_out of a weight as torch.nn.init computes them: dim 2 and
-- dim 1 times the receptive field (the product of dims 3..).
function I.fans(t)
  local s = t:shape()
  if #s < 2 then B.raise("nn.init: fan in and fan out need at least 2 dims, got " .. B.shape_str(t)) end
  local rf = 1
  for i = 3, #s do rf = rf * s[i] end
  return s[2] * rf, s[1] * rf
end

-- kaiming_uniform_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
-- bound = gain * sqrt(3 / fan), gain = sqrt(2 / (1 + a^2)).
function I.kaiming_uniform_(t, a, mode)
  a = a or 0
  local fin, fout = I.fans(t)
  local fan = mode == "fan_out" and fout or fin
  local bound = math.sqrt(2 / (1 + a * a)) * math.sqrt(3 / fan)
  return I.uniform_(t, -bound, bound)
end

function I.xavier_uniform_(t, gain)
  local fin, fout = I.fans(t)
  local bound = (gain or 1) * math.sqrt(6 / (fin + fout))
  return I.uniform_(t, -bound, bound)
end

function I.xavier_normal_(t, gain)
  local fin, fout = I.fans(t)
  return I.normal_(t, 0, (gain or 1) * math.sqrt(2 / (fin + fout)))
end

return I
