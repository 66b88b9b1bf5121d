-- nn/gru.lua - tide.nn.GRU: one layer, PyTorch's gate equations and
-- parameter layout (gates stacked r, z, n):
--   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
--   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
--   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
--   h' = (1 - z) * n + z * h = n + z * (h - n)
-- weight_ih [3H, in], weight_hh [3H, H], bias_ih [3H], bias_hh [3H], all
-- uniform(-1/sqrt(H), 1/sqrt(H)).
local B = require("tide_ffi")
local W = B.wrappers
local raise = B.raise
local Mod = require("tide.nn.module")
local I = require("tide.nn.init_fns")

local GRU = Mod.Module:extend("GRU")

-- GRU(input_size, hidden_size, {batch_first = false, bias = true})
function GRU:init(nin, hidden, opts)
  opts = opts or {}
  if type(nin) ~= "number" or type(hidden) ~= "number" or hidden < 1 then
    raise("GRU(input_size, hidden_size [, {batch_first=, bias=}])")
  end
  self.input_size, self.hidden_size = nin, hidden
  self.batch_first = opts.batch_first and true or false
  local k = 1 / math.sqrt(hidden)
  local init = function(t) I.uniform_(t, -k, k) end
  self:register_parameter("weight_ih", {3 * hidden, nin}, init)
  self:register_parameter("weight_hh", {3 * hidden, hidden}, init)
  if opts.bias == nil or opts.bias then
    self:register_parameter("bias_ih", {3 * hidden}, init)
    self:register_parameter("bias_hh", {3 * hidden}, init)
  end
end

-- x [T, B, in] ([B, T, in] when batch_first), h0 [1, B, H] or nil (zeros)
-- -> output [T, B, H] ([B, T, H]), h_n [1, B, H].
function GRU:forward(x, h0)
  if x.ndim ~= 3 or x:size(3) ~= self.input_size then
    raise(("GRU: input %s must be [%s, %d]"):format(B.shape_str(x),
      self.batch_first and "B, T" or "T, B", self.input_size))
  end
  local H = self.hidden_size
  local tax = self.batch_first and 2 or 1
  local T, N = x:size(tax), x:size(3 - tax)
  local h
  if h0 == nil then
    h = W.zeros(N, H)
  else
    if h0.ndim ~= 3 or h0:size(1) ~= 1 or h0:size(2) ~= N or h0:size(3) ~= H then
      raise(("GRU: h0 %s must be [1, %d, %d]"):format(B.shape_str(h0), N, H))
    end
    h = W.reshape(h0, N, H)
  end
  -- the input projections of every step in one GEMM: [.., .., 3H]
  local gi_all = W.linear(x, self.weight_ih, self.bias_ih)
  local whh, bhh = self.weight_hh, self.bias_hh
  local outs = {}
  for t = 1, T do
    local gi = W.reshape(W.narrow(gi_all, tax, t, 1), N, 3 * H)
    local gh = W.linear(h, whh, bhh)
    local rz = W.sigmoid(W.add(W.narrow(gi, 2, 1, 2 * H), W.narrow(gh, 2, 1, 2 * H)))
    local r, z = W.narrow(rz, 2, 1, H), W.narrow(rz, 2, H + 1, H)
    local n = W.tanh(W.add(W.narrow(gi, 2, 2 * H + 1, H), W.mul(r, W.narrow(gh, 2, 2 * H + 1, H))))
    h = W.add(n, W.mul(z, W.sub(h, n)))
    outs[t] = h
  end
  local out = W.stack(outs, tax)
  return out, W.reshape(h, 1, N, H)
end

function GRU:extra_repr()
  return ("%d, %d%s%s"):format(self.input_size, self.hidden_size, self.batch_first and ", batch_first" or "",
                              self.bias_ih and "" or ", no bias")
end

return GRU
