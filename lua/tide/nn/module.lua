-- nn/module.lua - tide.nn.Module: the base class of layers and models, and
-- the one flat parameter buffer per model.
--
-- Classes: local Net = nn.Module:extend("Net"); function Net:init(...) end;
-- function Net:forward(x) end; local net = Net(...). Assigning a module to a
-- field (self.enc = nn.Linear(2, 3)) registers it as a child, in order;
-- self:register_parameter(name, shape_or_tensor [, init]) declares a
-- parameter. Both are then read as fields (self.enc, self.weight).
--
-- Flat buffers. A parameter is created and initialized when its module is
-- constructed (a standalone tensor, so the seeded RNG gives the same values
-- whatever is built later). The first time a model is used (called,
-- parameters(), flat_parameters(), zero_grad(), an optimizer, save/load), the
-- whole tree below it gets one flat parameter tensor and one flat gradient
-- tensor: every parameter is re-homed into a slice of the first (values
-- copied; the tensor object stays the same, only its storage moves) and its
-- .grad becomes the matching slice of the second, so backward accumulates
-- straight into the flat gradient and an optimizer or a checkpoint sees one
-- vector. Parameters are laid out depth first (a module's own parameters,
-- then its children in order), so every module's parameters are one
-- contiguous slice of its model's buffer.
--
-- Re-homing rule: a module lives in the buffer of the last model built
-- around it. A built module placed in a new container moves into the
-- container's buffer when the container is first used; its old model (if
-- used again) builds again and takes it back. Adding a child or a parameter
-- to a built model makes it build again at its next use.
local B = require("tide_ffi")
local ffi = B.ffi
local C = B.C
local W = B.wrappers
local raise = B.raise

local M = {}

local Module = {__name = "Module"}
M.Module = Module

local function is_module(x)
  if type(x) ~= "table" then return false end
  local mt = getmetatable(x)
  return mt ~= nil and rawget(mt, "__module") == true
end
M.is_module = is_module

local function numel_of(shape)
  local n = 1
  for i = 1, #shape do n = n * shape[i] end
  return n
end

---------------------------------------------------------------- classes

local instance_mt_of -- class -> metatable of its instances

local function make_instance_mt(cls)
  return {
    __module = true,
    __index = function(t, k)
      local v = t._params[k]
      if v ~= nil then return v end
      v = t._mods[k]
      if v ~= nil then return v end
      v = t._attrs[k]
      if v ~= nil then return v end
      if type(k) == "number" then return t._mods[tostring(k)] end
      return cls[k]
    end,
    __newindex = function(t, k, v)
      if is_module(v) then return t:add_module(k, v) end
      if type(k) == "string" and t._params[k] ~= nil then
        raise(("%s: '%s' is a parameter: copy values with m.%s:copy_(t), or register_parameter to replace it")
              :format(cls.__name, k, k))
      end
      if type(k) == "string" and t._mods[k] ~= nil then
        if v ~= nil then raise(("%s: '%s' is a child module; assign a module or nil"):format(cls.__name, k)) end
        return t:add_module(k, nil)
      end
      t._attrs[k] = v
    end,
    __call = function(self, ...)
      local h = self._home
      if not h or h._dirty or h._members[self] == nil then self:_ensure() end
      return self:forward(...)
    end,
    __tostring = function(self) return self:tree_string() end,
    __len = function(self) return #self._mod_order end,
  }
end

-- A subclass: Sub = Base:extend("Sub"); Sub(...) makes an instance and calls
-- Sub.init(self, ...).
function Module.extend(base, name)
  if type(name) ~= "string" then raise("Module:extend(name): the class needs a name") end
  local cls = {__name = name, __super = base}
  setmetatable(cls, {__index = base, __call = function(c, ...) return c.new(c, ...) end,
                     __tostring = function(c) return "class " .. c.__name end})
  instance_mt_of[cls] = make_instance_mt(cls)
  return cls
end

function Module.new(cls, ...)
  local mt = instance_mt_of[cls]
  if not mt then raise("Module.new: not a module class (make one with nn.Module:extend(name))") end
  -- the raw fields; everything else a module is given lives in _attrs, so
  -- every assignment reaches __newindex (a plain value may later become a child)
  local self = setmetatable({_params = {}, _param_order = {}, _mods = {}, _mod_order = {}, _attrs = {training = true},
                             _home = false, _dirty = false, _offset = false, _count = 0, _flat = false,
                             _gflat = false, _total = 0, _members = false, _build_id = 0}, mt)
  cls.init(self, ...)
  return self
end

instance_mt_of = setmetatable({}, {__mode = "k"})
instance_mt_of[Module] = make_instance_mt(Module)
setmetatable(Module, {__call = function(c, ...) return c.new(c, ...) end})

function Module:init() end

function Module:forward()
  raise(self.__name .. ": forward is not defined")
end

-- True when x is a module instance.
Module.is_module = function(_, x) return is_module(x) end

---------------------------------------------------------------- registration

local function mark_dirty(self)
  local h = self._home
  if h then h._dirty = true end
end

-- Registers (or, with nil, removes) child module m under name.
function Module:add_module(name, m)
  if type(name) == "number" then name = tostring(name) end
  if type(name) ~= "string" then raise(self.__name .. ": module names must be strings") end
  if m ~= nil and not is_module(m) then raise(self.__name .. ": add_module('" .. name .. "'): not a module") end
  if m == self then raise(self.__name .. ": a module cannot contain itself") end
  if self._params[name] ~= nil then raise(self.__name .. ": '" .. name .. "' is already a parameter") end
  local mods, order = self._mods, self._mod_order
  self._attrs[name] = nil
  if m == nil then
    if mods[name] ~= nil then
      mods[name] = nil
      for i, n in ipairs(order) do if n == name then table.remove(order, i) break end end
    end
  else
    if mods[name] == nil then order[#order + 1] = name end
    mods[name] = m
  end
  mark_dirty(self)
  return m
end

-- Declares a parameter: from a shape table (values from init(t), default
-- zeros) or from a tensor (values copied). Returns the parameter.
function Module:register_parameter(name, value, init)
  if type(name) ~= "string" then raise(self.__name .. ": parameter names must be strings") end
  if self._mods[name] ~= nil then raise(self.__name .. ": '" .. name .. "' is already a child module") end
  self._attrs[name] = nil
  local p
  if B.is_tensor(value) then
    p = W.clone(W.detach(value))
  elseif type(value) == "table" then
    p = W.zeros(value)
  else
    raise(self.__name .. ": register_parameter('" .. name .. "', shape or tensor [, init])")
  end
  W.set_requires_grad(p, true)
  if init then
    local prev = C.td_set_grad_enabled(0)
    local ok, err = pcall(init, p)
    C.td_set_grad_enabled(prev)
    if not ok then error(err, 0) end
  end
  if self._params[name] == nil then self._param_order[#self._param_order + 1] = name end
  self._params[name] = p
  mark_dirty(self)
  return p
end

---------------------------------------------------------------- the tree

-- Child modules in order.
function Module:children()
  local out = {}
  for i, n in ipairs(self._mod_order) do out[i] = self._mods[n] end
  return out
end

-- for name, child in m:named_children() do ... end
function Module:named_children()
  local i, order, mods = 0, self._mod_order, self._mods
  return function()
    i = i + 1
    local n = order[i]
    if n ~= nil then return n, mods[n] end
  end
end

-- Every module of the tree, depth first (self first), each once, with its
-- dotted name ("" for self): {{name, module}, ...}.
local function walk(self)
  local out, seen = {}, {}
  local function visit(m, prefix)
    if seen[m] then return end
    seen[m] = true
    out[#out + 1] = {prefix, m}
    for _, n in ipairs(m._mod_order) do
      visit(m._mods[n], prefix == "" and n or prefix .. "." .. n)
    end
  end
  visit(self, "")
  return out
end

-- for name, module in m:named_modules() do ... end (self first, name "").
function Module:named_modules()
  local list, i = walk(self), 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

function Module:modules()
  local out = {}
  for i, e in ipairs(walk(self)) do out[i] = e[2] end
  return out
end

-- fn(module) on every module, depth first; returns self.
function Module:apply(fn)
  for _, e in ipairs(walk(self)) do fn(e[2]) end
  return self
end

-- {{dotted_name, param}, ...} in buffer order, each parameter once.
local function param_list(self)
  local out, seen = {}, {}
  for _, e in ipairs(walk(self)) do
    local prefix, m = e[1], e[2]
    for _, n in ipairs(m._param_order) do
      local p = m._params[n]
      if not seen[p] then
        seen[p] = true
        out[#out + 1] = {prefix == "" and n or prefix .. "." .. n, p, m, n}
      end
    end
  end
  return out
end

---------------------------------------------------------------- flat buffers

local build_count = 0

-- Moves p's storage to that of v (a tensor of the same shape): swaps the
-- data and storage fields, so p keeps its identity and v, released later,
-- takes p's old storage reference with it. Refcounts stay balanced.
local function swap_storage(p, v)
  p.data, v.data = v.data, p.data
  p.storage, v.storage = v.storage, p.storage
  for d = 0, p.ndim - 1 do p._stride[d], v._stride[d] = v._stride[d], p._stride[d] end
end

-- Gives the tree below self one flat parameter and one flat gradient
-- tensor (see the top of this file).
function Module:_build()
  local prev = C.td_set_grad_enabled(0)
  local ok, err = pcall(function()
    local list = param_list(self)
    local total = 0
    for _, e in ipairs(list) do total = total + e[2].numel end
    local flat = W.zeros(math.max(total, 1))
    local gflat = W.zeros(math.max(total, 1))
    local offsets, off = {}, 0
    for _, e in ipairs(list) do
      local p = e[2]
      local n = p.numel
      offsets[p] = off
      local shape = p:shape()
      local v = W.reshape(W.narrow(flat, 1, off + 1, n), shape)
      W.copy_(v, p)
      local old_grad = W.get_grad(p)
      swap_storage(p, v)
      local g = W.reshape(W.narrow(gflat, 1, off + 1, n), shape)
      if old_grad ~= nil then W.copy_(g, old_grad) end
      W.set_grad(p, g)
      off = off + n
    end
    build_count = build_count + 1
    local members = setmetatable({}, {__mode = "k"})
    for _, e in ipairs(walk(self)) do
      local m = e[2]
      local old = m._home
      if old and old ~= self then old._dirty = true end
      m._home = self
      members[m] = true
      -- the slice of m's parameters: contiguous unless m shares a module
      -- that was laid out before it
      local lo, hi, count = math.huge, -1, 0
      for _, pe in ipairs(param_list(m)) do
        local o = offsets[pe[2]]
        lo = math.min(lo, o)
        hi = math.max(hi, o + pe[2].numel)
        count = count + pe[2].numel
      end
      if count == 0 then lo = 0 elseif hi - lo ~= count then lo = false end
      m._offset, m._count = lo, count
    end
    self._flat, self._gflat, self._total = flat, gflat, total
    self._members = members
    self._build_id = build_count
    self._dirty = false
  end)
  C.td_set_grad_enabled(prev)
  if not ok then error(err, 0) end
end

-- Builds the flat buffers if this module is not (or no longer) homed.
function Module:_ensure()
  local h = self._home
  if h and not h._dirty and h._members[self] ~= nil then return h end
  if h and h ~= self and h._dirty and h._members[self] ~= nil then
    -- the model we live in changed: rebuild it, if it still holds us
    for _, m in ipairs(h:modules()) do
      if m == self then
        h:_build()
        return h
      end
    end
  end
  self:_build()
  return self
end

-- The flat parameter and gradient tensors of this module's parameters
-- (slices of its model's buffers; numel 0 tensors when it has none).
function Module:flat_parameters()
  local h = self:_ensure()
  if not self._offset then
    raise(self.__name .. ": flat_parameters: this module shares a sub-module laid out elsewhere in its model, " ..
          "so its parameters are not one slice; use the model's")
  end
  local n = self._count
  if n == 0 then return W.zeros(0), W.zeros(0) end
  if h == self and n == h._total then return h._flat, h._gflat end
  return W.narrow(h._flat, 1, self._offset + 1, n), W.narrow(h._gflat, 1, self._offset + 1, n)
end

-- Identifies the current buffer: changes whenever the model is rebuilt.
function Module:buffer_id()
  local h = self:_ensure()
  return h._build_id, self._offset, self._count
end

function Module:parameters()
  self:_ensure()
  local out = {}
  for i, e in ipairs(param_list(self)) do out[i] = e[2] end
  return out
end

-- for name, p in m:named_parameters() do ... end: dotted names, in buffer order.
function Module:named_parameters()
  self:_ensure()
  local list, i = param_list(self), 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

function Module:num_parameters()
  local n = 0
  for _, e in ipairs(param_list(self)) do n = n + e[2].numel end
  return n
end

-- Zeroes the gradients: one fill of the flat gradient slice.
function Module:zero_grad()
  local _, g = self:flat_parameters()
  if g.numel > 0 then W.fill(g, 0) end
  return self
end

function Module:train(flag)
  if flag == nil then flag = true end
  for _, m in ipairs(self:modules()) do m._attrs.training = flag and true or false end
  return self
end

function Module:eval() return self:train(false) end

-- name -> parameter (the live tensors, not copies).
function Module:state_dict()
  local out = {}
  for name, p in self:named_parameters() do out[name] = p end
  return out
end

-- Copies values from a table name -> tensor. strict (default true) fails on
-- missing or unexpected names. Returns missing, unexpected (name lists).
function Module:load_state_dict(sd, strict)
  if strict == nil then strict = true end
  local missing, unexpected, known = {}, {}, {}
  local prev = C.td_set_grad_enabled(0)
  local ok, err = pcall(function()
    for name, p in self:named_parameters() do
      known[name] = true
      local t = sd[name]
      if t == nil then
        missing[#missing + 1] = name
      else
        if not B.is_tensor(t) then t = B.from_table(t) end
        if t.numel ~= p.numel or t.ndim ~= p.ndim then
          raise(("load_state_dict: '%s' has shape %s, the model's is %s"):format(name, B.shape_str(t), B.shape_str(p)))
        end
        for d = 0, p.ndim - 1 do
          if t._shape[d] ~= p._shape[d] then
            raise(("load_state_dict: '%s' has shape %s, the model's is %s"):format(name, B.shape_str(t), B.shape_str(p)))
          end
        end
        W.copy_(p, t)
      end
    end
  end)
  C.td_set_grad_enabled(prev)
  if not ok then error(err, 0) end
  for name in pairs(sd) do if not known[name] then unexpected[#unexpected + 1] = name end end
  table.sort(unexpected)
  if strict and (#missing > 0 or #unexpected > 0) then
    raise(("load_state_dict: missing %s; unexpected %s"):format(
      #missing > 0 and table.concat(missing, ", ") or "none", #unexpected > 0 and table.concat(unexpected, ", ") or "none"))
  end
  return missing, unexpected
end

-- Checkpoints (safetensors; see tide/serialize.lua): model:save(path
-- [, {optimizer =, metadata =}]), model:load(path [, {optimizer =, strict =}]).
function Module:save(path, opts) return require("tide.serialize").save_checkpoint(path, self, opts) end

function Module:load(path, opts)
  require("tide.serialize").load_checkpoint(path, self, opts)
  return self
end

---------------------------------------------------------------- printing

local function commas(n)
  local s = tostring(n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end
M.commas = commas

-- One line about this module without its children (override in layers).
function Module:extra_repr() return "" end

function Module:tree_string()
  local lines = {}
  local function line(m, name, indent)
    local extra = m:extra_repr()
    local n = m:num_parameters()
    local s = indent .. (name and ("(" .. name .. "): ") or "") .. m.__name ..
              (extra ~= "" and ("(" .. extra .. ")") or "")
    if n > 0 then s = s .. "  " .. commas(n) .. " parameters" end
    lines[#lines + 1] = s
    for _, cn in ipairs(m._mod_order) do line(m._mods[cn], cn, indent .. "  ") end
  end
  line(self, nil, "")
  return table.concat(lines, "\n")
end

return M
