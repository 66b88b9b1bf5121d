-- format.lua - tensors as text, PyTorch-like:
--   tensor([[ 0.1234, -1.0000],
--           [ 2.0000,  3.0000]], shape=[2,2], requires_grad=true)
-- One number format for the whole tensor (whole numbers as "3.", fixed with
-- `precision` decimals, or scientific when magnitudes differ by more than
-- 1000x or leave [1e-4, 1e8]), right-aligned in columns; tensors with more
-- than `threshold` elements show the first and last `edgeitems` per dim.
local B = require("tide_ffi")

local M = {}
local opts = {precision = 4, threshold = 1000, edgeitems = 3, linewidth = 80}

function M.set_printoptions(o)
  for k, v in pairs(o or {}) do
    if opts[k] == nil or type(v) ~= "number" then B.raise("set_printoptions: unknown or bad option '" .. tostring(k) .. "'") end
    opts[k] = v
  end
  return {precision = opts.precision, threshold = opts.threshold, edgeitems = opts.edgeitems, linewidth = opts.linewidth}
end

-- 0-based indices shown along a dim of size n; false stands for "...".
local function shown(n, summarize)
  local e, idx = opts.edgeitems, {}
  if summarize and n > 2 * e then
    for i = 0, e - 1 do idx[#idx + 1] = i end
    idx[#idx + 1] = false
    for i = n - e, n - 1 do idx[#idx + 1] = i end
  else
    for i = 0, n - 1 do idx[#idx + 1] = i end
  end
  return idx
end

local huge = math.huge

-- The formatter for a set of values and the width of its widest result.
local function formatter(values)
  local int_mode, maxa, mina = true, 0, huge
  for i = 1, #values do
    local v = values[i]
    if v == v and v ~= huge and v ~= -huge then
      if v ~= math.floor(v) then int_mode = false end
      local a = math.abs(v)
      if a > maxa then maxa = a end
      if a ~= 0 and a < mina then mina = a end
    end
  end
  local sci
  if int_mode then
    sci = maxa > 1e8
  else
    sci = maxa > 1e8 or (mina ~= huge and (mina < 1e-4 or maxa / mina > 1000))
  end
  local pat = sci and ("%." .. opts.precision .. "e") or (int_mode and "%.0f." or ("%." .. opts.precision .. "f"))
  local function fmt(v)
    if v ~= v then return "nan" end
    if v == huge then return "inf" end
    if v == -huge then return "-inf" end
    return string.format(pat, v)
  end
  local width = 0
  for i = 1, #values do width = math.max(width, #fmt(values[i])) end
  return fmt, width
end
M.formatter = formatter

local PREFIX = "tensor("

function M.tostring(t)
  local nd = t.ndim
  local numel = tonumber(t._numel)
  local shape, stride = {}, {}
  for d = 1, nd do
    shape[d] = tonumber(t._shape[d - 1])
    stride[d] = tonumber(t._stride[d - 1])
  end
  local suffix = ""
  if nd > 0 then suffix = ", shape=[" .. table.concat(shape, ",") .. "]" end
  if t._requires_grad ~= 0 then suffix = suffix .. ", requires_grad=true" end
  local data = t.data
  if nd == 0 then
    local fmt = formatter({data[0]})
    return PREFIX .. fmt(data[0]) .. suffix .. ")"
  end
  if numel == 0 then return PREFIX .. "[]" .. suffix .. ")" end

  local summarize = numel > opts.threshold
  local idx = {}
  for d = 1, nd do idx[d] = shown(shape[d], summarize) end
  local values = {}
  local function collect(d, off)
    for _, i in ipairs(idx[d]) do
      if i then
        if d == nd then values[#values + 1] = data[off + i * stride[d]]
        else collect(d + 1, off + i * stride[d]) end
      end
    end
  end
  collect(1, 0)
  local fmt, width = formatter(values)

  local indent = #PREFIX + nd -- column of a row's first element
  local pad = string.rep(" ", indent)
  local function row(off)
    local items = {}
    for _, i in ipairs(idx[nd]) do
      if i then
        local s = fmt(data[off + i * stride[nd]])
        items[#items + 1] = string.rep(" ", width - #s) .. s
      else
        items[#items + 1] = " ..." -- as PyTorch: two spaces after the comma
      end
    end
    local lines, cur = {}, nil
    for k, s in ipairs(items) do
      local piece = k < #items and s .. "," or s
      if not cur then cur = piece
      elseif indent + #cur + 1 + #piece > opts.linewidth then
        lines[#lines + 1] = cur
        cur = piece
      else
        cur = cur .. " " .. piece
      end
    end
    lines[#lines + 1] = cur
    return "[" .. table.concat(lines, "\n" .. pad) .. "]"
  end
  local function block(d, off)
    if d == nd then return row(off) end
    local parts = {}
    for _, i in ipairs(idx[d]) do
      parts[#parts + 1] = i and block(d + 1, off + i * stride[d]) or "..."
    end
    local sep = "," .. string.rep("\n", nd - d) .. string.rep(" ", #PREFIX + d)
    return "[" .. table.concat(parts, sep) .. "]"
  end
  return PREFIX .. block(1, 0) .. suffix .. ")"
end

return M
