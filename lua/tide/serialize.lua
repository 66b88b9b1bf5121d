-- tide.serialize - safetensors files and checkpoints on the engine's
-- td_safetensors_save / td_st_* (written to a temporary file, then renamed).
--
--   S.save(path, {name = tensor, ...} or {{name, tensor}, ...} [, metadata])
--   local f = S.open(path); f:names(); f:get(name); f:close()
--   S.read(path) -> {name = tensor}
--   S.save_checkpoint(path, model [, {optimizer =, metadata =, torch_names =}])  (also model:save, tide.save)
--   S.load_checkpoint(path, model [, {optimizer =, strict =, torch_names =}])     (also model:load, tide.load)
--   S.load_model(path) -> a model rebuilt from the file alone               (also tide.load_model)
--
-- A checkpoint holds the model's parameters under their dotted names; with
-- torch_names = true, under the names PyTorch's state_dict gives the same
-- module tree (Sequential children from 0, GRU's weight_ih_l0, ...), so
-- files go to and from PyTorch (safetensors.torch.load_file +
-- load_state_dict). With an
-- optimizer its state: tensors "optim.<group>.<i>.<exp_avg|exp_avg_sq|
-- max_exp_avg_sq|momentum_buffer>" and metadata strings "optim.kind",
-- "optim.steps", "optim.<group>.<hyperparameter>", "optim.<group>.<i>.step".
-- A model with a field `config` (its constructor's options: numbers,
-- booleans, strings, lists of numbers) and `config.class` (the module that
-- returns its constructor, e.g. "tide.models.cmvae") is saved with them as
-- metadata "config.<key>" = "<n|b|s|l>:<value>", so S.load_model can call
-- require(class)(config) and load the parameters into the result.
local B = require("tide_ffi")
local ffi, C = B.ffi, B.C
local raise = B.raise

local S = {}

local function fail(what)
  raise(what .. ": " .. B.last_error())
end

---------------------------------------------------------------- JSON of strings

local function json_string(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return ("\\u%04x"):format(c:byte())
  end)
  return '"' .. s .. '"'
end

-- {key = string} -> a JSON object (keys sorted), or nil when empty.
local function json_object(t)
  if t == nil then return nil end
  local keys = {}
  for k, v in pairs(t) do
    if type(k) ~= "string" then raise("safetensors metadata: keys must be strings, got " .. type(k)) end
    if type(v) ~= "string" then raise("safetensors metadata: '" .. k .. "' must be a string, got " .. type(v)) end
    keys[#keys + 1] = k
  end
  if #keys == 0 then return nil end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = json_string(k) .. ":" .. json_string(t[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

---------------------------------------------------------------- files

-- tensors: {name = tensor} (written in sorted name order) or a list of
-- {name, tensor}; metadata: {key = string} or nil.
function S.save(path, tensors, metadata)
  if type(path) ~= "string" then raise("safetensors save: path must be a string") end
  local list = {}
  if type(tensors) ~= "table" then raise("safetensors save: tensors must be a table") end
  if #tensors > 0 then
    for i, e in ipairs(tensors) do list[i] = {e[1], e[2]} end
  else
    for k, v in pairs(tensors) do list[#list + 1] = {k, v} end
    table.sort(list, function(a, b) return a[1] < b[1] end)
  end
  local n = #list
  local names = ffi.new("const char *[?]", n + 1)
  local ts = ffi.new("td_tensor *[?]", n + 1)
  local keep = {}
  for i, e in ipairs(list) do
    if type(e[1]) ~= "string" then raise("safetensors save: tensor names must be strings") end
    if not B.is_tensor(e[2]) then raise("safetensors save: '" .. e[1] .. "' is not a tensor") end
    keep[i] = e[1]
    names[i - 1] = e[1]
    ts[i - 1] = e[2]
  end
  local meta = json_object(metadata)
  if C.td_safetensors_save(path, n, names, ts, meta) ~= 0 then fail("safetensors save") end
  return path, keep
end

local File = {}
File.__index = File

-- Opens a safetensors file (header validated; tensors read on demand).
function S.open(path)
  local p = C.td_st_open(path)
  if p == nil then fail("safetensors open") end
  return setmetatable({ptr = ffi.gc(p, C.td_st_close), path = path}, File)
end

function File:close()
  if self.ptr ~= nil then
    C.td_st_close(ffi.gc(self.ptr, nil))
    self.ptr = nil
  end
end

local function live(f)
  if f.ptr == nil then raise("safetensors: " .. f.path .. " is closed") end
  return f.ptr
end

-- Metadata keys in file order.
function File:metadata_keys()
  local p = live(self)
  local out = {}
  for i = 0, C.td_st_metadata_count(p) - 1 do out[i + 1] = ffi.string(C.td_st_metadata_key(p, i)) end
  return out
end

-- Tensor names in file order.
function File:names()
  local p = live(self)
  local out = {}
  for i = 0, C.td_st_count(p) - 1 do out[i + 1] = ffi.string(C.td_st_name(p, i)) end
  return out
end

function File:has(name) return C.td_st_dtype(live(self), name) ~= nil end

function File:dtype(name)
  local d = C.td_st_dtype(live(self), name)
  return d ~= nil and ffi.string(d) or nil
end

function File:shape(name)
  local buf = ffi.new("int64_t[?]", B.MAX_DIMS)
  local nd = C.td_st_shape(live(self), name, buf)
  if nd < 0 then return nil end
  local out = {}
  for i = 0, nd - 1 do out[i + 1] = tonumber(buf[i]) end
  return out
end

-- The tensor as float32 (a new tensor), or an error naming it.
function File:get(name)
  local t = C.td_st_get(live(self), name)
  if t == nil then fail("safetensors get '" .. tostring(name) .. "' from " .. self.path) end
  return B.track(t)
end

-- Rows [start, start + count) of dim 1 (start is 1-based).
function File:get_rows(name, start, count)
  local t = C.td_st_get_rows(live(self), name, start - 1, count)
  if t == nil then fail("safetensors get_rows '" .. tostring(name) .. "' from " .. self.path) end
  return B.track(t)
end

function File:metadata(key)
  local v = C.td_st_metadata(live(self), key)
  return v ~= nil and ffi.string(v) or nil
end

-- Every tensor of a file: {name = tensor}.
function S.read(path)
  local f = S.open(path)
  local out = {}
  for _, n in ipairs(f:names()) do out[n] = f:get(n) end
  f:close()
  return out
end

---------------------------------------------------------------- checkpoints

local function encode(v)
  local t = type(v)
  if t == "number" then return ("%.17g"):format(v) end
  if t == "boolean" then return v and "true" or "false" end
  if t == "string" then return v end
  if t == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = ("%.17g"):format(x) end
    return table.concat(parts, ",")
  end
  return nil
end

local function decode(s, like)
  local t = type(like)
  if t == "number" then return tonumber(s) end
  if t == "boolean" then return s == "true" end
  if t == "table" then
    local out = {}
    for x in s:gmatch("[^,]+") do out[#out + 1] = tonumber(x) end
    return out
  end
  return s
end

local CONFIG_TAGS = {number = "n", boolean = "b", string = "s", table = "l"}
local CONFIG_TYPES = {n = 0, b = false, s = "", l = {}}

local function config_metadata(config, meta)
  for k, v in pairs(config) do
    local tag = CONFIG_TAGS[type(v)]
    if not tag then raise(("save: config.%s is a %s (numbers, booleans, strings, lists only)"):format(k, type(v))) end
    meta["config." .. k] = tag .. ":" .. encode(v)
  end
end

-- The config a checkpoint was saved with ({} when it has none).
function S.read_config(path)
  local f = S.open(path)
  local cfg = {}
  for _, key in ipairs(f:metadata_keys()) do
    local k = key:match("^config%.(.+)$")
    if k then
      local tag, v = f:metadata(key):match("^(%a):(.*)$")
      if CONFIG_TYPES[tag] == nil then
        f:close()
        raise(("load: %s: metadata %s is not a tagged config value"):format(path, key))
      end
      cfg[k] = decode(v, CONFIG_TYPES[tag])
    end
  end
  f:close()
  return cfg
end

local STATE_KEYS = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"}

-- tide name -> PyTorch state_dict name of every parameter: children of a
-- Sequential or ModuleList count from 0 there, GRU weights end in _l0.
local LISTS = {Sequential = true, ModuleList = true}
local function torch_names(model)
  local map, seen = {}, {}
  local function join(a, b) return a == "" and b or a .. "." .. b end
  local function visit(m, tp, xp)
    if seen[m] then return end
    seen[m] = true
    for _, n in ipairs(m._param_order) do
      map[join(tp, n)] = join(xp, m.__name == "GRU" and n .. "_l0" or n)
    end
    for _, cn in ipairs(m._mod_order) do
      local xn = (LISTS[m.__name] and tonumber(cn)) and tostring(tonumber(cn) - 1) or cn
      visit(m._mods[cn], join(tp, cn), join(xp, xn))
    end
  end
  visit(model, "", "")
  return map
end
S.torch_names = torch_names

function S.save_checkpoint(path, model, opts)
  opts = opts or {}
  local list, meta = {}, {}
  local map = opts.torch_names and torch_names(model) or nil
  for name, p in model:named_parameters() do list[#list + 1] = {map and map[name] or name, p} end
  for k, v in pairs(opts.metadata or {}) do meta[k] = v end
  if type(model.config) == "table" and model.config.class then config_metadata(model.config, meta) end
  local opt = opts.optimizer
  if opt then
    local sd = opt:state_dict()
    meta["optim.kind"] = sd.kind
    meta["optim.steps"] = tostring(sd.steps)
    for gi, g in ipairs(sd.groups) do
      for k, v in pairs(g) do
        local e = k ~= "targets" and encode(v) or nil
        if e then meta[("optim.%d.%s"):format(gi, k)] = e end
      end
      for ti, ts in ipairs(g.targets) do
        meta[("optim.%d.%d.step"):format(gi, ti)] = tostring(ts.step)
        for _, k in ipairs(STATE_KEYS) do
          if ts[k] ~= nil then list[#list + 1] = {("optim.%d.%d.%s"):format(gi, ti, k), ts[k]} end
        end
      end
    end
  end
  meta["tide.format"] = "checkpoint 1"
  S.save(path, list, meta)
  return path
end

-- Loads parameters (and optimizer state) saved by save_checkpoint into an
-- existing model. Returns {key = value} for the metadata keys listed in
-- opts.metadata_keys.
function S.load_checkpoint(path, model, opts)
  opts = opts or {}
  local f = S.open(path)
  local sd = {}
  local names = model:state_dict()
  local map = opts.torch_names and torch_names(model) or nil
  local in_file = {}
  for name in pairs(names) do
    local fname = map and map[name] or name
    in_file[fname] = true
    if f:has(fname) then sd[name] = f:get(fname) end
  end
  if opts.strict ~= false then
    for _, n in ipairs(f:names()) do
      if not in_file[n] and not n:match("^optim%.") then
        f:close()
        raise(("load: %s has a tensor '%s' the model does not have"):format(path, n))
      end
    end
  end
  local ok, err = pcall(model.load_state_dict, model, sd, opts.strict ~= false)
  if not ok then
    f:close()
    error(err, 0)
  end
  local opt = opts.optimizer
  if opt then
    local kind = f:metadata("optim.kind")
    if kind == nil then
      f:close()
      raise("load: " .. path .. " has no optimizer state")
    end
    local cur = opt:state_dict()
    local osd = {kind = kind, steps = tonumber(f:metadata("optim.steps")) or 0, groups = {}}
    for gi, g in ipairs(cur.groups) do
      local gs = {targets = {}}
      for k, v in pairs(g) do
        if k ~= "targets" then
          local s = f:metadata(("optim.%d.%s"):format(gi, k))
          gs[k] = s ~= nil and decode(s, v) or v
        end
      end
      for ti in ipairs(g.targets) do
        local ts = {step = tonumber(f:metadata(("optim.%d.%d.step"):format(gi, ti))) or 0}
        for _, k in ipairs(STATE_KEYS) do
          local n = ("optim.%d.%d.%s"):format(gi, ti, k)
          if f:has(n) then ts[k] = f:get(n) end
        end
        gs.targets[ti] = ts
      end
      osd.groups[gi] = gs
    end
    local ok2, err2 = pcall(opt.load_state_dict, opt, osd)
    if not ok2 then
      f:close()
      error(err2, 0)
    end
  end
  local meta = {}
  for _, k in ipairs(opts.metadata_keys or {}) do meta[k] = f:metadata(k) end
  f:close()
  return meta
end

-- Rebuilds a model saved with a config: require(config.class)(config),
-- then its parameters, in eval mode.
function S.load_model(path)
  local cfg = S.read_config(path)
  if not cfg.class then
    raise(("load_model: %s has no config.class (saved from a model without a .config)"):format(path))
  end
  local ok, ctor = pcall(require, cfg.class)
  if not ok then raise(("load_model: %s names class %s, which does not load: %s"):format(path, cfg.class, ctor)) end
  local model = ctor(cfg)
  S.load_checkpoint(path, model)
  model:eval()
  return model
end

-- tide.save(path, model, opts) / tide.load(path, model, opts); without a
-- model, tide.save(path, tensors, metadata) writes tensors and
-- tide.load(path) returns {name = tensor}.
function S.save_any(path, what, opts)
  if require("tide.nn.module").is_module(what) then return S.save_checkpoint(path, what, opts) end
  return S.save(path, what, opts)
end

function S.load_any(path, model, opts)
  if model == nil then return S.read(path) end
  S.load_checkpoint(path, model, opts)
  return model
end

return S
