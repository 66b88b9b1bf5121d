-- Engine errors become Lua errors at the caller's line; the process lives on.
local tide = require("tide")

local function line() return debug.getinfo(2, "l").currentline end

describe("errors", function()
  it("a wrong-shape add names both shapes and points at the user's line", function()
    local a, b = tide.ones(2, 3), tide.ones(4)
    local ok, err = pcall(function() return a + b end); local here = line()
    assert.is_false(ok)
    assert.matches("tensor_errors_spec%.lua:" .. here .. ": add: shapes %[2,3%] and %[4%] do not broadcast", err)
    assert.is_nil(err:find("\n"))
  end)

  it("points at the user's line for methods and nested library calls", function()
    local a = tide.ones(2, 3)
    local ok, err = pcall(function() return a:sum(5) end); local here = line()
    assert.is_false(ok)
    assert.matches("tensor_errors_spec%.lua:" .. here .. ": sum: axis 5 is out of range for shape %[2,3%]", err)
    ok, err = pcall(function() return a:reshape(4, 2) end); here = line()
    assert.matches(":" .. here .. ": reshape: %[2,3%] has 6 elements, %[4,2%] has 8", err)
    ok, err = pcall(function() return tide.zeros(2, 3):max(7) end); here = line()
    assert.matches(":" .. here .. ": ", err)
    assert.is_nil(err:find("lua/tide/", 1, true))
  end)

  it("matmul errors name both shapes", function()
    local ok, err = pcall(tide.matmul, tide.ones(2, 3), tide.ones(4, 5))
    assert.is_false(ok)
    assert.matches("%[2,3%]", err)
    assert.matches("%[4,5%]", err)
  end)

  it("checks argument types before calling C", function()
    local a = tide.ones(2)
    assert.error_matches(function() return a:add("x") end, "add: argument 'b' must be a tensor, got string")
    assert.error_matches(function() return a:clamp("x") end, "clamp: argument 'lo' must be a number")
    assert.error_matches(function() return tide.zeros(2.5) end, "whole numbers")
    assert.error_matches(function() return tide.cat({a, 3}) end, "element 2 of 'ts' must be a tensor")
    assert.error_matches(function() return a:no_such_method() end, "method 'no_such_method'")
    assert.is_nil(a.forward) -- duck typing works as with tables
    assert.error_matches(function() return a:add(nil) end, "NULL")
  end)

  it("reports engine errors of scalar results and status calls", function()
    assert.error_matches(function() return tide.ones(3):item() end, "item: tensor %[3%] does not hold exactly one value")
    assert.error_matches(function() return tide.ones(3):requires_grad(true):mul(2):backward() end,
                         "backward: tensor %[3%] is not a scalar")
    local y = tide.ones(2):requires_grad(true) * 2
    assert.error_matches(function() return y:requires_grad(false) end, "only leaf tensors")
  end)

  it("keeps working after errors", function()
    local live = tide.memory().live_tensors
    for _ = 1, 100 do
      assert.is_false(pcall(function() return tide.ones(2, 3) + tide.ones(3, 2) end))
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(tide.memory().live_tensors <= live + 2)
    assert.same({2, 2}, (tide.ones(2) * 2):to_table())
  end)

  it("no_grad restores the grad mode when its function fails", function()
    assert.is_true(tide.is_grad_enabled())
    local ok, err = pcall(tide.no_grad, function()
      assert.is_false(tide.is_grad_enabled())
      return tide.ones(2) + tide.ones(3)
    end)
    assert.is_false(ok)
    assert.matches("add: shapes %[2%] and %[3%]", err)
    assert.is_true(tide.is_grad_enabled())
    assert.equal(3, tide.no_grad(function(a, b) return a + b end, 1, 2))
  end)
end)

describe("last_error", function()
  it("keeps the engine's message after a failed call", function()
    pcall(function() return tide.ones(2) + tide.ones(3) end)
    assert.matches("add: shapes %[2%] and %[3%]", tide.last_error())
  end)
end)
