-- fixture.lua - reads the PyTorch golden files of tests/fixtures (the format
-- of tests/c/check.c: one tensor a line, "<case> <name> <ndim> <dims...>
-- <values...>") and compares tensors. Not a spec; specs load it with
--   local fixture = dofile("tests/lua/fixture.lua")
local tide = require("tide")

local M = {}

-- luassert's assert under busted, so mismatches count as failures.
local has_luassert, luassert = pcall(require, "luassert")
local assert = has_luassert and luassert or assert

local HERE = (debug.getinfo(1, "S").source:match("^@(.*/)[^/]*$") or "./")
M.dir = HERE .. "../fixtures/"

local cache = {}

-- {case = {name = tensor}} of tests/fixtures/<family>.txt (cached).
function M.load(family)
  if cache[family] then return cache[family] end
  local path = M.dir .. family .. ".txt"
  local f = assert(io.open(path, "r"), "cannot open fixture " .. path)
  local cases = {}
  local lineno = 0
  for line in f:lines() do
    lineno = lineno + 1
    local it = line:gmatch("%S+")
    local cname, tname, nd = it(), it(), tonumber(it() or "")
    if cname then
      assert(tname and nd, ("%s:%d: malformed line"):format(path, lineno))
      local shape, n = {}, 1
      for i = 1, nd do
        shape[i] = assert(tonumber(it()), ("%s:%d: bad dim"):format(path, lineno))
        n = n * shape[i]
      end
      local vals = {}
      for i = 1, n do
        local v = it()
        vals[i] = assert(tonumber(v) or (v == "nan" and 0 / 0) or (v == "inf" and math.huge) or
                         (v == "-inf" and -math.huge), ("%s:%d: value %d of %s %s is missing or bad"):format(
                         path, lineno, i, cname, tname))
      end
      assert(it() == nil, ("%s:%d: extra values"):format(path, lineno))
      cases[cname] = cases[cname] or {}
      cases[cname][tname] = n == 0 and tide.zeros(shape) or tide.from_table(vals, shape)
    end
  end
  f:close()
  cache[family] = cases
  return cases
end

-- The tensor `name` of `case` (an error when missing).
function M.get(family, case, name)
  local c = M.load(family)[case]
  assert(c, ("fixture %s has no case %s"):format(family, case))
  local t = c[name]
  assert(t, ("fixture %s case %s has no tensor %s"):format(family, case, name))
  return t
end

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

-- Asserts |got - want| <= atol + rtol |want| elementwise (and equal shapes);
-- the message names `what`, the worst element and both values.
function M.assert_close(got, want, atol, rtol, what)
  atol, rtol, what = atol or 1e-5, rtol or 1e-4, what or "tensor"
  assert(tide.is_tensor(got), what .. ": got a " .. type(got) .. ", not a tensor")
  if shape_str(got) ~= shape_str(want) then
    assert(false, ("%s: shape %s, expected %s"):format(what, shape_str(got), shape_str(want)))
  end
  local g, w = got:contiguous():reshape(-1), want:contiguous():reshape(-1)
  local worst, at = 0, nil
  for i = 0, g.numel - 1 do
    local a, b = g.data[i], w.data[i]
    local err = math.abs(a - b) - (atol + rtol * math.abs(b))
    if not (err <= 0) and (at == nil or err > worst or err ~= err) then worst, at = err, i end
  end
  if at ~= nil then
    assert(false, ("%s %s: element %d is %.7g, expected %.7g"):format(what, shape_str(got), at + 1, g.data[at], w.data[at]))
  end
  return true
end

-- Numbers: |a - b| <= atol + rtol |b|.
function M.assert_near(a, b, atol, rtol, what)
  atol, rtol = atol or 1e-6, rtol or 1e-5
  if not (math.abs(a - b) <= atol + rtol * math.abs(b)) then
    assert(false, ("%s: %.9g, expected %.9g"):format(what or "value", a, b))
  end
  return true
end

return M
