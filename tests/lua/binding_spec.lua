-- The FFI binding: cdefs from tide.h, the library, generated wrappers.
local tide = require("tide")
local B = tide.binding

describe("binding", function()
  it("reads every function of tide.h and resolves it in the library", function()
    local f = assert(io.open(B.header_path, "rb"))
    local text = f:read("*a")
    f:close()
    local block = text:match("TD_CDEF_BEGIN %*/(.-)/%* TD_CDEF_END")
    assert.is_truthy(block)
    -- count declarations independently of the binding's parser
    local declared = {}
    for name in block:gsub("/%*.-%*/", ""):gmatch("([%a_][%w_]*)%s*%(") do
      if name:match("^td_") then declared[name] = true end
    end
    local n = 0
    for name in pairs(declared) do
      n = n + 1
      assert.is_true(B.info[name:sub(4)] ~= nil, name .. " was not parsed")
      local ok = pcall(function() return B.C[name] end)
      assert.is_true(ok, name .. " does not resolve in " .. B.lib_path)
    end
    assert.is_true(n > 100)
  end)

  it("wraps every function except retain/release", function()
    for name in pairs(B.info) do
      if name ~= "retain" and name ~= "release" then
        assert.is_function(B.wrappers[name], name)
      end
    end
  end)

  it("sees the tensor fields through the renamed struct", function()
    local t = tide.zeros(2, 3)
    assert.equal(2, t.ndim)
    assert.equal(6, t.numel)
    assert.equal("number", type(t.numel))
    assert.equal(3, tonumber(t._shape[1]))
    assert.equal(1, tonumber(t._stride[1]))
    assert.is_true(t.is_leaf)
    assert.is_false(t:requires_grad())
  end)

  it("keeps tensors as references so that + reaches the metatype", function()
    local t = tide.ones(2)
    assert.is_true(tide.is_tensor(t))
    assert.same({2, 2}, (t + 1):to_table())
    assert.is_false(tide.is_tensor(5))
    assert.is_false(tide.is_tensor({}))
  end)

  it("exposes every C function as tide.<name> and tensor-first ones as methods", function()
    assert.is_function(tide.add)
    assert.is_function(tide.exp)
    assert.is_function(tide.Tensor.exp)
    assert.is_nil(rawget(tide.Tensor, "zeros"))
    assert.is_function(tide.mem_in_use)
    assert.is_true(tide.mem_in_use() >= 0)
  end)

  it("returns booleans from predicate functions", function()
    local t = tide.zeros(2, 3)
    assert.is_true(t:is_contiguous())
    assert.is_false(t:t():is_contiguous())
    assert.is_true(tide.is_grad_enabled())
  end)

  it("has one-line help for functions and names", function()
    local d1 = tide.doc("sum")
    local d2 = tide.doc(tide.exp)
    local d3 = tide.doc("Tensor:reshape")
    local d4 = tide.doc("clone")
    local d5 = tide.doc("mem_peak")
    local printed = {}
    local old = _G.print
    _G.print = function(s) printed[#printed + 1] = s end
    tide.help("sum")
    tide.help("no_such_thing")
    _G.print = old
    assert.same({d1, "no help for no_such_thing"}, printed)
    assert.matches("sum", d1)
    assert.matches("exp", d2)
    assert.matches("reshape", d3)
    assert.matches("clone", d4)
    assert.matches("generated from the C declaration: int64_t td_mem_peak%(%)", d5)
    assert.is_nil(d1:find("\n"))
  end)

  it("sets a short OpenMP spin (GOMP_SPINCOUNT=5000) unless the user chose a wait policy", function()
    -- in a child process: libgomp reads the variables once, when it loads
    local function child_env(prefix)
      local cmd = ("env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY %s LUA_PATH=%q luajit -e %q 2>&1"):format(
        prefix, package.path,
        "require('tide'); io.write(tostring(os.getenv('GOMP_SPINCOUNT')), ' ', tostring(os.getenv('OMP_WAIT_POLICY')))")
      local p = assert(io.popen(cmd))
      local out = p:read("*a")
      p:close()
      return out
    end
    assert.equal("5000 nil", child_env(""))
    assert.equal("nil PASSIVE", child_env("OMP_WAIT_POLICY=PASSIVE"))
    assert.equal("100 nil", child_env("GOMP_SPINCOUNT=100"))
  end)
end)
