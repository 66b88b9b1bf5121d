-- tide_ffi.lua - the LuaJIT FFI binding of libtide.
--
-- The C declarations are read from engine/include/tide.h (between the
-- TD_CDEF_BEGIN / TD_CDEF_END markers), so the header is the single source.
-- For every C function a Lua wrapper is generated from its declaration:
--   * tensor arguments accept tensors, numbers (0-d tensors), nested tables;
--   * axes are 1-based (negative counts from the end) and converted to the
--     engine's 0-based axes or axis bit masks; shapes are tables or varargs;
--   * an engine error (NULL / -1) becomes a Lua error raised at the user's
--     line with td_last_error()'s text;
--   * returned tensors are owned by the Lua GC (ffi.gc + td_release), and the
--     GC is driven by the bytes C holds, so training loops stay flat without
--     collectgarbage().
-- The Tensor metatype and the user API live in lua/tide/.
local ffi = require("ffi")
local bit = require("bit")

-- busted and other hosts may clear package.loaded; ffi.cdef and
-- ffi.metatype cannot run twice, so the loaded module is kept in the registry.
local REGISTRY_KEY = "tide_ffi.module"
local registry = debug.getregistry()
if registry[REGISTRY_KEY] then return registry[REGISTRY_KEY] end

local M = {ffi = ffi}

---------------------------------------------------------------- paths

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

local SELF_SOURCE = debug.getinfo(1, "S").source
local SELF_DIR = dirname(SELF_SOURCE:sub(1, 1) == "@" and SELF_SOURCE:sub(2) or "./x")

-- The directory and its ancestors, nearest first (at most n of them).
local function ancestors(dir, n)
  local out, d = {}, dir
  for _ = 1, n do
    out[#out + 1] = d
    local up = d:match("^(.*)/[^/]+$")
    if not up or up == d then
      if d ~= "/" and d:sub(1, 1) == "/" then out[#out + 1] = "/" end
      break
    end
    d = up == "" and "/" or up
  end
  if dir:sub(1, 1) ~= "/" then -- a relative path: walk up with ../
    local rel = dir
    for _ = 1, n do rel = rel .. "/.."; out[#out + 1] = rel end
  end
  return out
end

-- Names of the entries of a directory (Linux glibc layout), or {} if that
-- cannot be read.
local function list_dir(dir)
  local ok, names = pcall(function()
    if not pcall(ffi.typeof, "struct tide_dirent_") then
      ffi.cdef [[
        struct tide_dirent_ { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[256]; };
        void *opendir(const char *name);
        struct tide_dirent_ *readdir(void *dirp);
        int closedir(void *dirp);
      ]]
    end
    local d = ffi.C.opendir(dir)
    local out = {}
    if d == nil then return out end
    while true do
      local e = ffi.C.readdir(d)
      if e == nil then break end
      out[#out + 1] = ffi.string(e.name)
    end
    ffi.C.closedir(d)
    table.sort(out)
    return out
  end)
  return ok and names or {}
end

local function find_header()
  local env = os.getenv("TIDE_HEADER")
  if env and env ~= "" then return env end
  local tried = {}
  local function try(p)
    tried[#tried + 1] = p
    return file_exists(p) and p or nil
  end
  for _, d in ipairs(ancestors(SELF_DIR, 6)) do
    local p = try(d .. "/engine/include/tide.h") or try(d .. "/include/tide.h")
    if p then return p end
  end
  error("tide: cannot find tide.h (set TIDE_HEADER); looked at " .. table.concat(tried, ", "), 0)
end

-- Keeps a loaded library mapped for the life of the process. Without it,
-- lua_close() may unload libtide (and its OpenMP runtime, whose idle worker
-- threads then crash) before the finalizers of the last tensors have run.
local function pin(path)
  pcall(function()
    if not pcall(function() return ffi.C.dlopen end) then ffi.cdef("void *dlopen(const char *file, int mode);") end
    ffi.C.dlopen(path, 0x1000 + 0x2) -- RTLD_NODELETE | RTLD_NOW
  end)
end

local function open(path)
  local lib = ffi.load(path)
  pin(path)
  return lib, path
end

-- How long OpenMP workers spin before they sleep between parallel regions.
-- libgomp's default (~3 ms) takes the CPU from the interpreter's thread on
-- small machines (a CMVAE step on 2 threads here: 398 ms, slower than one
-- thread), sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs a futex wake-up
-- per region (an MVAE step: ~85 context switches); ~50 us of spinning
-- (GOMP_SPINCOUNT=5000) keeps the workers awake through a step's
-- back-to-back regions only (bench/README.md, "Threads"). Unless the user set
-- either variable; libgomp reads them when it loads, with libtide, so this
-- runs first.
local function short_spin_openmp_workers()
  pcall(function()
    if os.getenv("OMP_WAIT_POLICY") or os.getenv("GOMP_SPINCOUNT") then return end
    if not pcall(function() return ffi.C.setenv end) then
      ffi.cdef("int setenv(const char *name, const char *value, int overwrite);")
    end
    ffi.C.setenv("GOMP_SPINCOUNT", "5000", 0)
  end)
end

-- The library: $TIDE_LIB; else already linked into this process (a host
-- program); else a build*/ directory of the source tree holding this file;
-- else lib/ of an installed prefix; else the system linker.
local function load_library()
  short_spin_openmp_workers()
  local env = os.getenv("TIDE_LIB")
  if env and env ~= "" then return open(env) end
  if pcall(function() return ffi.C.td_last_error end) then return ffi.C, "(this process)" end
  local tried = {}
  local root = SELF_DIR:match("^(.*)/[^/]+$") or (SELF_DIR:match("^[^/.][^/]*$") and ".") or (SELF_DIR .. "/..")
  if file_exists(root .. "/engine/include/tide.h") then
    local cands = {root .. "/build/libtide.so"}
    for _, name in ipairs(list_dir(root)) do
      if name:match("^build.") then cands[#cands + 1] = root .. "/" .. name .. "/libtide.so" end
    end
    for _, p in ipairs(cands) do
      tried[#tried + 1] = p
      if file_exists(p) then return open(p) end
    end
  end
  for _, d in ipairs(ancestors(SELF_DIR, 4)) do
    local p = d .. "/lib/libtide.so"
    tried[#tried + 1] = p
    if file_exists(p) then return open(p) end
  end
  local ok, lib = pcall(ffi.load, "tide")
  if ok then
    pin("libtide.so")
    return lib, "tide"
  end
  error("tide: cannot load libtide (set TIDE_LIB); looked at " .. table.concat(tried, ", ") ..
        " and the system linker: " .. tostring(lib), 0)
end

---------------------------------------------------------------- cdefs

-- Struct fields renamed on the Lua side, so that the Tensor API can use
-- these names for methods (t:shape(), t:grad()) and Lua-typed getters
-- (t.numel as a number, t.is_leaf as a boolean). The layout is unchanged.
local RENAMED_FIELDS = {"shape", "stride", "numel", "requires_grad", "is_leaf", "grad"}

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- The declarations between the markers, without comments, TD_MAX_DIMS
-- substituted, and the renamed td_tensor fields.
local function extract_cdefs(text)
  local b = text:find("/%*%s*TD_CDEF_BEGIN%s*%*/")
  local e = text:find("/%*%s*TD_CDEF_END%s*%*/")
  if not b or not e or e < b then error("tide: tide.h has no TD_CDEF_BEGIN/TD_CDEF_END block", 0) end
  local from = text:find("\n", b, true) + 1
  local to = text:sub(1, e):match(".*()\n")
  local body = text:sub(from, to)
  body = body:gsub("/%*.-%*/", ""):gsub("//[^\n]*", "")
  local maxd = tonumber(text:match("#define%s+TD_MAX_DIMS%s+(%d+)"))
  if not maxd then error("tide: tide.h does not define TD_MAX_DIMS", 0) end
  body = body:gsub("%f[%w_]TD_MAX_DIMS%f[^%w_]", tostring(maxd))
  local s, e2, st = body:find("struct%s+td_tensor%s*(%b{})")
  if not s then error("tide: tide.h has no struct td_tensor", 0) end
  local fields = st
  for _, f in ipairs(RENAMED_FIELDS) do
    local n
    fields, n = fields:gsub("([%s%*])" .. f .. "([%s;%[])", "%1_" .. f .. "%2")
    if n ~= 1 then error("tide: struct td_tensor has no field '" .. f .. "' (tide.h changed?)", 0) end
  end
  body = body:sub(1, e2 - #st) .. fields .. body:sub(e2 + 1)
  return body, maxd
end

-- {name=, ret=, params={{type=, name=}...}} for each function declaration.
local function parse_functions(cdefs)
  local fns = {}
  local flat = cdefs:gsub("%b{}", "")
  for stmt in flat:gmatch("[^;]+") do
    stmt = trim(stmt:gsub("%s+", " "))
    if stmt ~= "" and not stmt:match("^typedef") then
      local ret, name, args = stmt:match("^(.-)([%a_][%w_]*)%s*(%b())$")
      if ret and name:match("^td_") then
        local params = {}
        args = trim(args:sub(2, -2))
        if args ~= "" and args ~= "void" then
          for p in (args .. ","):gmatch("([^,]*),") do
            p = trim(p)
            local pname = p:match("([%a_][%w_]*)$")
            local ptype = trim(p:sub(1, #p - #pname))
            if ptype == "" or ptype:match("^const$") then ptype, pname = p, "arg" .. (#params + 1) end
            params[#params + 1] = {type = ptype, name = pname}
          end
        end
        fns[#fns + 1] = {cname = name, name = name:sub(4), ret = trim(ret), params = params}
      end
    end
  end
  return fns
end

---------------------------------------------------------------- load

local header_path = find_header()
local hf = assert(io.open(header_path, "rb"))
local header_text = hf:read("*a")
hf:close()
local cdefs, MAXD = extract_cdefs(header_text)
ffi.cdef(cdefs)
local C, lib_path = load_library()

M.C = C
M.header_path = header_path
M.lib_path = lib_path
M.cdefs = cdefs
M.MAX_DIMS = MAXD
M.functions = parse_functions(cdefs)

-- A tensor is held in Lua as a reference (struct td_tensor &), not as a
-- pointer: a pointer has built-in arithmetic (p + 1 is the next struct), a
-- reference has none, so +, - and friends reach the metatype. A reference
-- converts to td_tensor * when passed to C. ffi.istype(TT, x) accepts both.
local TT = ffi.typeof("td_tensor")
M.TensorType = TT
local release = C.td_release

---------------------------------------------------------------- errors

-- Sources whose frames are skipped when an error is raised: this file, the
-- generated wrappers and the Lua library (lua/tide/ registers itself).
local internal_prefixes = {SELF_SOURCE}
function M.add_internal_source(prefix) internal_prefixes[#internal_prefixes + 1] = prefix end

local function is_internal(src)
  if src:sub(1, 7) == "=[tide]" then return true end
  for i = 1, #internal_prefixes do
    local p = internal_prefixes[i]
    if src:sub(1, #p) == p then return true end
  end
  return false
end

-- error(msg) at the first stack level outside tide, so the message starts
-- with the user's file:line.
function M.raise(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info then error(msg, 0) end
    if info.what ~= "C" and not is_internal(info.source) then error(msg, level) end
    level = level + 1
  end
end
local raise = M.raise

function M.last_error() return ffi.string(C.td_last_error()) end

local function fail(fname)
  local msg = ffi.string(C.td_last_error())
  if msg == "" then msg = fname .. ": failed without an error message" end
  raise(msg)
end

---------------------------------------------------------------- memory

-- Lua sees a tensor as a pointer-sized box, so its own GC never notices the
-- megabytes a tensor holds in C. After each new tensor we compare the bytes
-- C holds (storage plus an estimate per tensor header and graph node) with a
-- threshold and run a full collection when it is passed; the next threshold
-- is max(ratio * in_use, in_use + min_bytes), as Lua's own pause does.
local gc = {min_bytes = 16 * 2 ^ 20, ratio = 2.0, header_bytes = 512, runs = 0, next = 0}

local function c_bytes()
  return tonumber(C.td_mem_in_use()) + tonumber(C.td_live_tensors()) * gc.header_bytes
end

local function collect()
  collectgarbage("collect")
  local used = c_bytes()
  gc.next = math.max(used * gc.ratio, used + gc.min_bytes)
  gc.runs = gc.runs + 1
end
gc.next = c_bytes() + gc.min_bytes

-- Takes ownership of a new td_tensor * returned by C; returns the Lua tensor.
local function track(p)
  p = ffi.gc(p[0], release)
  if c_bytes() > gc.next then collect() end
  return p
end
M.track = track
M.collect = collect
M.c_bytes = c_bytes

-- gc_config{min_bytes=, ratio=, header_bytes=} sets the policy; returns it.
function M.gc_config(opts)
  if opts ~= nil then
    for k, v in pairs(opts) do
      if gc[k] == nil or k == "runs" or k == "next" or type(v) ~= "number" then
        raise("gc_config: unknown or bad option '" .. tostring(k) .. "'")
      end
      gc[k] = v
    end
    local used = c_bytes()
    gc.next = math.max(used * gc.ratio, used + gc.min_bytes)
  end
  return {min_bytes = gc.min_bytes, ratio = gc.ratio, header_bytes = gc.header_bytes, runs = gc.runs}
end

---------------------------------------------------------------- arguments

local function describe(x)
  if type(x) == "cdata" then return tostring(ffi.typeof(x)) end
  return type(x)
end

local function is_tensor(x) return ffi.istype(TT, x) end
M.is_tensor = is_tensor

-- Set by lua/tide/tensor.lua: nested Lua tables -> tensor.
M.from_table = nil

local function scalar(x, fname)
  local p = C.td_scalar(x)
  if p == nil then fail(fname) end
  return track(p)
end

local H = {}

function H.tensor(x, fname, pname)
  if ffi.istype(TT, x) then return x end
  if x == nil then return nil end
  local tx = type(x)
  if tx == "number" then return scalar(x, fname) end
  if tx == "table" and M.from_table then return M.from_table(x) end
  raise(fname .. ": argument '" .. pname .. "' must be a tensor, got " .. describe(x))
end

function H.int(x, fname, pname, default)
  if x == nil then x = default end
  if type(x) == "number" then
    if x ~= math.floor(x) then raise(fname .. ": argument '" .. pname .. "' must be a whole number, got " .. x) end
    return x
  end
  if type(x) == "boolean" then return x and 1 or 0 end
  if x == nil then raise(fname .. ": argument '" .. pname .. "' is missing") end
  if type(x) == "cdata" and ffi.istype("int64_t", x) then return x end
  raise(fname .. ": argument '" .. pname .. "' must be a number, got " .. describe(x))
end

function H.number(x, fname, pname, default)
  if x == nil then x = default end
  if type(x) == "number" then return x end
  if x == nil then raise(fname .. ": argument '" .. pname .. "' is missing") end
  raise(fname .. ": argument '" .. pname .. "' must be a number, got " .. describe(x))
end

function H.string(x, fname, pname)
  if x == nil or type(x) == "string" then return x end
  raise(fname .. ": argument '" .. pname .. "' must be a string, got " .. describe(x))
end

-- A 1-based axis (negative from the end) -> the engine's 0-based axis.
function H.axis(x, fname, pname, default)
  x = H.int(x, fname, pname, default)
  if x > 0 then return x - 1 end
  if x == 0 then raise(fname .. ": axis 0 does not exist: axes are 1-based (negative counts from the end)") end
  return x
end

-- A 1-based position -> 0-based.
function H.position(x, fname, pname, default)
  x = H.int(x, fname, pname, default)
  if x < 1 then raise(fname .. ": '" .. pname .. "' is a 1-based position, got " .. x) end
  return x - 1
end

local function shape_str(t)
  local s = {}
  for i = 0, t.ndim - 1 do s[#s + 1] = tostring(tonumber(t._shape[i])) end
  return "[" .. table.concat(s, ",") .. "]"
end
M.shape_str = shape_str

local function mask_bit(a, nd, t, fname)
  if type(a) ~= "number" or a ~= math.floor(a) then
    raise(fname .. ": axes must be whole numbers, got " .. describe(a))
  end
  local z = a > 0 and a - 1 or nd + a
  if a == 0 or z < 0 or z >= nd then
    raise(fname .. ": axis " .. a .. " is out of range for shape " .. (nd > 0 and shape_str(t) or "[]") ..
          " (axes are 1-based, negative counts from the end)")
  end
  return bit.lshift(1, z)
end

-- nil (all axes), an axis or a table of axes -> the engine's bit mask.
function H.mask(x, t, fname)
  if x == nil then return 0 end
  local nd = ffi.istype(TT, t) and t.ndim or 0
  if type(x) == "number" then return mask_bit(x, nd, t, fname) end
  if type(x) ~= "table" then raise(fname .. ": axes must be a number or a table, got " .. describe(x)) end
  local m = 0
  for i = 1, #x do m = bit.bor(m, mask_bit(x[i], nd, t, fname)) end
  if m == 0 then raise(fname .. ": empty axis list") end
  return m
end

-- A shape as a table or as varargs -> (ndim, buf).
function H.shape(buf, fname, first, ...)
  local n = select("#", ...)
  if type(first) == "table" then
    if n > 0 then raise(fname .. ": give the shape as a table or as numbers, not both") end
    n = #first
    if n > MAXD then raise(fname .. ": " .. n .. " dims, at most " .. MAXD) end
    for i = 1, n do
      local v = first[i]
      if type(v) ~= "number" or v ~= math.floor(v) then
        raise(fname .. ": shape entries must be whole numbers, got " .. describe(v))
      end
      buf[i - 1] = v
    end
    return n, buf
  end
  if first == nil then
    if n > 0 then raise(fname .. ": shape entry 1 is nil") end
    return 0, buf
  end
  n = n + 1
  if n > MAXD then raise(fname .. ": " .. n .. " dims, at most " .. MAXD) end
  for i = 1, n do
    local v = select(i, first, ...)
    if type(v) ~= "number" or v ~= math.floor(v) then
      raise(fname .. ": shape entries must be whole numbers, got " .. describe(v))
    end
    buf[i - 1] = v
  end
  return n, buf
end

-- Axes as a table or varargs (1-based) -> int buffer of 0-based axes.
function H.dims(buf, fname, first, ...)
  local t = type(first) == "table" and first or {first, ...}
  if #t > MAXD then raise(fname .. ": " .. #t .. " dims, at most " .. MAXD) end
  for i = 1, #t do buf[i - 1] = H.axis(t[i], fname, "dims") end
  return buf
end

-- A table of tensors -> (n, array). Elements must be tensors already (no
-- conversions, so nothing is allocated between reading them and the call).
function H.list(x, fname, pname)
  if type(x) ~= "table" then raise(fname .. ": argument '" .. pname .. "' must be a table of tensors, got " .. describe(x)) end
  local n = #x
  for i = 1, n do
    if not ffi.istype(TT, x[i]) then
      raise(fname .. ": element " .. i .. " of '" .. pname .. "' must be a tensor, got " .. describe(x[i]))
    end
  end
  local arr = ffi.new("td_tensor *[?]", n > 0 and n or 1)
  for i = 1, n do arr[i - 1] = x[i] end
  return n, arr
end

function H.has_error() return C.td_last_error()[0] ~= 0 end
H.fail = fail
H.track = track
H.ffi = ffi

---------------------------------------------------------------- wrappers

-- Integer params whose name makes them axes (1-based in Lua).
local AXIS_NAMES = {axis = true, d0 = true, d1 = true}
-- (function.param) -> kind, where the name alone does not tell.
local PARAM_KIND = {["narrow.start"] = "position"}
-- Defaults, in Lua terms (before axis conversion).
local DEFAULTS = {
  ["var.correction"] = 1, ["leaky_relu.slope"] = 0.01,
  ["clamp.lo"] = -math.huge, ["clamp.hi"] = math.huge,
  ["concat.axis"] = 1, ["stack.axis"] = 1,
  ["softmax.axis"] = -1, ["log_softmax.axis"] = -1,
  ["conv2d.stride"] = 1, ["conv_transpose2d.stride"] = 1,
  ["group_norm.eps"] = 1e-5, ["categorical.nsamples"] = 1,
  ["set_requires_grad.flag"] = true, ["set_grad_enabled.flag"] = true,
}
local NAME_DEFAULTS = {keepdim = false, pad = 0, output_pad = 0}
-- Int results that are booleans.
local BOOL_RESULT = {is_contiguous = true, grad_enabled = true, set_grad_enabled = true}
-- Tensor results where NULL without an error message means "none" (nil).
local NULLABLE = {get_grad = true}
-- Not wrapped: lifetime is the GC's job.
local SKIP = {retain = true, release = true}

local function norm_type(t) return (t:gsub("const", ""):gsub("%s+", "")) end

local function classify(f)
  local ps = f.params
  for i, p in ipairs(ps) do
    local ty = norm_type(p.type)
    local key = f.name .. "." .. p.name
    if PARAM_KIND[key] then p.kind = PARAM_KIND[key]
    elseif ty == "td_tensor**" then p.kind = "list"
    elseif ty == "td_tensor*" then p.kind = "tensor"
    elseif ty == "int64_t*" and i > 1 and norm_type(ps[i - 1].type) == "int" and ps[i - 1].name == "ndim" then p.kind = "shape"
    elseif ty == "int*" and p.name == "dims" then p.kind = "dims"
    elseif ty == "uint32_t" and p.name == "axes" then p.kind = "mask"
    elseif ty == "int" and AXIS_NAMES[p.name] then p.kind = "axis"
    elseif ty == "int" or ty == "int64_t" or ty == "uint64_t" or ty == "uint32_t" or ty == "int32_t" then p.kind = "int"
    elseif ty == "float" or ty == "double" then p.kind = "number"
    elseif ty == "char*" then p.kind = "string"
    else p.kind = "raw" end
    local d = DEFAULTS[key]
    if d == nil then d = NAME_DEFAULTS[p.name] end
    p.default = d
  end
  -- a list needs its count just before it; a shape its ndim
  for i, p in ipairs(ps) do
    if (p.kind == "list" or p.kind == "shape") then
      local prev = ps[i - 1]
      if prev and norm_type(prev.type) == "int" then prev.kind = "count"
      elseif p.kind == "list" then p.kind = "raw" end
    end
  end
  local lua_params = {}
  for _, p in ipairs(ps) do if p.kind ~= "count" then lua_params[#lua_params + 1] = p end end
  f.lua_params = lua_params
  local last = lua_params[#lua_params]
  f.varargs = last and (last.kind == "shape" or last.kind == "dims") or false
  f.method = lua_params[1] ~= nil and lua_params[1].kind == "tensor"
  local rt = norm_type(f.ret)
  if rt == "td_tensor*" then f.rkind = "tensor"
  elseif rt == "int" then f.rkind = BOOL_RESULT[f.name] and "bool" or "status"
  elseif rt == "float" then f.rkind = "float"
  elseif rt == "double" then f.rkind = "double"
  elseif rt == "int64_t" or rt == "uint64_t" or rt == "int32_t" or rt == "uint32_t" then f.rkind = "int64"
  elseif rt == "char*" then f.rkind = "string"
  elseif rt == "void" then f.rkind = "void"
  elseif rt:match("%*$") then f.rkind = "pointer"
  else f.rkind = "value" end
end

local function q(s) return string.format("%q", s) end

-- Lua source of the wrapper of f.
local function wrapper_source(f)
  local L = {"local C, H = ...", "local ffi = H.ffi"}
  local args, pre, post, lists = {}, {}, {}, {}
  local first_tensor
  for i, p in ipairs(f.lua_params) do
    local v = "p" .. i
    p.lua = v
    if p.kind == "shape" then L[#L + 1] = "local buf" .. i .. " = ffi.new('int64_t[" .. MAXD .. "]')" end
    if p.kind == "dims" then L[#L + 1] = "local buf" .. i .. " = ffi.new('int[" .. MAXD .. "]')" end
  end
  local names = {}
  for i, p in ipairs(f.lua_params) do
    names[i] = (f.varargs and i == #f.lua_params) and "..." or p.lua
  end
  L[#L + 1] = "return function(" .. table.concat(names, ", ") .. ")"
  local fn, d = q(f.name), nil
  for i, p in ipairs(f.lua_params) do
    local v, pn = p.lua, q(p.name)
    d = p.default == nil and "nil" or (p.default == math.huge and "math.huge") or
        (p.default == -math.huge and "-math.huge") or tostring(p.default)
    local is_va = f.varargs and i == #f.lua_params
    if p.kind == "tensor" then
      pre[#pre + 1] = ("local a%d = H.tensor(%s, %s, %s)"):format(i, v, fn, pn)
      first_tensor = first_tensor or ("a" .. i)
    elseif p.kind == "int" then pre[#pre + 1] = ("local a%d = H.int(%s, %s, %s, %s)"):format(i, v, fn, pn, d)
    elseif p.kind == "number" then pre[#pre + 1] = ("local a%d = H.number(%s, %s, %s, %s)"):format(i, v, fn, pn, d)
    elseif p.kind == "axis" then pre[#pre + 1] = ("local a%d = H.axis(%s, %s, %s, %s)"):format(i, v, fn, pn, d)
    elseif p.kind == "position" then pre[#pre + 1] = ("local a%d = H.position(%s, %s, %s, %s)"):format(i, v, fn, pn, d)
    elseif p.kind == "string" then pre[#pre + 1] = ("local a%d = H.string(%s, %s, %s)"):format(i, v, fn, pn)
    elseif p.kind == "mask" then post[#post + 1] = {i = i, v = v}
    elseif p.kind == "shape" then
      pre[#pre + 1] = ("local n%d, a%d = H.shape(buf%d, %s, %s)"):format(i, i, i, fn, is_va and "..." or v)
    elseif p.kind == "dims" then
      pre[#pre + 1] = ("local a%d = H.dims(buf%d, %s, %s)"):format(i, i, fn, is_va and "..." or v)
    elseif p.kind == "list" then lists[#lists + 1] = ("local n%d, a%d = H.list(%s, %s, %s)"):format(i, i, v, fn, pn)
    else pre[#pre + 1] = ("local a%d = %s"):format(i, v) end
  end
  for _, m in ipairs(post) do
    pre[#pre + 1] = ("local a%d = H.mask(%s, %s, %s)"):format(m.i, m.v, first_tensor or "nil", fn)
  end
  for _, s in ipairs(pre) do L[#L + 1] = "  " .. s end
  for _, s in ipairs(lists) do L[#L + 1] = "  " .. s end
  -- C arguments, with the implicit counts
  local li = 0
  for _, p in ipairs(f.params) do
    if p.kind == "count" then
      args[#args + 1] = "n" .. (li + 1)
    else
      li = li + 1
      args[#args + 1] = "a" .. li
    end
  end
  local call = "C." .. f.cname .. "(" .. table.concat(args, ", ") .. ")"
  local rk = f.rkind
  local clear = (rk == "float" or rk == "pointer" or rk == "string" or NULLABLE[f.name]) and f.name ~= "last_error"
  if clear then L[#L + 1] = "  C.td_clear_error()" end
  if rk == "void" then
    L[#L + 1] = "  " .. call
  else
    L[#L + 1] = "  local r = " .. call
  end
  if rk == "tensor" then
    if NULLABLE[f.name] then
      L[#L + 1] = "  if r == nil then if H.has_error() then H.fail(" .. fn .. ") end return nil end"
    else
      L[#L + 1] = "  if r == nil then H.fail(" .. fn .. ") end"
    end
    L[#L + 1] = "  return H.track(r)"
  elseif rk == "status" then
    L[#L + 1] = "  if r == -1 then H.fail(" .. fn .. ") end"
    L[#L + 1] = f.method and "  return p1" or "  return r"
  elseif rk == "bool" then
    L[#L + 1] = "  if r == -1 then H.fail(" .. fn .. ") end"
    L[#L + 1] = "  return r ~= 0"
  elseif rk == "float" then
    L[#L + 1] = "  if r ~= r and H.has_error() then H.fail(" .. fn .. ") end"
    L[#L + 1] = "  return r"
  elseif rk == "int64" then
    L[#L + 1] = "  return tonumber(r)"
  elseif rk == "string" then
    L[#L + 1] = "  if r == nil then if H.has_error() then H.fail(" .. fn .. ") end return nil end"
    L[#L + 1] = "  return ffi.string(r)"
  elseif rk == "pointer" then
    L[#L + 1] = "  if r == nil then if H.has_error() then H.fail(" .. fn .. ") end return nil end"
    L[#L + 1] = "  return r"
  elseif rk ~= "void" then
    L[#L + 1] = "  return r"
  end
  L[#L + 1] = "end"
  return table.concat(L, "\n")
end

-- wrappers[name] = Lua function, info[name] = the parsed declaration.
M.wrappers, M.info = {}, {}
for _, f in ipairs(M.functions) do
  classify(f)
  M.info[f.name] = f
  if not SKIP[f.name] then
    f.source = wrapper_source(f)
    local chunk = assert(load(f.source, "=[tide] " .. f.name))
    M.wrappers[f.name] = chunk(C, H)
  end
end

-- The C signature of a function, as declared in tide.h.
function M.signature(name)
  local f = M.info[name]
  if not f then return nil end
  local ps = {}
  for _, p in ipairs(f.params) do ps[#ps + 1] = p.type .. " " .. p.name end
  return f.ret .. " " .. f.cname .. "(" .. table.concat(ps, ", ") .. ")"
end

M.H = H
registry[REGISTRY_KEY] = M
return M
