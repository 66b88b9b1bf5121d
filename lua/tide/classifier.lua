-- tide.classifier - small classifiers per modality, trained with tide and
-- saved as checkpoints: the judges of cross-modal coherence and the feature
-- extractors of the Fréchet distance (metrics.fid).
--
--   local C = require("tide.classifier")
--   local clf = C.new{kind = "image", channels = 1}          -- or kind = "text"
--   C.fit(clf, x_train, y_train, {epochs = 3, batch = 128, lr = 1e-3, seed = 1})
--   print(C.accuracy(clf, x_test, y_test))
--   clf:save("out/classifiers/fashion.safetensors")          -- kind and sizes go in the metadata
--   local clf2 = C.load("out/classifiers/fashion.safetensors")
--   local ids = clf2:predict(x)                              -- [B] 0-based classes
--   local f = C.features(clf2, x)                            -- [N,F] penultimate features, batched
--
-- "image" (C x28x28): conv3 s2 (w) -> 14x14 -> conv3 s2 (2w) -> 7x7 ->
--   Linear(49*2w, F) -> ReLU = features -> Linear(F, classes); w = 32, F = 128.
-- "text" (token ids [B,T], tide.models.text): Embedding -> GRU -> the
--   hidden state at EOS -> Linear(H, F) -> ReLU = features -> Linear(F, classes).
local tide = require("tide")
local nn = tide.nn

local C = {}

---------------------------------------------------------------- networks

local Image = nn.Module:extend("ImageClassifier")
C.ImageClassifier = Image

function Image:init(opts)
  local c, w, f, k = opts.channels or 1, opts.width or 32, opts.features or 128, opts.classes or 10
  self.config = {class = "tide.classifier", kind = "image", channels = c, width = w, features = f, classes = k}
  self.body = nn.Sequential(
    nn.Conv2d(c, w, 3, 2, 1), nn.ReLU(),              -- 14x14
    nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),          -- 7x7
    nn.Flatten(),
    nn.Linear(2 * w * 49, f), nn.ReLU())
  self.head = nn.Linear(f, k)
end

function Image:features(x)
  return self.body(x:reshape(x:size(1), self.config.channels, 28, 28))
end

local Text = nn.Module:extend("TextClassifier")
C.TextClassifier = Text

function Text:init(opts)
  local text = require("tide.models.text")
  local v, e, h = opts.vocab or text.VOCAB, opts.embed or 16, opts.hidden or 64
  local f, k = opts.features or 64, opts.classes or 10
  self.config = {class = "tide.classifier", kind = "text", vocab = v, embed = e, hidden = h, features = f, classes = k}
  self.embed = nn.Embedding(v, e)
  self.gru = nn.GRU(e, h, {batch_first = true})
  self.proj = nn.Sequential(nn.Linear(h, f), nn.ReLU())
  self.head = nn.Linear(f, k)
end

function Text:features(ids)
  local text = require("tide.models.text")
  local b, h = ids:size(1), self.config.hidden
  local out = self.gru(self.embed(ids))
  -- the EOS step; a generated sequence without EOS uses its last step
  local last = text.mask(ids):sum(2):clamp(1, ids:size(2)) - 1
  local idx = last:reshape(b, 1, 1):expand(b, 1, h):contiguous()
  return self.proj(out:gather(2, idx):reshape(b, h))
end

local function forward(self, x) return self.head(self:features(x)) end
local function predict(self, x)
  return tide.no_grad(function() return forward(self, x):argmax(2) end)
end
Image.forward, Text.forward = forward, forward
Image.predict, Text.predict = predict, predict

-- C.new{kind = "image" | "text", ...sizes}
function C.new(opts)
  opts = opts or {}
  local kind = opts.kind or "image"
  if kind == "image" then return Image(opts) end
  if kind == "text" then return Text(opts) end
  error("classifier.new: kind must be 'image' or 'text', got " .. tostring(kind), 2)
end

---------------------------------------------------------------- batched use

local function batched(n, batch, fn)
  local out = {}
  for start = 1, n, batch do out[#out + 1] = fn(start, math.min(batch, n - start + 1)) end
  return #out == 1 and out[1] or tide.cat(out, 1)
end

-- penultimate features [N,F] of x [N, ...], in batches, no gradient
function C.features(clf, x, opts)
  local batch = (opts and opts.batch) or 500
  return tide.no_grad(function()
    return batched(x:size(1), batch, function(s, b) return clf:features(x:narrow(1, s, b)) end)
  end)
end

function C.predict(clf, x, opts)
  local batch = (opts and opts.batch) or 500
  return batched(x:size(1), batch, function(s, b) return clf:predict(x:narrow(1, s, b)) end)
end

-- class probabilities [N, classes] (softmax of the logits), in batches
function C.probs(clf, x, opts)
  local batch = (opts and opts.batch) or 500
  return tide.no_grad(function()
    return batched(x:size(1), batch, function(s, b) return clf:forward(x:narrow(1, s, b)):softmax(2) end)
  end)
end

function C.accuracy(clf, x, y, opts)
  clf:eval()
  return C.predict(clf, x, opts):eq(y:reshape(-1)):mean():item()
end

-- Mini-batch Adam on the cross-entropy. x [N, ...], y [N] 0-based ids.
-- opts: epochs (3), batch (128), lr (1e-3), seed (1), progress (false),
-- val = {x, y} (accuracy printed per epoch with progress), transform
-- (a function applied to each training batch's x: augmentation).
-- -> {loss = last epoch's mean loss, epochs = n}
function C.fit(clf, x, y, opts)
  opts = opts or {}
  local data = tide.data.tensors{x, labels = y:reshape(-1)}
  local loader = tide.data.loader(data, {batch_size = opts.batch or 128, shuffle = true,
                                         seed = opts.seed or 1, labels = true})
  tide.manual_seed(opts.seed or 1)
  local opt = tide.optim.Adam(clf, {lr = opts.lr or 1e-3})
  local mean = 0
  for epoch = 1, opts.epochs or 3 do
    clf:train()
    local sum, steps = 0, 0
    for b in loader:iter() do
      opt:zero_grad()
      local xb = opts.transform and opts.transform(b.x[1]) or b.x[1]
      local loss = tide.cross_entropy(clf(xb), b.y):mean()
      loss:backward()
      opt:step()
      sum, steps = sum + loss:item(), steps + 1
    end
    mean = sum / steps
    if opts.progress then
      local msg = ("classifier epoch %d: loss %.4f"):format(epoch, mean)
      if opts.val then msg = msg .. (" val acc %.4f"):format(C.accuracy(clf, opts.val[1], opts.val[2])) end
      io.stderr:write(msg, "\n")
    end
  end
  clf:eval()
  return {loss = mean, epochs = opts.epochs or 3}
end

---------------------------------------------------------------- files

-- clf:save(path) is Module:save: the config (kind and sizes) goes in the
-- metadata, so C.load (tide.load_model) rebuilds it.
function C.save(clf, path, metadata) return clf:save(path, {metadata = metadata}) end

function C.load(path) return tide.serialize.load_model(path) end

-- C(config) = C.new(config): the constructor tide.load_model calls
return setmetatable(C, {__call = function(_, opts) return C.new(opts) end})
