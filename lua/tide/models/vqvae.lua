-- tide.models.vqvae - the vector-quantized VAE (van den Oord et al. 2017).
--
--   local VQVAE = require("tide.models.vqvae")
--   local model = VQVAE{channels = 1, dim = 16, codes = 128, beta = 0.25, ema = false}
--   local loss, stats = model:loss(x)        -- x [B,C,28,28] in [0,1]
--   local u = VQVAE.usage(model:codes(x_test), model.num_codes)   -- perplexity, dead codes
--
-- Encoder to a grid: z_e(x) [B,E,7,7] (tide.models.nets.grid_encoder); each
-- of the 49 vectors is replaced by its nearest code of the codebook e [K,E]:
--   k* = argmin_k ||z_e - e_k||^2     (td_kmeans_assign: the GEMM trick)
--   z_q = e_{k*}
-- The decoder sees z_e + sg(z_q - z_e) (straight-through: its value is z_q,
-- its gradient goes to z_e unchanged). The loss, means over elements:
--   L = rec(x, dec(z_q)) + ||sg(z_e) - z_q||^2 + beta ||z_e - sg(z_q)||^2
-- rec is the mean squared error ("gaussian", default) or the mean binary
-- cross-entropy on logits ("bernoulli").
-- With ema = true the codebook is not learned by its loss term but moved to
-- exponential moving averages of its assigned vectors (decay gamma = 0.99):
--   N_k <- gamma N_k + (1 - gamma) n_k,   m_k <- gamma m_k + (1 - gamma) sum_{i: k*_i = k} z_e,i
--   e_k = m_k / N~_k,  N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j  (Laplace smoothing)
-- The counts start at 1 (as if each code had one vector), so a code that
-- gets none keeps its place instead of being divided by ~eps.
--
-- Two common remedies against codebook collapse, as options:
--   init = "data" (default; "uniform" is the paper's U(-1/K, 1/K)): on the
--     first training batch the codebook is seeded from the encoder's
--     vectors by k-means++ (td_kmeans_pp_init), at their scale;
--   restart = true (default false): every `restart_every` (100) training
--     steps, codes that got no vector in that window are moved to random
--     vectors of the current batch.
-- The state (EMA counts and sums, the init flag, the restart window) is in
-- model:buffers(): pass it to tide.train.fit's `extra` to checkpoint it. The
-- codebook stays a parameter (checkpointed); under EMA its gradient is
-- zero, so Adam without weight decay leaves it alone.
local tide = require("tide")
local nn = tide.nn
local nets = require("tide.models.nets")

local VQVAE = nn.Module:extend("VQVAE")

function VQVAE:init(opts)
  opts = opts or {}
  self.channels = opts.channels or 1
  self.dim = opts.dim or 16
  self.num_codes = opts.codes or 128
  self.beta = opts.beta or 0.25
  self.likelihood = opts.likelihood or "gaussian"
  self.ema = opts.ema and true or false
  self.decay = opts.decay or 0.99
  self.ema_eps = opts.ema_eps or 1e-5
  self.init_mode = opts.init or "data"
  self.restart = opts.restart and true or false
  self.restart_every = opts.restart_every or 100
  local g = {channels = self.channels, dim = self.dim, width = opts.width, act = opts.act}
  self.enc = nets.grid_encoder(g)
  self.dec = nets.grid_decoder(g)
  local k = self.num_codes
  self:register_parameter("codebook", {k, self.dim}, function(t) nn.init.uniform_(t, -1 / k, 1 / k) end)
  if self.ema then
    self.ema_count = tide.ones(k)
    self.ema_sum = self.codebook:detach():clone()
  end
  self.init_done = tide.full(1, self.init_mode == "data" and 0 or 1)
  self.window = tide.zeros(k + 1)           -- usage counts of the restart window, then its step count
end

-- The state to checkpoint besides the parameters.
function VQVAE:buffers()
  local b = {vq_init_done = self.init_done, vq_window = self.window}
  if self.ema then
    b.ema_count, b.ema_sum = self.ema_count, self.ema_sum
  end
  return b
end

-- Seeds the codebook from rows [N,E] (k-means++), once.
function VQVAE:init_codebook(rows)
  local k = self.num_codes
  if rows:size(1) < k then return end
  tide.no_grad(function()
    self.codebook:copy_(tide.kmeans_pp_init(rows:detach():contiguous(), k))
    if self.ema then
      self.ema_sum:copy_(self.codebook)
      self.ema_count:fill(1)
    end
  end)
  self.init_done:fill(1)
end

-- Counts usage over the window; at its end moves unused codes to random rows.
function VQVAE:restart_dead(rows, ids)
  tide.no_grad(function()
    local k = self.num_codes
    local counts = self.window:narrow(1, 1, k)
    counts:copy_(counts + tide.one_hot(ids, k):sum(1))
    local steps = self.window:narrow(1, k + 1, 1)
    steps:copy_(steps + 1)
    if steps:item() < self.restart_every then return end
    local dead = counts:eq(0):reshape(k, 1)                     -- [K,1]
    local n = rows:size(1)
    self.window:fill(0)
    if n < k then return end
    local pick = tide.randperm(n):narrow(1, 1, k)
    local cand = rows:detach():index_select(1, pick)             -- [K,E]
    self.codebook:copy_(tide.where(dead, cand, self.codebook))
    if self.ema then
      self.ema_sum:copy_(tide.where(dead, cand, self.ema_sum))
      self.ema_count:copy_(tide.where(dead:reshape(k), tide.ones(k), self.ema_count))
    end
  end)
end

-- [B,E,H,W] <-> [B*H*W, E]
local function to_rows(z)
  return z:permute(1, 3, 4, 2):contiguous():reshape(-1, z:size(2)), z:shape()
end
local function to_grid(rows, shape)
  return rows:reshape(shape[1], shape[3], shape[4], shape[2]):permute(1, 4, 2, 3)
end

-- Nearest codes of z_e rows [N,E] -> ids [N] (0-based, no gradient)
function VQVAE:assign(rows)
  return tide.no_grad(function() return tide.kmeans_assign(rows:detach(), self.codebook:detach(), nil) end)
end

-- z_e [B,E,H,W] -> z_st (straight-through, value z_q) [B,E,H,W], ids [N],
-- codebook loss, commitment loss (0-d, the commitment not yet times beta)
function VQVAE:quantize(ze)
  local rows, shape = to_rows(ze)
  if self.training and self.init_done:item() == 0 then self:init_codebook(rows) end
  local ids = self:assign(rows)
  local zq = self.codebook:index_select(1, ids)                 -- [N,E]
  local codebook_loss = (zq - rows:detach()):square():mean()
  local commitment = (rows - zq:detach()):square():mean()
  local st = rows + (zq - rows):detach()
  return to_grid(st, shape):contiguous(), ids, codebook_loss, commitment, rows
end

-- One EMA step of the codebook from rows [N,E] assigned to ids [N].
function VQVAE:ema_update(rows, ids)
  tide.no_grad(function()
    local k, g = self.num_codes, self.decay
    local onehot = tide.one_hot(ids, k)                          -- [N,K]
    local n = onehot:sum(1)                                      -- [K]
    local s = onehot:t():matmul(rows:detach())                   -- [K,E]
    self.ema_count:copy_(self.ema_count * g + n * (1 - g))
    self.ema_sum:copy_(self.ema_sum * g + s * (1 - g))
    local total = self.ema_count:sum()
    local smoothed = (self.ema_count + self.ema_eps) / (total + k * self.ema_eps) * total
    self.codebook:copy_(self.ema_sum / smoothed:reshape(k, 1))
  end)
end

local function rec_loss(kind, out, x)
  if kind == "bernoulli" then return tide.bce_with_logits(out, x):mean() end
  return tide.mse_loss(out, x)
end

-- -> loss (0-d), stats {rec, codebook, commitment, perplexity}
function VQVAE:loss(x)
  local ze = self.enc(x)
  local zst, ids, cb, commit, rows = self:quantize(ze)
  local rec = rec_loss(self.likelihood, self.dec(zst), x)
  local loss = rec + commit * self.beta
  if self.ema then
    if self.training then self:ema_update(rows, ids) end
  else
    loss = loss + cb
  end
  if self.restart and self.training then self:restart_dead(rows, ids) end
  local u = VQVAE.usage(ids, self.num_codes)
  return loss, {rec = rec:item(), codebook = cb:item(), commitment = commit:item(), perplexity = u.perplexity}
end

-- ids of the grid cells [B,H,W]
function VQVAE:codes(x)
  return tide.no_grad(function()
    local ze = self.enc(x)
    local rows = to_rows(ze)
    return self:assign(rows):reshape(ze:size(1), ze:size(3), ze:size(4))
  end)
end

-- ids [B,H,W] -> images (the mean of p(x|z_q)) [B,C,28,28]
function VQVAE:decode_codes(ids)
  return tide.no_grad(function()
    local b, h, w = ids:size(1), ids:size(2), ids:size(3)
    local zq = self.codebook:index_select(1, ids:reshape(-1)):reshape(b, h, w, self.dim):permute(1, 4, 2, 3)
    local out = self.dec(zq:contiguous())
    return self.likelihood == "bernoulli" and out:sigmoid() or out
  end)
end

function VQVAE:reconstruct(x) return self:decode_codes(self:codes(x)) end

-- Codebook usage of ids (any shape, 0-based, K codes): counts [K],
-- perplexity exp(-sum_k p_k log p_k) with p_k = counts_k / N (K when every
-- code is used equally, 1 when one code takes all), dead = codes never used.
function VQVAE.usage(ids, k)
  return tide.no_grad(function()
    local counts = tide.one_hot(ids:reshape(-1), k):sum(1)
    local p = counts / ids.numel
    local h = -(p * (p + 1e-30):log()):sum():item()
    return {counts = counts, perplexity = math.exp(h), dead = counts:eq(0):sum():item(),
            used = counts:gt(0):sum():item()}
  end)
end

return VQVAE
