-- tide.models.polymnist_nets - the encoders and decoders of MMVAE+ / CMVAE
-- on PolyMNIST-like data (M modalities of C x H x W images), in two sizes.
--
--   local P = require("tide.models.polymnist_nets")
--   local enc, dec = P.light{modalities = 5, zdim = 32, wdim = 32}
--   local enc, dec = P.paper{modalities = 5, zdim = 32, wdim = 32}
--
-- Both sizes share one interface, so a model never asks which it has:
--   enc(x)   x [M,B,C,H,W] (or [M,B,C*H*W])
--            -> mu_z, scale_z [M,B,zdim], mu_w, scale_w [M,B,wdim]
--            (modality m's encoder reads x[m]; scales = softplus(.) + 1e-6)
--   dec(zw)  zw [M,N,zdim+wdim] -> means [M,N,C*H*W] (decoder m reads zw[m])
--
-- light: per modality, an MLP encoder C*H*W -> h -> h -> heads (one trunk
-- for z and w) and an MLP decoder zdim+wdim -> h -> h -> C*H*W (the
-- Laplace mean, no squashing); the M modalities' layers run as one batched matmul each
-- (GroupedLinear), so a step is a handful of large GEMMs.
--
-- paper: the PolyMNIST architecture of MMVAE+ / CMVAE (Palumbo et al.),
-- per modality: an encoder of two branches (z and w), each
--   conv3x3 C->64, block 64->64, avgpool(3,2,1), block 64->128,
--   avgpool(3,2,1), block 128->256, leaky ReLU, flatten (256 x 7 x 7),
--   linear heads for the mean and the scale (softplus);
-- a decoder
--   linear -> 256 x 7 x 7, block 256->128, up x2, block 128->64, up x2,
--   block 64->64, leaky ReLU, conv3x3 64->C (the Laplace mean, no squashing);
-- a block (Mescheder et al.'s ResnetBlock, as the authors' code uses):
--   out = shortcut(x) + 0.1 * conv3x3(lrelu(conv3x3(lrelu(x))))
-- with leaky ReLU 0.2, hidden width min(cin, cout), a 1x1 conv (no bias)
-- shortcut when cin ~= cout.
local tide = require("tide")
local nn = tide.nn

local P = {}

local SLOPE = 0.2
local EPS = 1e-6

local function numel(shape)
  local n = 1
  for _, v in ipairs(shape) do n = n * v end
  return n
end

---------------------------------------------------------------- GroupedLinear

-- GroupedLinear(G, in, out): G independent Linear layers at once,
-- x [G,N,in] -> x W_g + b_g [G,N,out]; W [G,in,out] (stored transposed, so
-- the GEMM and its backward read and write it in place), b [G,1,out], each
-- initialized as nn.Linear's (U(+-1/sqrt(in))).
local GroupedLinear = nn.Module:extend("GroupedLinear")
P.GroupedLinear = GroupedLinear

function GroupedLinear:init(groups, nin, nout)
  self.groups, self.in_features, self.out_features = groups, nin, nout
  local bound = 1 / math.sqrt(nin)
  local function init(t) nn.init.uniform_(t, -bound, bound) end
  self:register_parameter("weight", {groups, nin, nout}, init)
  self:register_parameter("bias", {groups, 1, nout}, init)
end

-- one GEMM per group adding into the bias rows
function GroupedLinear:forward(x)
  return tide.matmul_add(x, self.weight, self.bias)
end

function GroupedLinear:extra_repr()
  return ("%d x (%d -> %d)"):format(self.groups, self.in_features, self.out_features)
end

-- softplus(x) + eps: the scale of a posterior from an unconstrained head.
local function positive(x) return x:softplus() + EPS end
P.positive = positive

-- The posterior scales [..., d] from an unconstrained head, by kind:
--   "softplus"  softplus(h) + eps, each dimension on its own
--   "softmax"   d softmax(h) + eps (the MMVAE+ authors' code): the scales of
--               one latent average 1, so some dimensions can be made precise
--               only by leaving others wide
local SCALE_HEADS = {
  softplus = positive,
  softmax = function(h) return h:softmax(-1) * h:size(h:dim()) + EPS end,
}

function P.check_scale_head(kind)
  if not SCALE_HEADS[kind or "softplus"] then
    error("polymnist_nets: scale_head must be 'softplus' or 'softmax', got " .. tostring(kind), 3)
  end
  return kind or "softplus"
end

local function scales(kind, h) return SCALE_HEADS[kind](h) end

-- The light encoders' one head [M,B,2(dz+dw)] -> mean_z, scale_z, mean_w, scale_w.
local function split_heads(o, dz, dw, kind)
  return o:narrow(3, 1, dz), scales(kind, o:narrow(3, dz + 1, dz)),
         o:narrow(3, 2 * dz + 1, dw), scales(kind, o:narrow(3, 2 * dz + dw + 1, dw))
end

---------------------------------------------------------------- light

local LightEncoder = nn.Module:extend("LightEncoder")
P.LightEncoder = LightEncoder

function LightEncoder:init(m, nin, hidden, zdim, wdim, scale_head)
  self.nin, self.zdim, self.wdim, self.scale_head = nin, zdim, wdim, scale_head
  self.l1 = GroupedLinear(m, nin, hidden)
  self.l2 = GroupedLinear(m, hidden, hidden)
  self.head = GroupedLinear(m, hidden, 2 * (zdim + wdim))
end

function LightEncoder:forward(x)
  local s = x:shape()
  x = x:reshape(s[1], s[2], self.nin)
  local h = self.l2(self.l1(x):leaky_relu(SLOPE)):leaky_relu(SLOPE)
  return split_heads(self.head(h), self.zdim, self.wdim, self.scale_head)
end

local LightDecoder = nn.Module:extend("LightDecoder")
P.LightDecoder = LightDecoder

function LightDecoder:init(m, nin, hidden, nout)
  self.l1 = GroupedLinear(m, nin, hidden)
  self.l2 = GroupedLinear(m, hidden, hidden)
  self.out = GroupedLinear(m, hidden, nout)
end

function LightDecoder:forward(zw)
  local h = self.l2(self.l1(zw):leaky_relu(SLOPE)):leaky_relu(SLOPE)
  return self.out(h)
end

-- A small conv front end per modality, then the grouped MLP trunk:
-- conv4x4/2 C->32, conv4x4/2 32->64 (leaky ReLU), flatten, h, heads.
local ConvEncoder = nn.Module:extend("LightConvEncoder")
P.LightConvEncoder = ConvEncoder

function ConvEncoder:init(m, shape, hidden, zdim, wdim, scale_head)
  self.shape, self.zdim, self.wdim, self.scale_head = shape, zdim, wdim, scale_head
  self.convs = nn.ModuleList()
  for _ = 1, m do
    self.convs:add(nn.Sequential(nn.Conv2d(shape[1], 32, 4, 2, 1), nn.LeakyReLU(SLOPE),
                                 nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(SLOPE)))
  end
  self.nflat = 64 * math.floor(shape[2] / 4) * math.floor(shape[3] / 4)
  self.l1 = GroupedLinear(m, self.nflat, hidden)
  self.head = GroupedLinear(m, hidden, 2 * (zdim + wdim))
end

function ConvEncoder:forward(x)
  local s = self.shape
  local m, b = x:size(1), x:size(2)
  local hs = {}
  for i = 1, m do hs[i] = self.convs[i](x:select(1, i):reshape(b, s[1], s[2], s[3])):reshape(b, self.nflat) end
  return split_heads(self.head(self.l1(tide.stack(hs, 1)):leaky_relu(SLOPE)), self.zdim, self.wdim, self.scale_head)
end

function P.light_conv(o)
  local shape = o.shape or {3, 28, 28}
  local h = o.hidden or 256
  return ConvEncoder(o.modalities, shape, h, o.zdim, o.wdim, P.check_scale_head(o.scale_head)), LightDecoder(o.modalities, o.zdim + o.wdim, h, numel(shape))
end

-- light{modalities, zdim, wdim, hidden = 256, shape = {3,28,28}} -> encoder, decoder
function P.light(o)
  local shape = o.shape or {3, 28, 28}
  local n, h = numel(shape), o.hidden or 256
  return LightEncoder(o.modalities, n, h, o.zdim, o.wdim, P.check_scale_head(o.scale_head)), LightDecoder(o.modalities, o.zdim + o.wdim, h, n)
end

---------------------------------------------------------------- paper

local Block = nn.Module:extend("ResBlock")
P.ResBlock = Block

function Block:init(cin, cout)
  local hid = math.min(cin, cout)
  self.cin, self.cout = cin, cout
  self.conv_0 = nn.Conv2d(cin, hid, 3, 1, 1)
  self.conv_1 = nn.Conv2d(hid, cout, 3, 1, 1)
  if cin ~= cout then self.shortcut = nn.Conv2d(cin, cout, 1, 1, 0, false) end
end

function Block:forward(x)
  local dx = self.conv_1(self.conv_0(x:leaky_relu(SLOPE)):leaky_relu(SLOPE))
  local xs = self.shortcut and self.shortcut(x) or x
  return xs + dx * 0.1
end

function Block:extra_repr() return ("%d -> %d"):format(self.cin, self.cout) end

-- One branch of the encoder: [B,C,H,W] -> mean, scale [B,d].
local Branch = nn.Module:extend("EncoderBranch")
P.EncoderBranch = Branch

function Branch:init(c, h, w, d, scale_head)
  self.scale_head = scale_head
  self.conv = nn.Conv2d(c, 64, 3, 1, 1)
  self.b1 = Block(64, 64)
  self.b2 = Block(64, 128)
  self.b3 = Block(128, 256)
  self.hw = math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)
  self.mu = nn.Linear(256 * self.hw, d)
  self.scale = nn.Linear(256 * self.hw, d)
end

function Branch:forward(x)
  local h = self.b1(self.conv(x))
  h = self.b2(h:avg_pool2d(3, 2, 1))
  h = self.b3(h:avg_pool2d(3, 2, 1))
  h = h:leaky_relu(SLOPE):reshape(x:size(1), -1)
  return self.mu(h), scales(self.scale_head, self.scale(h))
end

local PaperEncoder = nn.Module:extend("PaperEncoder")
P.PaperEncoder = PaperEncoder

function PaperEncoder:init(m, shape, zdim, wdim, scale_head)
  self.shape = shape
  self.z = nn.ModuleList()
  self.w = nn.ModuleList()
  for _ = 1, m do
    self.z:add(Branch(shape[1], shape[2], shape[3], zdim, scale_head))
    self.w:add(Branch(shape[1], shape[2], shape[3], wdim, scale_head))
  end
end

function PaperEncoder:forward(x)
  local s = self.shape
  local m, b = x:size(1), x:size(2)
  local mz, sz, mw, sw = {}, {}, {}, {}
  for i = 1, m do
    local xi = x:select(1, i):reshape(b, s[1], s[2], s[3])
    mz[i], sz[i] = self.z[i](xi)
    mw[i], sw[i] = self.w[i](xi)
  end
  return tide.stack(mz, 1), tide.stack(sz, 1), tide.stack(mw, 1), tide.stack(sw, 1)
end

local Decoder = nn.Module:extend("PaperDecoder1")
P.PaperDecoderOne = Decoder

function Decoder:init(shape, din)
  self.shape = shape
  self.h7, self.w7 = math.ceil(math.ceil(shape[2] / 2) / 2), math.ceil(math.ceil(shape[3] / 2) / 2)
  self.fc = nn.Linear(din, 256 * self.h7 * self.w7)
  self.b1 = Block(256, 128)
  self.b2 = Block(128, 64)
  self.b3 = Block(64, 64)
  self.conv = nn.Conv2d(64, shape[1], 3, 1, 1)
end

-- zw [N,din] -> [N, C*H*W]
function Decoder:forward(zw)
  local n = zw:size(1)
  local h = self.fc(zw):reshape(n, 256, self.h7, self.w7)
  h = self.b1(h):upsample_nearest2d(2)
  h = self.b2(h):upsample_nearest2d(2)
  h = self.conv(self.b3(h):leaky_relu(SLOPE))
  return h:reshape(n, -1)
end

local PaperDecoder = nn.Module:extend("PaperDecoder")
P.PaperDecoder = PaperDecoder

function PaperDecoder:init(m, shape, din)
  self.dec = nn.ModuleList()
  for _ = 1, m do self.dec:add(Decoder(shape, din)) end
end

function PaperDecoder:forward(zw)
  local outs = {}
  for i = 1, zw:size(1) do outs[i] = self.dec[i](zw:select(1, i)) end
  return tide.stack(outs, 1)
end

-- paper{modalities, zdim, wdim, shape = {3,28,28}} -> encoder, decoder
-- (H and W must halve twice to the 7 x 7 of the heads: 28 x 28)
function P.paper(o)
  local shape = o.shape or {3, 28, 28}
  return PaperEncoder(o.modalities, shape, o.zdim, o.wdim, P.check_scale_head(o.scale_head)), PaperDecoder(o.modalities, shape, o.zdim + o.wdim)
end

-- make(arch, opts): "light" or "paper".
function P.make(arch, o)
  local f = P[arch or "light"]
  if type(f) ~= "function" or (arch ~= "light" and arch ~= "paper" and arch ~= "light_conv") then
    error("polymnist_nets: arch must be 'light', 'light_conv' or 'paper', got " .. tostring(arch), 2)
  end
  return f(o)
end

return P
