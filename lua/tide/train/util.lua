-- tide.train.util - small helpers of the training loop.
local B = require("tide_ffi")
local W = B.wrappers
local raise = B.raise
local Rng = require("tide.data.rng")

-- An error message without its "file:line: " prefix.
local function bare(msg)
  msg = tostring(msg):gsub("^[^\n]-:%d+: ", "")
  return msg
end

local function finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

local function num_of(v, what)
  if type(v) == "number" then return v end
  if B.is_tensor(v) then
    if v.numel ~= 1 then raise(("train.fit: %s must be a scalar, got a tensor of shape %s"):format(what, B.shape_str(v))) end
    return tonumber(W.item(v))
  end
  if type(v) == "boolean" then return v and 1 or 0 end
  raise(("train.fit: %s must be a number or a 0-d tensor, got %s"):format(what, type(v)))
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t or {}) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

local function fmt_num(v)
  if v == nil then return "" end
  if v ~= v then return "nan" end
  return ("%.6g"):format(v)
end

local function fmt_time(s)
  s = math.max(0, math.floor(s + 0.5))
  local h, m = math.floor(s / 3600), math.floor(s / 60) % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s % 60) end
  return ("%d:%02d"):format(m, s % 60)
end

-- A seed for tide.manual_seed from (seed, global step): 53 bits.
local function derived_seed(seed, gstep)
  return tonumber(require("bit").rshift(Rng.new(seed, 0x74726e, gstep):u64(), 11))
end

return {bare = bare, finite = finite, num_of = num_of, sorted_keys = sorted_keys, fmt_num = fmt_num,
        fmt_time = fmt_time, derived_seed = derived_seed}
