-- tide.models.nets - small reusable encoders and decoders for 28x28 images
-- (1 or 3 channels) and for flat vectors (labels, features).
--
--   local nets = require("tide.models.nets")
--   local enc = nets.encoder{kind = "mlp", shape = {1, 28, 28}, hidden = {512, 512}, latent = 20}
--   local mu, logvar = enc(x)            -- x [B,1,28,28] or [B,784] -> [B,20] each
--   local dec = nets.decoder{kind = "mlp", shape = {1, 28, 28}, hidden = {512, 512}, latent = 20}
--   local logits = dec(z)                -- z [..., 20] -> [..., 1, 28, 28]
--
-- Options of nets.encoder / nets.decoder:
--   kind    "mlp" (default) or "conv"
--   shape   the shape of one sample: {C, 28, 28} for images, {n} for vectors
--           (default {1, 28, 28}); "conv" needs {C, 28, 28}
--   latent  the latent size D (default 20)
--   hidden  hidden widths of "mlp" (default {512, 512})
--   width   the first channel count of "conv" (default 32: 32, 64, 128)
--   act     an activation class (default nn.ReLU)
--
-- "mlp": prod(shape) -> hidden... (act) -> mu, logvar (two Linear heads);
--        the decoder mirrors it: D -> hidden... (act) -> prod(shape).
-- "conv" (the PolyMNIST nets of MMVAE/MoPoE, padded to 4x4):
--   encoder  C x28x28 -conv3 s2-> w x14x14 -conv3 s2-> 2w x7x7
--            -conv3 s2-> 4w x4x4 -> flatten 64w -> mu, logvar
--   decoder  D -> Linear -> 4w x4x4 -convT3 s2-> 2w x7x7 -convT3 s2 op1-> w x14x14
--            -convT3 s2 op1-> C x28x28
-- Decoders return unnormalized outputs (logits or means): the likelihood is
-- the model's choice. A decoder takes any leading dims ([K,B,D] for K
-- samples) and gives [..., shape].
--
-- Grids (VQ-VAE): nets.grid_encoder{channels = C, dim = E, width = 32}
--   C x28x28 -conv4 s2-> w x14x14 -conv4 s2-> 2w x7x7 -conv3-> E x7x7,
-- and nets.grid_decoder{channels = C, dim = E, width = 32} back from
-- [B,E,7,7] to [B,C,28,28].
--
-- nets.mlp(sizes [, {act =, final_act =}]) is the plain Sequential
-- sizes[1] -> ... -> sizes[n] with act between layers.
--
-- Likelihoods: nets.log_likelihood(kind, out, x [, scale]) -> log p(x | z)
-- summed over one sample's dims, for decoder outputs out [..., B, shape]
-- against data x [B, shape] (the leading dims, e.g. K samples, broadcast):
--   "bernoulli"    out = logits:  sum x log s(out) + (1 - x) log(1 - s(out))
--   "gaussian"     out = mean:    sum log N(x; out, scale^2)
--   "laplace"      out = location: sum log Laplace(x; out, scale)
--   "categorical"  out = logits [..., B, C], x = 0-based ids [B] (or one-hot
--                  [B,C]): log softmax(out)[x]
-- scale is a number or a tensor broadcasting to out (default 1).
-- nets.mean(kind, out) is the mean of p(x | z): sigmoid(out) for
-- "bernoulli", softmax for "categorical", out itself otherwise.
local tide = require("tide")
local nn = tide.nn

local nets = {}

local function numel(shape)
  local n = 1
  for _, v in ipairs(shape) do n = n * v end
  return n
end

local function copy(t)
  local o = {}
  for i, v in ipairs(t) do o[i] = v end
  return o
end

function nets.mlp(sizes, opts)
  opts = opts or {}
  local act = opts.act or nn.ReLU
  local seq = nn.Sequential()
  for i = 1, #sizes - 1 do
    seq:add(nn.Linear(sizes[i], sizes[i + 1]))
    if i < #sizes - 1 or opts.final_act then seq:add(act()) end
  end
  return seq
end

local function check_image(shape, who)
  if #shape ~= 3 or shape[2] ~= 28 or shape[3] ~= 28 then
    error(("%s: kind 'conv' needs shape {C, 28, 28}, got {%s}"):format(who, table.concat(shape, ", ")), 3)
  end
end

local function defaults(o)
  o = o or {}
  return o.kind or "mlp", o.shape or {1, 28, 28}, o.latent or 20, o.hidden or {512, 512},
         o.width or 32, o.act or nn.ReLU
end

---------------------------------------------------------------- encoder

-- A Gaussian encoder: body(x) -> h [B,H], then mu = Wm h + bm, logvar = Wv h + bv.
local Encoder = nn.Module:extend("GaussianEncoder")
nets.Encoder = Encoder

function Encoder:init(opts)
  local kind, shape, latent, hidden, width, act = defaults(opts)
  self.kind, self.shape, self.latent = kind, copy(shape), latent
  local h
  if kind == "mlp" then
    local sizes = {numel(shape)}
    for _, v in ipairs(hidden) do sizes[#sizes + 1] = v end
    self.body = nets.mlp(sizes, {act = act, final_act = true})
    h = sizes[#sizes]
  elseif kind == "conv" then
    check_image(shape, "nets.encoder")
    local w = width
    self.body = nn.Sequential(
      nn.Conv2d(shape[1], w, 3, 2, 1), act(),          -- 14x14
      nn.Conv2d(w, 2 * w, 3, 2, 1), act(),             -- 7x7
      nn.Conv2d(2 * w, 4 * w, 3, 2, 1), act(),         -- 4x4
      nn.Flatten())
    h = 4 * w * 16
  else
    error("nets.encoder: kind must be 'mlp' or 'conv', got " .. tostring(kind), 2)
  end
  self.mu = nn.Linear(h, latent)
  self.logvar = nn.Linear(h, latent)
end

-- x [B, ...] with prod(...) = prod(shape) -> mu, logvar [B, D]
function Encoder:forward(x)
  local b = x:size(1)
  if self.kind == "mlp" then x = x:reshape(b, -1)
  else x = x:reshape(b, self.shape[1], 28, 28) end
  local h = self.body(x)
  return self.mu(h), self.logvar(h)
end

function nets.encoder(opts) return Encoder(opts) end

---------------------------------------------------------------- decoder

local Decoder = nn.Module:extend("Decoder")
nets.Decoder = Decoder

function Decoder:init(opts)
  local kind, shape, latent, hidden, width, act = defaults(opts)
  self.kind, self.shape, self.latent = kind, copy(shape), latent
  if kind == "mlp" then
    local sizes = {latent}
    for i = #hidden, 1, -1 do sizes[#sizes + 1] = hidden[i] end
    sizes[#sizes + 1] = numel(shape)
    self.body = nets.mlp(sizes, {act = act})
  elseif kind == "conv" then
    check_image(shape, "nets.decoder")
    local w = width
    self.body = nn.Sequential(
      nn.Linear(latent, 4 * w * 16), act(),
      nn.Unflatten(2, {4 * w, 4, 4}),
      nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, 1, 0), act(),   -- 7x7
      nn.ConvTranspose2d(2 * w, w, 3, 2, 1, 1), act(),       -- 14x14
      nn.ConvTranspose2d(w, shape[1], 3, 2, 1, 1))           -- 28x28
  else
    error("nets.decoder: kind must be 'mlp' or 'conv', got " .. tostring(kind), 2)
  end
end

-- z [..., D] -> [..., shape]
function Decoder:forward(z)
  local lead = z:shape()
  lead[#lead] = nil
  local out = self.body(z:reshape(-1, self.latent))
  for _, v in ipairs(self.shape) do lead[#lead + 1] = v end
  return out:reshape(lead)
end

function nets.decoder(opts) return Decoder(opts) end

---------------------------------------------------------------- grids (VQ-VAE)

function nets.grid_encoder(opts)
  opts = opts or {}
  local c, e, w, act = opts.channels or 1, opts.dim or 16, opts.width or 32, opts.act or nn.ReLU
  return nn.Sequential(
    nn.Conv2d(c, w, 4, 2, 1), act(),              -- 14x14
    nn.Conv2d(w, 2 * w, 4, 2, 1), act(),          -- 7x7
    nn.Conv2d(2 * w, e, 3, 1, 1))                 -- E x7x7
end

function nets.grid_decoder(opts)
  opts = opts or {}
  local c, e, w, act = opts.channels or 1, opts.dim or 16, opts.width or 32, opts.act or nn.ReLU
  return nn.Sequential(
    nn.Conv2d(e, 2 * w, 3, 1, 1), act(),
    nn.ConvTranspose2d(2 * w, w, 4, 2, 1), act(),  -- 14x14
    nn.ConvTranspose2d(w, c, 4, 2, 1))             -- 28x28
end

---------------------------------------------------------------- likelihoods

-- t [..., B, s1, ..., sn] -> sum over the last nd axes -> [..., B]
local function sum_last(t, nd)
  if nd == 0 then return t end
  local shape = t:shape()
  local keep = {}
  for i = 1, #shape - nd do keep[i] = shape[i] end
  keep[#keep + 1] = -1
  return t:reshape(keep):sum(-1)
end

function nets.log_likelihood(kind, out, x, scale)
  if kind == "categorical" and x.ndim == 2 then
    return (out:log_softmax(-1) * x):sum(-1)
  elseif kind == "categorical" then
    -- out [..., B, C], x [B] -> [..., B]
    local shape = out:shape()
    local c = shape[#shape]
    local rows = out.numel / c
    local ids = x:reshape(1, -1):expand(rows / x.numel, x.numel):reshape(-1)
    shape[#shape] = nil
    return (-tide.cross_entropy(out:reshape(rows, c), ids)):reshape(shape)
  end
  local nd = x.ndim - 1
  local lp
  if kind == "bernoulli" then
    lp = -tide.bce_with_logits(out, x)
  elseif kind == "gaussian" then
    lp = tide.normal_log_prob(x, out, scale or 1)
  elseif kind == "laplace" then
    lp = tide.laplace_log_prob(x, out, scale or 1)
  else
    error("nets.log_likelihood: unknown likelihood '" .. tostring(kind) ..
          "' (bernoulli, gaussian, laplace, categorical)", 2)
  end
  return sum_last(lp, nd)
end

function nets.mean(kind, out)
  if kind == "bernoulli" then return out:sigmoid() end
  if kind == "categorical" then return out:softmax(-1) end
  return out
end

return nets
