-- The REPL of bin/tide: values printed, one-line errors, continued input.
local tide = require("tide")
local repl = require("tide.repl")

local function run(src)
  local out = {}
  local status = repl.eval(src, function(s) out[#out + 1] = s end)
  return status, out
end

describe("repl", function()
  before_each(function() _G.tide = tide end)

  it("prints the value of an expression", function()
    local status, out = run("tide.ones(2) * 3")
    assert.equal("ok", status)
    assert.same({"tensor([3., 3.], shape=[2])"}, out)
    status, out = run("tide.zeros(2, 3):shape()")
    assert.same({"{2, 3}"}, out)
    status, out = run("=1 + 1")
    assert.same({"2"}, out)
  end)

  it("prints nothing for statements", function()
    local status, out = run("repl_spec_x = 5")
    assert.equal("ok", status)
    assert.same({}, out)
    assert.equal(5, _G.repl_spec_x)
    _G.repl_spec_x = nil
  end)

  it("prints an engine error as one line naming both shapes", function()
    local status, out = run("tide.ones(2, 3) + tide.ones(4)")
    assert.equal("error", status)
    assert.same({"stdin:1: add: shapes [2,3] and [4] do not broadcast (dim 1)"}, out)
  end)

  it("asks for more input when a statement is not complete", function()
    assert.equal("more", (run("for i = 1, 2 do")))
    assert.equal("ok", (run("for i = 1, 2 do\nlocal y = i\nend")))
    local status, out = run("for i = 1, 2 do\nx = = 1\nend")
    assert.equal("error", status)
    assert.equal(1, #out)
  end)
end)
