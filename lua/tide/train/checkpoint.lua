-- tide.train.checkpoint - training checkpoints: safetensors files with the
-- model's tensors, `extra` tensors, the optimizer's state and train.*
-- metadata (position, seeds, time, a checksum per tensor).
local B = require("tide_ffi")
local W = B.wrappers
local C = B.C
local raise = B.raise
local sys = require("tide.data.sys")
local S = require("tide.serialize")
local U = require("tide.train.util")
local bare, finite, sorted_keys = U.bare, U.finite, U.sorted_keys

local train = {}

local function is_tide_optimizer(opt)
  local ok, optim = pcall(require, "tide.optim")
  return ok and getmetatable(opt) == optim.Optimizer
end

-- (name, tensor) pairs of the model: named_parameters, else state_dict,
-- else parameters() as param.1, param.2, ...
local function model_entries(model)
  local list = {}
  if type(model) == "table" and model.named_parameters then
    for name, p in model:named_parameters() do list[#list + 1] = {name, p} end
  elseif type(model) == "table" and model.state_dict then
    local sd = model:state_dict()
    for _, k in ipairs(sorted_keys(sd)) do
      if B.is_tensor(sd[k]) then list[#list + 1] = {k, sd[k]} end
    end
  elseif type(model) == "table" and model.parameters then
    for i, p in ipairs(model:parameters()) do list[#list + 1] = {"param." .. i, p} end
  else
    raise("train.fit: the model needs named_parameters(), state_dict() or parameters()")
  end
  return list
end

-- What a checkpoint holds besides the optimizer: the model's tensors and
-- `extra` ones, seen by tide.serialize as one model.
local function make_proxy(model, extra)
  local list = model_entries(model)
  for _, k in ipairs(sorted_keys(extra)) do
    if not B.is_tensor(extra[k]) then raise("train.fit: extra." .. tostring(k) .. " is not a tensor") end
    list[#list + 1] = {"extra." .. k, extra[k]}
  end
  local proxy = {list = list}
  function proxy.named_parameters()
    local i = 0
    return function()
      i = i + 1
      local e = list[i]
      if e then return e[1], e[2] end
    end
  end
  function proxy.state_dict()
    local sd = {}
    for _, e in ipairs(list) do sd[e[1]] = e[2] end
    return sd
  end
  -- Checks every tensor (shape, checksum) before copying any.
  function proxy.load_state_dict(_, sd)
    local missing = {}
    for _, e in ipairs(list) do
      local t = sd[e[1]]
      if t == nil then
        missing[#missing + 1] = e[1]
      elseif t.ndim ~= e[2].ndim or t.numel ~= e[2].numel or B.shape_str(t) ~= B.shape_str(e[2]) then
        raise(("'%s' has shape %s in the checkpoint, %s in the model"):format(e[1], B.shape_str(t), B.shape_str(e[2])))
      end
    end
    if #missing > 0 then raise("the checkpoint lacks " .. table.concat(missing, ", ")) end
    if proxy.check then proxy.check(sd) end
    local prev = C.td_set_grad_enabled(0)
    local ok, err = pcall(function()
      for _, e in ipairs(list) do W.copy_(e[2], sd[e[1]]) end
    end)
    C.td_set_grad_enabled(prev)
    if not ok then error(err, 0) end
  end
  return proxy
end

-- A checksum of a tensor: its sum and sum of squares, as text.
local function checksum(t)
  if t.numel == 0 then return "0,0" end
  return ("%.9g,%.9g"):format(W.item(W.sum(t)), W.item(W.sum(W.square(t))))
end

local function close_enough(a, b)
  if a == b then return true end
  if not (finite(a) and finite(b)) then return false end
  return math.abs(a - b) <= 1e-4 * math.max(math.abs(a), math.abs(b)) + 1e-6
end

local function same_checksum(x, y)
  local a1, a2 = x:match("^([^,]+),([^,]+)$")
  local b1, b2 = y:match("^([^,]+),([^,]+)$")
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 and b1 and close_enough(a1, b1) and close_enough(a2, b2)
end

-- The state of an optimizer that is not tide.optim's: a flat table of
-- tensors, numbers, strings and booleans.
local function generic_opt_state(opt)
  if type(opt) ~= "table" or not opt.state_dict or is_tide_optimizer(opt) then return nil end
  local sd = opt:state_dict()
  if type(sd) ~= "table" then raise("train.fit: optimizer:state_dict() must return a table") end
  local tensors, meta = {}, {}
  for k, v in pairs(sd) do
    local key = "train.opt." .. tostring(k)
    if B.is_tensor(v) then tensors[#tensors + 1] = {key, v}
    elseif type(v) == "number" then meta[key] = "n:" .. ("%.17g"):format(v)
    elseif type(v) == "string" then meta[key] = "s:" .. v
    elseif type(v) == "boolean" then meta[key] = "b:" .. tostring(v)
    else
      raise(("train.fit: optimizer state '%s' is a %s: a state_dict to checkpoint must be flat " ..
             "(tensors, numbers, strings, booleans)"):format(tostring(k), type(v)))
    end
  end
  return tensors, meta
end

local CKPT_PATTERN = "^ckpt%-(%d+)%.safetensors$"

-- Checkpoint paths of dir, oldest first.
function train.checkpoints(dir)
  local names = sys.list_dir(dir) or {}
  local list = {}
  for _, n in ipairs(names) do
    local g = n:match(CKPT_PATTERN)
    if g then list[#list + 1] = {tonumber(g), dir .. "/" .. n} end
  end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  local out = {}
  for i, e in ipairs(list) do out[i] = e[2] end
  return out
end

-- The newest checkpoint of dir, or nil.
function train.latest(dir)
  local l = train.checkpoints(dir)
  return l[#l]
end

-- Metadata of a training checkpoint (the train.* keys), or an error.
local TRAIN_KEYS = {"train.epoch", "train.step", "train.global_step", "train.seed", "train.rng_seed", "train.time",
                    "train.steps_per_epoch"}

local function open_info(path)
  local ok, f = pcall(S.open, path)
  if not ok then raise("train: cannot read checkpoint " .. path .. ": " .. bare(f):gsub("^safetensors open: ", "")) end
  local info = {path = path, names = f:names()}
  for _, k in ipairs(TRAIN_KEYS) do info[k:sub(7)] = f:metadata(k) end
  info.global_step = tonumber(info.global_step)
  if info.global_step == nil then
    f:close()
    raise("train: " .. path .. " is not a training checkpoint (no train.global_step metadata)")
  end
  info.epoch, info.step = tonumber(info.epoch), tonumber(info.step)
  info.time = tonumber(info.time) or 0
  info.steps_per_epoch = tonumber(info.steps_per_epoch)
  info.f = f
  return info
end

-- {path, names, epoch (done), step (into the next), global_step, seed,
-- rng_seed, time, steps_per_epoch} of a training checkpoint.
function train.info(path)
  local info = open_info(path)
  info.f:close()
  info.f = nil
  return info
end

-- Loads a training checkpoint into model (and optimizer, scheduler, extra
-- tensors); returns its info {epoch, step, global_step, ...}. Fails before
-- touching anything when the file is truncated, corrupt or does not fit.
function train.load(path, model, opts)
  opts = opts or {}
  local info = open_info(path)
  local f = info.f
  local proxy = make_proxy(model, opts.extra)
  local function fail(msg)
    if f.ptr ~= nil then f:close() end
    raise("train: cannot load checkpoint " .. path .. ": " .. bare(msg))
  end
  -- read everything first: a truncated or corrupt file fails here
  local sd = {}
  for _, e in ipairs(proxy.list) do
    if f:has(e[1]) then
      local ok, t = pcall(f.get, f, e[1])
      if not ok then fail(tostring(t)) end
      sd[e[1]] = t
    end
  end
  for _, name in ipairs(info.names) do
    local want = f:metadata("train.sum." .. name)
    if want then
      local t = sd[name]
      if t == nil then
        local ok, r = pcall(f.get, f, name)
        if not ok then fail(tostring(r)) end
        t = r
      end
      local got = checksum(t)
      if not same_checksum(got, want) then
        fail(("tensor '%s' does not match its checksum (sum, sum of squares: %s, written %s): the file is corrupt")
          :format(name, got, want))
      end
    end
  end
  local opt = opts.optimizer
  local gtensors = {}
  local gmeta = {}
  if opt ~= nil and opt.load_state_dict and not is_tide_optimizer(opt) then
    for _, n in ipairs(info.names) do
      if n:match("^train%.opt%.") then
        local ok, t = pcall(f.get, f, n)
        if not ok then fail(tostring(t)) end
        gtensors[n:sub(11)] = t
      end
    end
  end
  -- generic optimizer metadata, scheduler state
  local sched_meta = {}
  do
    -- tide.serialize has no listing of metadata keys: ask for the ones we may have written
    if opt ~= nil and not is_tide_optimizer(opt) and opt.state_dict then
      local cur = opt:state_dict()
      for k in pairs(cur) do
        local v = f:metadata("train.opt." .. tostring(k))
        if v then gmeta[k] = v end
      end
    end
    if opts.scheduler and opts.scheduler.state_dict then
      for k in pairs(opts.scheduler:state_dict()) do
        local v = f:metadata("train.scheduler." .. tostring(k))
        if v then sched_meta[k] = tonumber(v) or v end
      end
    end
  end
  f:close()
  local ok, err = pcall(proxy.load_state_dict, proxy, sd)
  if not ok then fail(tostring(err)) end
  if opt ~= nil and is_tide_optimizer(opt) then
    local ok2, err2 = pcall(S.load_checkpoint, path, {state_dict = function() return {} end,
      load_state_dict = function() end}, {optimizer = opt, strict = false})
    if not ok2 then fail(tostring(err2)) end
  elseif opt ~= nil and opt.load_state_dict then
    local st = {}
    for k, t in pairs(gtensors) do st[k] = t end
    for k, v in pairs(gmeta) do
      local tag, rest = v:match("^(%a):(.*)$")
      if tag == "n" then st[k] = tonumber(rest) elseif tag == "b" then st[k] = rest == "true" else st[k] = rest end
    end
    opt:load_state_dict(st)
  end
  if opts.scheduler and next(sched_meta) then opts.scheduler:load_state_dict(sched_meta) end
  info.f = nil
  return info
end

train.is_tide_optimizer = is_tide_optimizer
train.make_proxy = make_proxy
train.checksum = checksum
train.generic_opt_state = generic_opt_state
return train
