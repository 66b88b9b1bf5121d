-- tensor.lua - tide.Tensor: the ffi.metatype of td_tensor, its methods,
-- operators, and the tensor-making functions of the tide namespace.
--
-- Conventions: axes and positions given as Lua numbers are 1-based, a
-- negative one counts from the end (t:sum(1), t:softmax(-1),
-- t:narrow(2, 1, 3)); values stored in tensors are data and are never shifted
-- (class ids from argmax or categorical, targets of cross_entropy, indices
-- for gather / index_select / one_hot are 0-based, as in the engine).
local B = require("tide_ffi")

local REGISTRY_KEY = "tide.tensor.module"
local registry = debug.getregistry()
if registry[REGISTRY_KEY] then return registry[REGISTRY_KEY] end

local ffi, C, W = B.ffi, B.C, B.wrappers
local raise, track, is_tensor = B.raise, B.track, B.is_tensor
local Format = require("tide.format")

-- Errors raised from lua/tide/ point at the user's line, not at ours.
do
  local src = debug.getinfo(1, "S").source
  B.add_internal_source(src:match("^(.*/)[^/]*$") or src)
end

local MAXD = B.MAX_DIMS
local unpack = unpack or table.unpack

-- Tensor methods: every wrapped C function whose first argument is a tensor,
-- plus the Lua-side methods below. Other modules may add methods here.
local Tensor = {}
for name, f in pairs(W) do
  if B.info[name].method then Tensor[name] = f end
end

-- tide.* functions: every wrapped C function, plus the ones below.
local F = {}
for name, f in pairs(W) do F[name] = f end

---------------------------------------------------------------- geometry

function Tensor.shape(t)
  local s = {}
  for i = 0, t.ndim - 1 do s[i + 1] = tonumber(t._shape[i]) end
  return s
end

local function axis_index(t, i, fname)
  local nd = t.ndim
  if type(i) ~= "number" or i ~= math.floor(i) then raise(fname .. ": axis must be a whole number, got " .. type(i)) end
  local d = i > 0 and i - 1 or nd + i
  if i == 0 or d < 0 or d >= nd then
    raise(fname .. ": axis " .. i .. " is out of range for shape " .. B.shape_str(t) .. " (axes are 1-based)")
  end
  return d
end

function Tensor.size(t, i)
  if i == nil then return Tensor.shape(t) end
  return tonumber(t._shape[axis_index(t, i, "size")])
end

function Tensor.stride(t, i)
  if i == nil then
    local s = {}
    for d = 0, t.ndim - 1 do s[d + 1] = tonumber(t._stride[d]) end
    return s
  end
  return tonumber(t._stride[axis_index(t, i, "stride")])
end

function Tensor.dim(t) return t.ndim end
function Tensor.nelement(t) return tonumber(t._numel) end

Tensor.view = W.reshape

function Tensor.flatten(t) return W.reshape(t, -1) end

function Tensor.t(t)
  if t.ndim ~= 2 then raise("t: expects a 2-d tensor, got shape " .. B.shape_str(t)) end
  return W.transpose(t, 1, 2)
end

-- A new axis of size 1 at 1-based position i (1 .. ndim+1; negative from the end).
function Tensor.unsqueeze(t, i)
  local nd = t.ndim
  local d = i > 0 and i or nd + 2 + i
  if i == 0 or d < 1 or d > nd + 1 then
    raise("unsqueeze: position " .. i .. " is out of range for shape " .. B.shape_str(t))
  end
  local s = Tensor.shape(t)
  table.insert(s, d, 1)
  return W.reshape(t, s)
end

-- Drops the given axis (which must have size 1), or every axis of size 1.
function Tensor.squeeze(t, i)
  local s, out = Tensor.shape(t), {}
  if i ~= nil then
    local d = axis_index(t, i, "squeeze") + 1
    if s[d] ~= 1 then raise("squeeze: axis " .. i .. " of shape " .. B.shape_str(t) .. " has size " .. s[d]) end
    table.remove(s, d)
    return W.reshape(t, s)
  end
  for _, n in ipairs(s) do if n ~= 1 then out[#out + 1] = n end end
  return W.reshape(t, out)
end

---------------------------------------------------------------- autograd

-- t:requires_grad() -> boolean; t:requires_grad(flag) sets it and returns t.
function Tensor.requires_grad(t, flag)
  if flag == nil then return t._requires_grad ~= 0 end
  return W.set_requires_grad(t, flag)
end

-- The accumulated gradient, or nil.
Tensor.grad = W.get_grad

---------------------------------------------------------------- reductions

-- max / argmax over an axis, or over all elements when the axis is nil.
function Tensor.max(t, axis, keepdim)
  if axis == nil then return W.max(W.reshape(t, -1), 1, false) end
  return W.max(t, axis, keepdim)
end

function Tensor.argmax(t, axis, keepdim)
  if axis == nil then return W.argmax(W.reshape(t, -1), 1, false) end
  return W.argmax(t, axis, keepdim)
end

F.max, F.argmax = Tensor.max, Tensor.argmax

---------------------------------------------------------------- Lua tables

-- Nested Lua tables of numbers -> tensor (a number -> 0-d tensor). With a
-- shape, the values (nested or flat) are laid out in that shape.
local function from_table(tbl, shape)
  if type(tbl) == "number" and shape == nil then return W.scalar(tbl) end
  if type(tbl) ~= "table" then raise("from_table: expects a table of numbers, got " .. type(tbl)) end
  local dims, x = {}, tbl
  while type(x) == "table" do
    dims[#dims + 1] = #x
    x = x[1]
  end
  local n = 1
  for _, d in ipairs(dims) do n = n * d end
  local buf = ffi.new("float[?]", n > 0 and n or 1)
  local k, path = 0, {}
  local function where()
    local s = {}
    for i, p in ipairs(path) do s[i] = "[" .. p .. "]" end
    return table.concat(s)
  end
  local function fill(v, d)
    if d > #dims then
      if type(v) ~= "number" then
        raise("from_table: element " .. where() .. " is a " .. type(v) .. ", expected a number")
      end
      buf[k] = v
      k = k + 1
      return
    end
    if type(v) ~= "table" then
      raise("from_table: element " .. where() .. " is a " .. type(v) .. ", expected a table of " .. dims[d])
    end
    if #v ~= dims[d] then
      raise("from_table: ragged table: element " .. (d == 1 and "(top)" or where()) .. " has " .. #v ..
            " entries, expected " .. dims[d])
    end
    for i = 1, #v do
      path[d] = i
      fill(v[i], d + 1)
    end
    path[d] = nil
  end
  fill(tbl, 1)
  if shape ~= nil then
    if type(shape) ~= "table" then raise("from_table: shape must be a table, got " .. type(shape)) end
    local m = 1
    for _, d in ipairs(shape) do m = m * d end
    if m ~= n then
      raise("from_table: " .. n .. " values do not fill shape [" .. table.concat(shape, ",") .. "]")
    end
    dims = shape
  end
  if #dims > MAXD then raise("from_table: " .. #dims .. " dims, at most " .. MAXD) end
  local sh = ffi.new("int64_t[?]", MAXD)
  for i, d in ipairs(dims) do sh[i - 1] = d end
  local p = C.td_from_buffer(#dims, sh, buf)
  if p == nil then raise(B.last_error()) end
  return track(p)
end
B.from_table = from_table
F.from_table = from_table
F.tensor = from_table

-- tensor -> nested Lua tables (a 0-d tensor -> a number).
function Tensor.to_table(t)
  local n = tonumber(t._numel)
  local buf = ffi.new("float[?]", n > 0 and n or 1)
  if C.td_copy_to_buffer(t, buf) ~= 0 then raise(B.last_error()) end
  local nd = t.ndim
  if nd == 0 then return buf[0] end
  local shape, k = Tensor.shape(t), 0
  local function build(d)
    local out = {}
    if d == nd then
      for i = 1, shape[d] do
        out[i] = buf[k]
        k = k + 1
      end
    else
      for i = 1, shape[d] do out[i] = build(d + 1) end
    end
    return out
  end
  return build(1)
end

-- t:at(i, j, ...) -> the element at 1-based indices (negative from the end).
function Tensor.at(t, ...)
  local nd, n = t.ndim, select("#", ...)
  if n ~= nd then raise("at: " .. n .. " indices for shape " .. B.shape_str(t)) end
  local off = 0
  for d = 0, nd - 1 do
    local i = select(d + 1, ...)
    local size = tonumber(t._shape[d])
    local z = (type(i) == "number" and i < 0) and size + i or (i or 0) - 1
    if type(i) ~= "number" or i == 0 or z < 0 or z >= size or z ~= math.floor(z) then
      raise("at: index " .. tostring(i) .. " is out of range for dim " .. (d + 1) .. " of shape " .. B.shape_str(t) ..
            " (indices are 1-based)")
    end
    off = off + z * tonumber(t._stride[d])
  end
  return t.data[off]
end

---------------------------------------------------------------- creation

-- arange(n) = 0 .. n-1; arange(start, stop[, step]) excludes stop.
function F.arange(a, b, step)
  if b == nil then return W.arange(0, a, 1) end
  return W.arange(a, b, step or 1)
end

-- full(shape_table, value) or full(d1, d2, ..., value).
function F.full(...)
  local n = select("#", ...)
  local first = ...
  if type(first) == "table" then return W.full(first, select(2, ...)) end
  if n < 1 then raise("full: expects a shape and a value") end
  local args = {...}
  local value = args[n]
  args[n] = nil
  return W.full(args, value)
end

function F.zeros_like(t) return W.zeros(Tensor.shape(t)) end
function F.ones_like(t) return W.ones(Tensor.shape(t)) end
function F.full_like(t, v) return W.full(Tensor.shape(t), v) end
function F.rand_like(t) return W.rand(Tensor.shape(t)) end
function F.randn_like(t) return W.randn(Tensor.shape(t)) end

F.cat = W.concat
F.is_tensor = is_tensor

---------------------------------------------------------------- grad mode

local function pack(...) return {n = select("#", ...), ...} end

local function with_grad_mode(flag, fname)
  return function(fn, ...)
    if type(fn) ~= "function" then raise(fname .. ": expects a function, got " .. type(fn)) end
    local prev = C.td_set_grad_enabled(flag)
    local r = pack(pcall(fn, ...))
    C.td_set_grad_enabled(prev)
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end
end

-- no_grad(fn, ...) runs fn(...) recording nothing; the mode is restored even
-- if fn fails. enable_grad does the opposite.
F.no_grad = with_grad_mode(0, "no_grad")
F.enable_grad = with_grad_mode(1, "enable_grad")
function F.is_grad_enabled() return C.td_grad_enabled() ~= 0 end

---------------------------------------------------------------- memory

function F.memory()
  return {
    in_use = tonumber(C.td_mem_in_use()), peak = tonumber(C.td_mem_peak()),
    cached = tonumber(C.td_mem_cached()), live_tensors = tonumber(C.td_live_tensors()),
    gc_runs = B.gc_config().runs,
  }
end
F.gc_config = B.gc_config

---------------------------------------------------------------- metatype

local getters = {
  numel = function(t) return tonumber(t._numel) end,
  is_leaf = function(t) return t._is_leaf ~= 0 end,
}

-- t:select(axis, i) -> the view at 1-based index i of axis, without that axis.
function Tensor.select(t, axis, i)
  local d = axis_index(t, axis, "select")
  local size = tonumber(t._shape[d])
  if type(i) ~= "number" or i ~= math.floor(i) or i == 0 or i > size or i < -size then
    raise("select: index " .. tostring(i) .. " is out of range for axis " .. axis .. " of shape " ..
          B.shape_str(t) .. " (indices are 1-based)")
  end
  if i < 0 then i = size + i + 1 end
  local s = Tensor.shape(t)
  table.remove(s, d + 1)
  return W.reshape(W.narrow(t, d + 1, i, 1), s)
end

-- t:split(size [, axis]) or t:split({s1, s2, ...} [, axis]) -> a table of
-- views along axis (default 1): pieces of `size` (the last may be smaller)
-- or of the given sizes. Gradients flow through each piece.
function Tensor.split(t, sizes, axis)
  axis = axis or 1
  local d = axis_index(t, axis, "split")
  local n = tonumber(t._shape[d])
  local list = {}
  if type(sizes) == "number" then
    if sizes <= 0 or sizes ~= math.floor(sizes) then
      raise("split: piece size " .. tostring(sizes) .. " is not a positive whole number")
    end
    for start = 1, n, sizes do list[#list + 1] = math.min(sizes, n - start + 1) end
  else
    local total = 0
    for _, s in ipairs(sizes) do total = total + s end
    if total ~= n then
      raise("split: sizes add up to " .. total .. " but axis " .. axis .. " of shape " ..
            B.shape_str(t) .. " has " .. n)
    end
    list = sizes
  end
  local out, start = {}, 1
  for k, s in ipairs(list) do
    out[k] = W.narrow(t, d + 1, start, s)
    start = start + s
  end
  return out
end

local mt = {}

-- t[i]: a number for a 1-d tensor, else the view t:select(1, i).
mt.__index = function(t, k)
  local m = Tensor[k]
  if m ~= nil then return m end
  local g = getters[k]
  if g then return g(t) end
  if type(k) == "number" then
    if t.ndim == 1 then return Tensor.at(t, k) end
    if t.ndim == 0 then raise("cannot index a 0-d tensor; use t:item()") end
    return Tensor.select(t, 1, k)
  end
  return nil -- as a table would: t:typo() fails with "attempt to call method 'typo'"
end

-- t[i] = v: writes in place (not recorded by autograd); v a number or a
-- tensor broadcastable to t[i]'s shape.
mt.__newindex = function(t, k, v)
  if type(k) ~= "number" then raise("cannot set field '" .. tostring(k) .. "' of a tensor") end
  if t.ndim == 0 then raise("cannot index a 0-d tensor") end
  local size = tonumber(t._shape[0])
  if k ~= math.floor(k) or k == 0 or k > size or k < -size then
    raise("t[i] = v: index " .. k .. " is out of range for shape " .. B.shape_str(t) .. " (indices are 1-based)")
  end
  local sub = W.narrow(t, 1, k < 0 and size + k + 1 or k, 1)
  if type(v) == "number" then W.fill(sub, v)
  elseif is_tensor(v) then W.copy_(sub, W.expand(v, Tensor.shape(sub)))
  else raise("t[i] = v: v must be a number or a tensor, got " .. type(v)) end
end

-- Operators; a number on either side uses the scalar ops (or a 0-d tensor).
mt.__add = function(a, b)
  if type(b) == "number" then return W.add_scalar(a, b) end
  if type(a) == "number" then return W.add_scalar(b, a) end
  return W.add(a, b)
end

mt.__sub = function(a, b)
  if type(b) == "number" then return W.add_scalar(a, -b) end
  return W.sub(a, b)
end

mt.__mul = function(a, b)
  if type(b) == "number" then return W.mul_scalar(a, b) end
  if type(a) == "number" then return W.mul_scalar(b, a) end
  return W.mul(a, b)
end

mt.__div = function(a, b) return W.div(a, b) end

mt.__pow = function(a, b)
  if type(b) == "number" then return W.pow_scalar(a, b) end
  if type(a) == "number" then return W.rpow_scalar(a, b) end
  return W.pow(a, b)
end

mt.__unm = function(a) return W.neg(a) end

mt.__len = function(t)
  if t.ndim == 0 then raise("#: a 0-d tensor has no length") end
  return tonumber(t._shape[0])
end

mt.__tostring = Format.tostring

ffi.metatype("td_tensor", mt)

local M = {Tensor = Tensor, functions = F, from_table = from_table}
registry[REGISTRY_KEY] = M
return M
