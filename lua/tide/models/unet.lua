-- tide.models.unet - the noise-prediction network of a DDPM (Ho et al. 2020,
-- after PixelCNN++/Wide ResNet), sized for two CPU cores, on the engine's
-- fused UNet kernels (group_norm_silu, attention, upsample_conv3x3,
-- timestep_embedding).
--
--   local UNet = require("tide.models.unet")
--   local net = UNet{in_channels = 1, out_channels = 1, cond_channels = 0,
--                    base = 32, mults = {1, 2}, groups = 8, temb = 128}
--   local eps = net(x_t, t)            -- x_t [B,C,28,28], t [B] (steps, 0-based)
--   local eps = net(x_t, t, cond)      -- cond [B,cond_channels,28,28] (D-CMVAE)
--
-- Layout for 28x28 with mults {1, 2} (28 -> 14 -> 7):
--   conv3x3(C+Cc -> b)
--   28: Res(b -> b)          -> skip s0, down (stride-2 conv3x3) -> 14
--   14: Res(b -> 2b)         -> skip s1, down                    -> 7
--    7: Res(2b -> 2b), self-attention (one head over the 49 pixels), Res(2b -> 2b)
--   14: upconv(2b -> 2b), Res([up, s1] -> 2b)
--   28: upconv(2b -> 2b), Res([up, s0] -> b)
--   silu(GN(.)) -> conv3x3(b -> C)
-- With base 32 that is 583,713 parameters for one channel (plus 288 per
-- conditioning channel).
--
-- Res(cin -> cout), with e = Linear(silu(temb)) [B,cout] the block's share of
-- the time embedding:
--   h = conv3x3(silu(GN(x)))
--   h = conv3x3(silu(GN(h + e)))          (one fused group_norm_silu with temb = e)
--   y = skip(x) + h                        (skip: 1x1 conv when cin ~= cout)
local tide = require("tide")
local nn = tide.nn

local M = {}

---------------------------------------------------------------- blocks

-- GN + SiLU with its own affine parameters, fused: silu(GN(x + temb)).
local GNS = nn.Module:extend("GroupNormSiLU")
M.GroupNormSiLU = GNS

function GNS:init(groups, channels)
  self.groups = math.min(groups, channels)
  while channels % self.groups ~= 0 do self.groups = self.groups - 1 end
  self:register_parameter("weight", {channels}, nn.init.ones_)
  self:register_parameter("bias", {channels}, nn.init.zeros_)
end

function GNS:forward(x, temb)
  return x:group_norm_silu(self.groups, self.weight, self.bias, temb, 1e-5)
end

local Res = nn.Module:extend("ResBlock")
M.ResBlock = Res

function Res:init(cin, cout, tdim, groups)
  self.norm1 = GNS(groups, cin)
  self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
  self.temb = nn.Linear(tdim, cout)
  self.norm2 = GNS(groups, cout)
  self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
  if cin ~= cout then self.skip = nn.Conv2d(cin, cout, 1) end
end

-- x [B,cin,H,W], st = silu(temb) [B,tdim]
function Res:forward(x, st)
  local h = self.conv1(self.norm1(x))
  h = self.conv2(self.norm2(h, self.temb(st)))
  return (self.skip and self.skip(x) or x) + h
end

-- Self-attention over the pixels, one head:
--   q, k, v = W_qkv GN(x);  y = x + W_o softmax(q k^T / sqrt(C)) v
local Attn = nn.Module:extend("SelfAttention")
M.SelfAttention = Attn

function Attn:init(c, groups)
  self.c = c
  self.norm = nn.GroupNorm(math.min(groups, c), c)
  self.qkv = nn.Conv2d(c, 3 * c, 1)
  self.proj = nn.Conv2d(c, c, 1)
end

function Attn:forward(x)
  local s = x:shape()
  local b, c, hw = s[1], s[2], s[3] * s[4]
  -- [B,3C,H,W] -> [B,3,C,HW] -> [3,B,HW,C]
  local qkv = self.qkv(self.norm(x)):reshape(b, 3, c, hw):permute(2, 1, 4, 3):contiguous()
  local q, k, v = qkv:select(1, 1), qkv:select(1, 2), qkv:select(1, 3)
  local a = q:attention(k, v)                                  -- [B,HW,C]
  a = a:transpose(2, 3):reshape(b, c, s[3], s[4])
  return x + self.proj(a)
end

-- Nearest 2x up-sampling then conv3x3, fused (td_upsample_conv3x3).
local Up = nn.Module:extend("UpConv")
M.UpConv = Up

function Up:init(cin, cout)
  local bound = 1 / math.sqrt(cin * 9)
  self:register_parameter("weight", {cout, cin, 3, 3}, function(t) nn.init.kaiming_uniform_(t, math.sqrt(5)) end)
  self:register_parameter("bias", {cout}, function(t) nn.init.uniform_(t, -bound, bound) end)
end

function Up:forward(x) return x:upsample_conv3x3(self.weight, self.bias) end

---------------------------------------------------------------- the UNet

local UNet = nn.Module:extend("UNet")
M.UNet = UNet

function UNet:init(opts)
  opts = opts or {}
  local C = opts.in_channels or 1
  local Cc = opts.cond_channels or 0
  local b = opts.base or 32
  local mults = opts.mults or {1, 2}
  local g = opts.groups or 8
  local td = opts.temb or 4 * b
  self.in_channels, self.cond_channels, self.out_channels = C, Cc, opts.out_channels or C
  self.tdim, self.temb_in = td, opts.temb_in or b
  self.time1 = nn.Linear(self.temb_in, td)
  self.time2 = nn.Linear(td, td)
  self.inc = nn.Conv2d(C + Cc, b, 3, 1, 1)
  self.downs, self.downconv = nn.ModuleList(), nn.ModuleList()
  local chans, c = {}, b
  for i, m in ipairs(mults) do
    self.downs:add(Res(c, b * m, td, g))
    c = b * m
    chans[i] = c
    self.downconv:add(nn.Conv2d(c, c, 3, 2, 1))
  end
  self.mid1 = Res(c, c, td, g)
  self.attn = Attn(c, g)
  self.mid2 = Res(c, c, td, g)
  self.ups, self.upconv = nn.ModuleList(), nn.ModuleList()
  for i = #mults, 1, -1 do
    self.upconv:add(Up(c, c))
    local cout = b * mults[i]
    self.ups:add(Res(c + chans[i], cout, td, g))
    c = cout
  end
  self.outnorm = GNS(g, c)
  self.outc = nn.Conv2d(c, self.out_channels, 3, 1, 1)
  self.levels = #mults
end

-- x [B,C,H,W] (H, W divisible by 2^levels), t [B] steps (float tensor or a
-- table of numbers), cond [B,Cc,H,W] or nil -> eps [B,C_out,H,W]
function UNet:forward(x, t, cond)
  if type(t) == "table" then t = tide.tensor(t) end
  if self.cond_channels > 0 then
    if not cond then error("UNet: this network takes " .. self.cond_channels .. " conditioning channels", 2) end
    x = tide.cat({x, cond}, 2)
  end
  -- temb = Linear(silu(Linear(sinusoid(t)))); each block reads silu(temb)
  local st = self.time2(self.time1(t:timestep_embedding(self.temb_in, 10000)):silu()):silu()
  local h = self.inc(x)
  local skips = {}
  for i = 1, self.levels do
    h = self.downs[i](h, st)
    skips[i] = h
    h = self.downconv[i](h)
  end
  h = self.mid2(self.attn(self.mid1(h, st)), st)
  for j = 1, self.levels do
    local i = self.levels - j + 1
    h = self.upconv[j](h)
    h = self.ups[j](tide.cat({h, skips[i]}, 2), st)
  end
  return self.outc(self.outnorm(h))
end

M.new = UNet
return setmetatable(M, {__call = function(_, ...) return UNet(...) end})
