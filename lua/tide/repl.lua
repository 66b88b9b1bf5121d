-- repl.lua - the interactive loop of bin/tide: like `luajit -i`, but an
-- expression prints its value (tensors pretty-printed, short tables shown),
-- an error prints as one line, and a statement can span several lines.
local M = {}

local unpack = unpack or table.unpack

-- A short one-line view of a value; tables of up to 20 plain values inline.
local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return depth > 0 and string.format("%q", v) or v end
  if type(v) ~= "table" or getmetatable(v) ~= nil or depth > 2 then return tostring(v) end
  local parts, n = {}, 0
  for _ in pairs(v) do
    n = n + 1
    if n > 20 then return tostring(v) end
  end
  for i = 1, #v do parts[#parts + 1] = show(v[i], depth + 1) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= #v and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local key = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or "[" .. show(k, depth + 1) .. "]"
    parts[#parts + 1] = key .. " = " .. show(v[k], depth + 1)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.show = show

-- The first line of an error, without a traceback.
local function one_line(err)
  local s = type(err) == "string" and err or tostring(err)
  return (s:match("^[^\n]*"))
end

local function incomplete(err) return err:match("<eof>[\"']?$") ~= nil end

local function pack(...) return {n = select("#", ...), ...} end

-- Evaluates one chunk of input; returns "more" when it needs more lines.
function M.eval(src, out)
  out = out or print
  local code = src:gsub("^%s*=", "return ")
  local f, err = load("return " .. code, "=stdin")
  if not f then f, err = load(code, "=stdin") end
  if not f then
    if incomplete(err) then return "more" end
    out(one_line(err))
    return "error"
  end
  local r = pack(pcall(f))
  if not r[1] then
    out(one_line(r[2]))
    return "error"
  end
  if r.n > 1 then
    local parts = {}
    for i = 2, r.n do parts[#parts + 1] = show(r[i]) end
    out(table.concat(parts, "\t"))
  end
  return "ok"
end

function M.run(opts)
  opts = opts or {}
  local interactive = opts.interactive ~= false
  if interactive then
    local tide = rawget(_G, "tide")
    print(("tide %s on %s -- tide.help() for help, Ctrl-D to quit"):format(
      tide and tide.version or "?", jit and jit.version or _VERSION))
  end
  local buffer = nil
  while true do
    if interactive then
      io.write(buffer and ">> " or "> ")
      io.flush()
    end
    local line = io.read("*l")
    if not line then
      if interactive then io.write("\n") end
      break
    end
    local src = buffer and (buffer .. "\n" .. line) or line
    if src:match("^%s*$") then
      buffer = nil
    elseif M.eval(src) == "more" then
      buffer = src
    else
      buffer = nil
    end
  end
end

return M
