-- tide.models.multimodal - what MVAE, MMVAE, MoPoE and the gated-fusion VAE
-- share: modalities (an encoder, a decoder, a likelihood, a weight lambda),
-- the likelihoods, KL annealing, small MLP experts, and the generation
-- interface used by the metrics.
--
-- A modality is a table
--   {name = "image", encoder = module, decoder = module,
--    likelihood = "bernoulli" | "categorical" | "normal" | "laplace" | function,
--    lambda = 1, scale = (normal: 1, laplace: 0.75)}
-- encoder(x [B, ...]) -> mu, logvar [B,D]; decoder(z [N,D]) -> the
-- likelihood's parameters [N, ...] (the shape of one sample of x after N).
-- Likelihoods, log p(x | params) summed over the dims of one sample:
--   bernoulli    params = logits, x in [0,1]
--   categorical  params = logits [.., C], x one-hot [B,C] (or 0-based ids [B])
--   normal       params = mean, fixed standard deviation `scale` (alias "gaussian")
--   laplace      params = location, fixed scale `scale`
--   a function   f(params, x) -> [..., B] (the text modality of
--                tide.models.text: its decoder passes z through as params)
-- params may carry leading sample dims: [K, B, ...] against x [B, ...].
--
-- Every model built on Base answers (for tide.metrics and the examples):
--   model:posterior(xs [, mask])   -> mu, logvar [B,D] of q(z | present modalities)
--   model:reconstruct(xs [, mask]) -> {means of every modality} from the present ones
--   model:generate(n)              -> {means of every modality} from z ~ N(0, I)
--   model:decode_mean(m, z)        -> the mean of p(x_m | z) for z [N,D]
--   model:log_weights(xs, K, cond, target) -> log importance weights [K,B]
--   model:posterior_sample(xs, mask) (mixtures) -> z [B,D]
-- (the interface is written out in tide/metrics/coherence.lua).
local tide = require("tide")
local nn = tide.nn
local X = require("tide.models.experts")

local MM = {}
local LOG_2PI = math.log(2 * math.pi)

---------------------------------------------------------------- likelihoods

-- sums the last n axes of t
local function sum_last(t, n)
  if n <= 0 then return t end
  local axes, nd = {}, t.ndim
  for i = nd - n + 1, nd do axes[#axes + 1] = i end
  return t:sum(axes)
end
MM.sum_last = sum_last

local function event_dims(x) return x.ndim - 1 end

local LIK = {}

function LIK.bernoulli(logits, x)
  return -sum_last(logits:bce_with_logits(x), event_dims(x))
end

function LIK.categorical(logits, x)
  if x.ndim == 1 then x = tide.one_hot(x, logits:size(-1)) end
  return sum_last(logits:log_softmax(-1) * x, 1)
end

function LIK.normal(mean, x, scale)
  scale = scale or 1
  local lp = (x - mean):square() * (-0.5 / (scale * scale)) - (math.log(scale) + 0.5 * LOG_2PI)
  return sum_last(lp, event_dims(x))
end

function LIK.laplace(loc, x, scale)
  scale = scale or 0.75
  local lp = (x - loc):abs() * (-1 / scale) - math.log(2 * scale)
  return sum_last(lp, event_dims(x))
end
LIK.gaussian = LIK.normal   -- the name tide.models.nets uses
MM.likelihoods = LIK

local MEAN = {
  bernoulli = function(p) return p:sigmoid() end,
  categorical = function(p) return p:softmax(-1) end,
  normal = function(p) return p end,
  gaussian = function(p) return p end,
  laplace = function(p) return p end,
}

---------------------------------------------------------------- annealing

-- beta at (1-based) step t: linear from beta/steps to beta over `steps`
-- steps (Wu & Goodman's annealing factor), then beta.
function MM.anneal(t, steps, beta)
  beta = beta or 1
  if not steps or steps <= 0 then return beta end
  return beta * math.min(1, t / steps)
end

---------------------------------------------------------------- MLP experts

-- An MLP expert: x [B, ...] -> flatten -> hidden layers (ReLU) -> mu, logvar [B,D].
local MLPEncoder = nn.Module:extend("MLPEncoder")
MM.MLPEncoder = MLPEncoder

function MLPEncoder:init(nin, hidden, zdim)
  local layers, d = {nn.Flatten()}, nin
  for _, h in ipairs(hidden) do
    layers[#layers + 1] = nn.Linear(d, h)
    layers[#layers + 1] = nn.ReLU()
    d = h
  end
  self.body = nn.Sequential(layers)
  self.mu = nn.Linear(d, zdim)
  self.logvar = nn.Linear(d, zdim)
end

function MLPEncoder:forward(x)
  local h = self.body(x)
  return self.mu(h), self.logvar(h)
end

-- An MLP decoder: z [N,D] -> hidden layers (ReLU) -> [N, out] (reshaped to `shape` when given).
function MM.mlp_decoder(zdim, hidden, nout, shape)
  local layers, d = {}, zdim
  for _, h in ipairs(hidden) do
    layers[#layers + 1] = nn.Linear(d, h)
    layers[#layers + 1] = nn.ReLU()
    d = h
  end
  layers[#layers + 1] = nn.Linear(d, nout)
  if shape then layers[#layers + 1] = nn.Unflatten(2, shape) end
  return nn.Sequential(layers)
end

---------------------------------------------------------------- the base class

local Base = nn.Module:extend("MultimodalVAE")
MM.Base = Base

local KNOWN = {name = true, encoder = true, decoder = true, likelihood = true, lambda = true, scale = true}

-- mods: list of modalities (see the header); opts.zdim is the latent size.
function Base:init_modalities(mods, opts)
  opts = opts or {}
  if type(mods) ~= "table" or #mods < 2 then error(self.__name .. ": expects a list of at least 2 modalities", 3) end
  local encs, decs = {}, {}
  self.names, self.lambdas, self.liks, self.scales = {}, {}, {}, {}
  for m, spec in ipairs(mods) do
    for k in pairs(spec) do
      if not KNOWN[k] then error(("%s: modality %d: unknown field '%s'"):format(self.__name, m, tostring(k)), 3) end
    end
    if not spec.encoder or not spec.decoder then
      error(("%s: modality %d needs an encoder and a decoder"):format(self.__name, m), 3)
    end
    encs[m], decs[m] = spec.encoder, spec.decoder
    self.names[m] = spec.name or ("x" .. m)
    self.lambdas[m] = spec.lambda or 1
    local lik = spec.likelihood or "bernoulli"
    if type(lik) == "string" and not LIK[lik] then
      error(("%s: modality %d: unknown likelihood '%s'"):format(self.__name, m, lik), 3)
    end
    self.liks[m] = lik
    self.scales[m] = spec.scale
  end
  self.nmod = #mods
  self.encoders = nn.ModuleList(encs)
  self.decoders = nn.ModuleList(decs)
  self.zdim = opts.zdim
  self.beta = opts.beta or 1
end

-- The encoders of every modality: mu, logvar [M,B,D]. A missing modality
-- still goes through its encoder (its input is whatever the data holds,
-- e.g. zeros); the mask decides what it counts for.
function Base:encode(xs)
  local mus, lvs = {}, {}
  for m = 1, self.nmod do
    mus[m], lvs[m] = self.encoders[m](xs[m])
  end
  return X.stack(mus), X.stack(lvs)
end

-- z [..., D] -> the parameters of p(x_m | z) [..., event...]
function Base:decode(m, z)
  local lead = z:shape()
  local d = table.remove(lead)
  local out = self.decoders[m](z:reshape(-1, d))
  local s = out:shape()
  for i = 2, #s do lead[#lead + 1] = s[i] end
  return out:reshape(lead)
end

-- log p(x_m | params) -> params' leading dims [..., B]
function Base:log_lik(m, params, x)
  local lik = self.liks[m]
  if type(lik) == "function" then return lik(params, x) end
  return LIK[lik](params, x, self.scales[m])
end

function Base:decode_mean(m, z)
  local p = self:decode(m, z)
  local lik = self.liks[m]
  if type(lik) == "function" then return p end
  return MEAN[lik](p)
end

-- {means of every modality} from z [N,D]
function Base:decode_all(z)
  local out = {}
  for m = 1, self.nmod do out[m] = self:decode_mean(m, z) end
  return out
end

function Base:generate(n)
  return tide.no_grad(function() return self:decode_all(tide.randn(n, self.zdim)) end)
end

-- Reconstructions (all modalities) from the posterior mean given the present ones.
function Base:reconstruct(xs, mask)
  return tide.no_grad(function()
    local mu = self:posterior(xs, mask)
    return self:decode_all(mu)
  end)
end

-- A mask [M,B] with modality m alone present (for conditional generation).
function Base:only(m, b)
  local t = tide.zeros(self.nmod, b)
  t:select(1, m):fill(1)
  return t
end

-- per-sample objective [B] -> loss = -mean (a 0-d tensor)
function MM.neg_mean(obj) return -obj:mean() end

return MM
