-- tide.models.text - the text modality: a Fashion-MNIST class name ("ankle
-- boot") as a character sequence, a GRU encoder to a Gaussian posterior and
-- a GRU language-model decoder conditioned on z.
--
--   local text = require("tide.models.text")
--   local ids = text.from_labels(batch.y)            -- [B,T] token ids (0-based)
--   local enc = text.Encoder{latent = 20}            -- ids -> mu, logvar [B,D]
--   local dec = text.Decoder{latent = 20}
--   local ll = dec:log_prob(z, ids)                  -- z [..., B, D] -> log p(text|z) [..., B]
--   local gen = dec:generate(z)                      -- greedy; {sample = true, temperature =}
--   print(text.decode(gen)[1])                       -- "ankle boot"
--
-- Tokens: PAD = 0, BOS = 1, EOS = 2, then the alphabet "a".."z", " ", "-",
-- "/" (ids 3..31). A sequence is the characters, EOS, then PAD up to
-- T = text.MAX_LEN (12: "t-shirt/top" and its EOS).
--
-- Encoder: e_t = Embed(c_t); h_t = GRU(e_t, h_{t-1}); mu, logvar = heads
-- of h at the EOS step (the PAD steps after it are ignored).
-- Decoder (teacher forcing): h_0 = tanh(W z + b); input at step t is
-- [Embed(c_{t-1}); z] with c_0 = BOS; p(c_t | c_<t, z) = softmax(V h_t + b);
--   log p(text | z) = sum_{t <= EOS} log p(c_t | c_<t, z)
local tide = require("tide")
local nn = tide.nn

local text = {}

text.CLASS_NAMES = {"t-shirt/top", "trouser", "pullover", "dress", "coat",
                    "sandal", "shirt", "sneaker", "bag", "ankle boot"}
text.PAD, text.BOS, text.EOS = 0, 1, 2
text.ALPHABET = "abcdefghijklmnopqrstuvwxyz -/"
text.VOCAB = 3 + #text.ALPHABET
text.MAX_LEN = 12

local CHAR_ID = {}
for i = 1, #text.ALPHABET do CHAR_ID[text.ALPHABET:sub(i, i)] = i + 2 end

---------------------------------------------------------------- strings <-> ids

-- strings -> ids [N,T] (characters, EOS, PAD...)
function text.encode(strings, T)
  T = T or text.MAX_LEN
  local n = #strings
  local t = tide.zeros(n, T)
  for i, s in ipairs(strings) do
    s = s:lower()
    if #s + 1 > T then error(("text.encode: '%s' needs %d steps, T = %d"):format(s, #s + 1, T), 2) end
    for j = 1, #s do
      local id = CHAR_ID[s:sub(j, j)]
      if not id then error(("text.encode: character '%s' of '%s' is not in the alphabet"):format(s:sub(j, j), s), 2) end
      t.data[(i - 1) * T + j - 1] = id
    end
    t.data[(i - 1) * T + #s] = text.EOS
  end
  return t
end

-- ids [N,T] -> N strings (up to the first EOS; PAD and BOS are skipped)
function text.decode(ids)
  ids = ids:contiguous()
  local n, T = ids:size(1), ids:size(2)
  local out = {}
  for i = 1, n do
    local chars = {}
    for j = 1, T do
      local id = ids.data[(i - 1) * T + j - 1]
      if id == text.EOS then break end
      if id >= 3 then chars[#chars + 1] = text.ALPHABET:sub(id - 2, id - 2) end
    end
    out[i] = table.concat(chars)
  end
  return out
end

local class_table
-- The class names as ids [10, MAX_LEN] (made once).
function text.class_ids()
  class_table = class_table or text.encode(text.CLASS_NAMES)
  return class_table
end

-- labels [B] (0-based class ids) -> ids [B, MAX_LEN]
function text.from_labels(y)
  return text.class_ids():index_select(1, y:reshape(-1))
end

-- 1 where a token counts (up to and including EOS), 0 on PAD: [B,T]
function text.mask(ids) return ids:ne(text.PAD) end

-- Each character (not EOS or PAD) replaced with probability p by a random
-- one: the augmentation that makes a text classifier robust to the
-- near-misses of generated text. ids [B,T] -> [B,T]
function text.corrupt(ids, p)
  local n = #text.ALPHABET
  local hit = tide.rand(ids:shape()):lt(p) * ids:ge(3)
  local rnd = tide.categorical(tide.full(n, 1 / n), ids.numel):reshape(ids:shape()) + 3
  return tide.where(hit, rnd, ids)
end

---------------------------------------------------------------- encoder

local Encoder = nn.Module:extend("TextEncoder")
text.Encoder = Encoder

-- Encoder{latent = 20, embed = 16, hidden = 64, vocab = text.VOCAB}
function Encoder:init(opts)
  opts = opts or {}
  local v, e, h, d = opts.vocab or text.VOCAB, opts.embed or 16, opts.hidden or 64, opts.latent or 20
  self.hidden = h
  self.embed = nn.Embedding(v, e)
  self.gru = nn.GRU(e, h, {batch_first = true})
  self.mu = nn.Linear(h, d)
  self.logvar = nn.Linear(h, d)
end

-- ids [B,T] -> mu, logvar [B,D]
function Encoder:forward(ids)
  local b = ids:size(1)
  local out = self.gru(self.embed(ids))                          -- [B,T,H]
  local last = text.mask(ids):sum(2) - 1                         -- [B] EOS step (0-based)
  local idx = last:reshape(b, 1, 1):expand(b, 1, self.hidden):contiguous()
  local h = out:gather(2, idx):reshape(b, self.hidden)
  return self.mu(h), self.logvar(h)
end

---------------------------------------------------------------- decoder

local Decoder = nn.Module:extend("TextDecoder")
text.Decoder = Decoder

-- Decoder{latent = 20, embed = 16, hidden = 64, vocab = text.VOCAB, max_len = 12}
function Decoder:init(opts)
  opts = opts or {}
  local v, e, h, d = opts.vocab or text.VOCAB, opts.embed or 16, opts.hidden or 64, opts.latent or 20
  self.vocab, self.latent, self.hidden, self.max_len = v, d, h, opts.max_len or text.MAX_LEN
  self.embed = nn.Embedding(v, e)
  self.init_h = nn.Linear(d, h)
  self.gru = nn.GRU(e + d, h, {batch_first = true})
  self.out = nn.Linear(h, v)
end

-- z [N,D] -> h_0 [1,N,H]
function Decoder:h0(z)
  return self.init_h(z):tanh():unsqueeze(1)
end

-- Teacher forcing: z [..., B, D], ids [B,T] -> logits [..., B, T, V]
function Decoder:forward(z, ids)
  local lead = z:shape()
  lead[#lead] = nil
  local zf = z:reshape(-1, self.latent)
  local n, b, T = zf:size(1), ids:size(1), ids:size(2)
  local prev = tide.cat({tide.full(b, 1, text.BOS), ids:narrow(2, 1, T - 1)}, 2)   -- [B,T]
  if n ~= b then prev = prev:reshape(1, b, T):expand(n / b, b, T):reshape(n, T) end
  local inp = tide.cat({self.embed(prev), zf:unsqueeze(2):expand(n, T, self.latent)}, 3)
  local out = self.gru(inp, self:h0(zf))                          -- [N,T,H]
  lead[#lead + 1] = T
  lead[#lead + 1] = self.vocab
  return self.out(out):reshape(lead)
end

-- log p(text | z) = sum over the steps up to EOS of log softmax(logits)[c_t]:
-- logits [..., B, T, V], ids [B,T] -> [..., B]
function text.log_likelihood(logits, ids)
  local shape = logits:shape()
  local v = shape[#shape]
  local rows = logits.numel / v
  local reps = rows / ids.numel
  local flat = ids:reshape(1, -1):expand(reps, ids.numel):reshape(-1)
  local ll = -tide.cross_entropy(logits:reshape(rows, v), flat)
  shape[#shape] = nil                                             -- [..., B, T]
  return (ll:reshape(shape) * text.mask(ids)):sum(-1)
end

-- z [..., B, D], ids [B,T] -> [..., B]
function Decoder:log_prob(z, ids) return text.log_likelihood(self:forward(z, ids), ids) end

-- Decoding one step at a time from z [B,D]: greedy (default) or sampled
-- ({sample = true, temperature = 1}). After EOS the sequence is PAD.
-- -> ids [B, max_len]
function Decoder:generate(z, opts)
  opts = opts or {}
  return tide.no_grad(function()
    local b = z:size(1)
    local h = self:h0(z)
    local tok = tide.full(b, text.BOS)
    local done = tide.zeros(b)
    local zs = z:unsqueeze(2)                                     -- [B,1,D]
    local steps = {}
    for t = 1, self.max_len do
      local inp = tide.cat({self.embed(tok:reshape(b, 1)), zs}, 3)
      local out
      out, h = self.gru(inp, h)
      local logits = self.out(out:reshape(b, self.hidden))        -- [B,V]
      if opts.sample then
        tok = tide.categorical((logits / (opts.temperature or 1)):softmax(-1), 1):reshape(b)
      else
        tok = logits:argmax(2)
      end
      tok = tide.where(done, tide.scalar(text.PAD), tok)
      done = tide.maximum(done, tok:eq(text.EOS))
      steps[t] = tok
    end
    return tide.stack(steps, 2)
  end)
end

---------------------------------------------------------------- as a modality

-- The decoder as tide.models.multimodal wants one: head(z [N,D]) passes z
-- through as the likelihood's "parameters" (a text decoder needs the target
-- ids for teacher forcing), the likelihood function runs the GRU, and
-- head:generate(z) decodes ids (used by the coherence metrics).
local Head = nn.Module:extend("TextHead")
text.Head = Head

function Head:init(opts) self.lm = Decoder(opts) end
function Head:forward(z) return z end
function Head:log_prob(z, ids) return self.lm:log_prob(z, ids) end
function Head:generate(z, opts) return self.lm:generate(z, opts) end

-- A modality spec for tide.models.multimodal: {name = "text", encoder,
-- decoder = Head, likelihood = function(z, ids) -> log p(ids | z)}.
-- The data of the modality is ids [B,T] (text.from_labels(y)).
-- opts: latent (required), embed, hidden, lambda, name.
function text.modality(opts)
  opts = opts or {}
  local head = Head(opts)
  return {
    name = opts.name or "text",
    encoder = Encoder(opts),
    decoder = head,
    likelihood = function(z, ids) return head:log_prob(z, ids) end,
    lambda = opts.lambda,
  }
end

return text
