-- tide.data.sys - the little of POSIX that data, train and viz need:
-- a wall clock, isatty, directory listing, mkdir, file tests.
-- Declared under private names (asm labels), so they never clash with
-- another module's cdef of clock_gettime or readdir.
local ffi = require("ffi")

local REGISTRY_KEY = "tide.data.sys.module"
local registry = debug.getregistry()
if registry[REGISTRY_KEY] then return registry[REGISTRY_KEY] end

if not pcall(ffi.typeof, "struct tide_timespec_") then
  ffi.cdef [[
    struct tide_timespec_ { long tv_sec; long tv_nsec; };
    int tide_clock_gettime_(int clk, struct tide_timespec_ *ts) __asm__("clock_gettime");
    int tide_isatty_(int fd) __asm__("isatty");
    int tide_mkdir_(const char *path, unsigned int mode) __asm__("mkdir");
    int tide_getpid_(void) __asm__("getpid");
  ]]
end
if not pcall(ffi.typeof, "struct tide_data_dirent_") then
  -- glibc's struct dirent on Linux (as bindings/tide_ffi.lua has it, under another name)
  ffi.cdef [[
    struct tide_data_dirent_ { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[256]; };
  ]]
end
if not pcall(function() return ffi.C.tide_opendir_ end) then
  ffi.cdef [[
    void *tide_opendir_(const char *name) __asm__("opendir");
    struct tide_data_dirent_ *tide_readdir_(void *dirp) __asm__("readdir");
    int tide_closedir_(void *dirp) __asm__("closedir");
  ]]
end

local C = ffi.C
local M = {}

local ts = ffi.new("struct tide_timespec_")
local CLOCK_MONOTONIC = 1

-- Seconds (monotonic wall clock, sub-microsecond resolution).
function M.now()
  C.tide_clock_gettime_(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- true when the stream (io.stderr, io.stdout) or fd number is a terminal.
function M.isatty(f)
  local fd = f
  if f == io.stderr then fd = 2 elseif f == io.stdout then fd = 1 elseif f == io.stdin then fd = 0 end
  if type(fd) ~= "number" then return false end
  return C.tide_isatty_(fd) == 1
end

function M.getpid() return C.tide_getpid_() end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Size in bytes, or nil when the file cannot be opened.
function M.size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- Entry names of a directory, sorted (without . and ..), or nil.
function M.list_dir(dir)
  local d = C.tide_opendir_(dir)
  if d == nil then return nil end
  local out = {}
  while true do
    local e = C.tide_readdir_(d)
    if e == nil then break end
    local n = ffi.string(e.name)
    if n ~= "." and n ~= ".." then out[#out + 1] = n end
  end
  C.tide_closedir_(d)
  table.sort(out)
  return out
end

function M.is_dir(path)
  local d = C.tide_opendir_(path)
  if d == nil then return false end
  C.tide_closedir_(d)
  return true
end

-- mkdir -p; returns true or nil, message.
function M.mkdir_p(path)
  if path == "" or M.is_dir(path) then return true end
  local parent = path:match("^(.*)/[^/]+/*$")
  if parent and parent ~= "" and not M.is_dir(parent) then
    local ok, err = M.mkdir_p(parent)
    if not ok then return nil, err end
  end
  if C.tide_mkdir_(path, tonumber("755", 8)) ~= 0 and not M.is_dir(path) then
    return nil, "cannot create directory " .. path .. ": " .. ffi.string(ffi.C.strerror(ffi.errno()))
  end
  return true
end

if not pcall(function() return ffi.C.strerror end) then ffi.cdef("char *strerror(int errnum);") end

-- Writes text to path through a temporary file and a rename (atomic).
function M.write_atomic(path, text)
  local tmp = ("%s.tmp.%d"):format(path, M.getpid())
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  f:close()
  if not ok then
    os.remove(tmp)
    return nil, werr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

-- The directory of the file that called (for finding the source tree).
function M.source_dir(level)
  local src = debug.getinfo((level or 1) + 1, "S").source
  src = src:sub(1, 1) == "@" and src:sub(2) or "./x"
  return src:match("^(.*)/[^/]*$") or "."
end

registry[REGISTRY_KEY] = M
return M
