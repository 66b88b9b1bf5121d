-- nn/layers.lua - the layers of tide.nn: containers, Linear, Conv2d,
-- ConvTranspose2d, GroupNorm, Embedding, Dropout, activations,
-- Flatten/Unflatten. Parameter layouts and default initializations follow
-- PyTorch, so its state_dict values load as they are.
local B = require("tide_ffi")
local W = B.wrappers
local raise = B.raise
local Mod = require("tide.nn.module")
local I = require("tide.nn.init_fns")

local Module = Mod.Module
local L = {}

local function bool_opt(v, default)
  if v == nil then return default end
  return v and true or false
end

local function whole(v, what, cls)
  if type(v) ~= "number" or v ~= math.floor(v) or v < 0 then
    raise(("%s: %s must be a whole number >= 0, got %s"):format(cls, what, tostring(v)))
  end
  return v
end

-- uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a weight and its bias: what
-- kaiming_uniform(a = sqrt(5)) and PyTorch's bias rule both come to.
local function default_init(self, wshape, bias_n, fan_in)
  self:register_parameter("weight", wshape, function(t) I.kaiming_uniform_(t, math.sqrt(5)) end)
  if bias_n then
    local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    self:register_parameter("bias", {bias_n}, function(t) I.uniform_(t, -bound, bound) end)
  end
end

---------------------------------------------------------------- containers

-- Sequential(m1, m2, ...): children named "1", "2", ...; seq[i] is the i-th.
local Sequential = Module:extend("Sequential")
L.Sequential = Sequential

function Sequential:init(...)
  local n = select("#", ...)
  local first = ...
  local list = (n == 1 and type(first) == "table" and not Mod.is_module(first)) and first or {...}
  for i = 1, #list do self:add(list[i]) end
end

function Sequential:add(m)
  self:add_module(tostring(#self._mod_order + 1), m)
  return self
end

function Sequential:forward(x, ...)
  local mods, order = self._mods, self._mod_order
  for i = 1, #order do
    if i == 1 then x = mods[order[i]](x, ...) else x = mods[order[i]](x) end
  end
  return x
end

-- ModuleList(m1, m2, ...): a list of children ("1", "2", ...) without a forward.
local ModuleList = Module:extend("ModuleList")
L.ModuleList = ModuleList
ModuleList.init = Sequential.init
ModuleList.add = Sequential.add
function ModuleList:forward() raise("ModuleList has no forward: call its elements") end

local Identity = Module:extend("Identity")
L.Identity = Identity
function Identity:forward(x) return x end

---------------------------------------------------------------- Linear

-- Linear(in, out, bias=true): y = x W^T + b; W [out, in], b [out].
local Linear = Module:extend("Linear")
L.Linear = Linear

function Linear:init(nin, nout, bias)
  whole(nin, "in_features", "Linear")
  whole(nout, "out_features", "Linear")
  self.in_features, self.out_features = nin, nout
  default_init(self, {nout, nin}, bool_opt(bias, true) and nout or nil, nin)
end

function Linear:forward(x)
  return W.linear(x, self.weight, self.bias)
end

function Linear:extra_repr()
  return ("%d -> %d%s"):format(self.in_features, self.out_features, self.bias and "" or ", no bias")
end

---------------------------------------------------------------- convolutions

-- Conv2d(in, out, k, stride=1, padding=0, bias=true), NCHW, square kernel;
-- W [out, in, k, k].
local Conv2d = Module:extend("Conv2d")
L.Conv2d = Conv2d

function Conv2d:init(cin, cout, k, stride, padding, bias)
  whole(cin, "in_channels", "Conv2d")
  whole(cout, "out_channels", "Conv2d")
  whole(k, "kernel_size", "Conv2d")
  self.in_channels, self.out_channels, self.kernel_size = cin, cout, k
  self.stride, self.padding = whole(stride or 1, "stride", "Conv2d"), whole(padding or 0, "padding", "Conv2d")
  default_init(self, {cout, cin, k, k}, bool_opt(bias, true) and cout or nil, cin * k * k)
end

function Conv2d:forward(x)
  return W.conv2d(x, self.weight, self.bias, self.stride, self.padding)
end

function Conv2d:extra_repr()
  return ("%d -> %d, k=%d, stride=%d, padding=%d%s"):format(self.in_channels, self.out_channels,
    self.kernel_size, self.stride, self.padding, self.bias and "" or ", no bias")
end

-- ConvTranspose2d(in, out, k, stride=1, padding=0, output_padding=0,
-- bias=true); W [in, out, k, k] (PyTorch's layout; its fan_in is out*k*k).
local ConvTranspose2d = Module:extend("ConvTranspose2d")
L.ConvTranspose2d = ConvTranspose2d

function ConvTranspose2d:init(cin, cout, k, stride, padding, output_padding, bias)
  local n = "ConvTranspose2d"
  whole(cin, "in_channels", n)
  whole(cout, "out_channels", n)
  whole(k, "kernel_size", n)
  self.in_channels, self.out_channels, self.kernel_size = cin, cout, k
  self.stride, self.padding = whole(stride or 1, "stride", n), whole(padding or 0, "padding", n)
  self.output_padding = whole(output_padding or 0, "output_padding", n)
  default_init(self, {cin, cout, k, k}, bool_opt(bias, true) and cout or nil, cout * k * k)
end

function ConvTranspose2d:forward(x)
  return W.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)
end

function ConvTranspose2d:extra_repr()
  return ("%d -> %d, k=%d, stride=%d, padding=%d, output_padding=%d%s"):format(self.in_channels,
    self.out_channels, self.kernel_size, self.stride, self.padding, self.output_padding,
    self.bias and "" or ", no bias")
end

---------------------------------------------------------------- normalization, embedding

-- GroupNorm(groups, channels, eps=1e-5, affine=true): weight ones, bias zeros.
local GroupNorm = Module:extend("GroupNorm")
L.GroupNorm = GroupNorm

function GroupNorm:init(groups, channels, eps, affine)
  whole(groups, "num_groups", "GroupNorm")
  whole(channels, "num_channels", "GroupNorm")
  if groups == 0 or channels % groups ~= 0 then
    raise(("GroupNorm: %d channels do not split into %d groups"):format(channels, groups))
  end
  self.num_groups, self.num_channels, self.eps = groups, channels, eps or 1e-5
  if bool_opt(affine, true) then
    self:register_parameter("weight", {channels}, I.ones_)
    self:register_parameter("bias", {channels}, I.zeros_)
  end
end

function GroupNorm:forward(x)
  return W.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
end

function GroupNorm:extra_repr()
  return ("%d groups, %d channels, eps=%g"):format(self.num_groups, self.num_channels, self.eps)
end

-- Embedding(n, dim): weight [n, dim] ~ N(0, 1); indices are 0-based whole
-- numbers of any shape -> [..., dim].
local Embedding = Module:extend("Embedding")
L.Embedding = Embedding

function Embedding:init(n, dim)
  whole(n, "num_embeddings", "Embedding")
  whole(dim, "embedding_dim", "Embedding")
  self.num_embeddings, self.embedding_dim = n, dim
  self:register_parameter("weight", {n, dim}, I.normal_)
end

function Embedding:forward(idx)
  idx = B.H.tensor(idx, "Embedding", "indices")
  if idx.ndim == 1 then return W.index_select(self.weight, 1, idx) end
  local shape = idx:shape()
  shape[#shape + 1] = self.embedding_dim
  return W.reshape(W.index_select(self.weight, 1, W.reshape(idx, -1)), shape)
end

function Embedding:extra_repr() return ("%d, %d"):format(self.num_embeddings, self.embedding_dim) end

---------------------------------------------------------------- dropout

-- Dropout(p=0.5): in training, zeroes each element with probability p and
-- scales the rest by 1/(1-p) (a td_bernoulli mask); identity in eval mode.
local Dropout = Module:extend("Dropout")
L.Dropout = Dropout

function Dropout:init(p)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then raise("Dropout: p must be in [0, 1], got " .. tostring(p)) end
  self.p = p
end

function Dropout:forward(x)
  if not self.training or self.p == 0 then return x end
  if self.p == 1 then return W.mul_scalar(x, 0) end
  local keep = 1 - self.p
  local mask = W.bernoulli(W.full(x:shape(), keep))
  return W.mul(x, W.mul_scalar(mask, 1 / keep))
end

function Dropout:extra_repr() return ("p=%g"):format(self.p) end

---------------------------------------------------------------- activations

local function activation(name, fn)
  local cls = Module:extend(name)
  cls.forward = function(_, x) return fn(x) end
  L[name] = cls
  return cls
end

activation("ReLU", W.relu)
activation("Sigmoid", W.sigmoid)
activation("Tanh", W.tanh)
activation("SiLU", W.silu)
activation("GELU", W.gelu)
activation("Softplus", W.softplus)

-- LeakyReLU(slope=0.01)
local LeakyReLU = Module:extend("LeakyReLU")
L.LeakyReLU = LeakyReLU
function LeakyReLU:init(slope) self.negative_slope = slope or 0.01 end
function LeakyReLU:forward(x) return W.leaky_relu(x, self.negative_slope) end
function LeakyReLU:extra_repr() return ("negative_slope=%g"):format(self.negative_slope) end

---------------------------------------------------------------- reshaping

local function norm_axis(a, nd, what)
  local z = a > 0 and a or nd + 1 + a
  if a == 0 or z < 1 or z > nd then
    raise(("%s: axis %d is out of range for %d dims (axes are 1-based)"):format(what, a, nd))
  end
  return z
end

-- Flatten(start=2, stop=-1): merges axes start..stop (1-based, inclusive),
-- so [B, C, H, W] -> [B, C*H*W] by default.
local Flatten = Module:extend("Flatten")
L.Flatten = Flatten
function Flatten:init(start, stop) self.start_dim, self.end_dim = start or 2, stop or -1 end

function Flatten:forward(x)
  local s = x:shape()
  local a, b = norm_axis(self.start_dim, #s, "Flatten"), norm_axis(self.end_dim, #s, "Flatten")
  local out, n = {}, 1
  for i = 1, a - 1 do out[#out + 1] = s[i] end
  for i = a, b do n = n * s[i] end
  out[#out + 1] = n
  for i = b + 1, #s do out[#out + 1] = s[i] end
  return W.reshape(x, out)
end

function Flatten:extra_repr() return ("%d, %d"):format(self.start_dim, self.end_dim) end

-- Unflatten(axis, sizes): splits one axis into sizes, e.g. Unflatten(2, {1, 28, 28}).
local Unflatten = Module:extend("Unflatten")
L.Unflatten = Unflatten
function Unflatten:init(axis, sizes)
  if type(sizes) ~= "table" then raise("Unflatten(axis, sizes): sizes must be a table") end
  self.dim, self.sizes = axis, sizes
end

function Unflatten:forward(x)
  local s = x:shape()
  local a = norm_axis(self.dim, #s, "Unflatten")
  local out = {}
  for i = 1, a - 1 do out[#out + 1] = s[i] end
  for _, v in ipairs(self.sizes) do out[#out + 1] = v end
  for i = a + 1, #s do out[#out + 1] = s[i] end
  return W.reshape(x, out)
end

function Unflatten:extra_repr() return ("%d, {%s}"):format(self.dim, table.concat(self.sizes, ", ")) end

return L
