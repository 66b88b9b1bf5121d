-- tide.cli: flags over typed defaults, and clear errors for bad command lines.
local cli = require("tide.cli")

describe("tide.cli.parse", function()
  local D = {epochs = 20, lr = 1e-3, out = "runs/x", quick = false}

  it("overrides defaults by type and leaves the rest", function()
    local o = cli.parse({"--epochs", "5", "--quick", "--out", "/tmp/y"}, D)
    assert.same({epochs = 5, lr = 1e-3, out = "/tmp/y", quick = true}, o)
    assert.same(D, cli.parse(nil, D))
    assert.equal(20, D.epochs) -- the defaults table is not changed
  end)

  it("names the bad flag: unknown, missing value, not a number", function()
    local function err(argv, script)
      local ok, e = pcall(cli.parse, argv, D, script)
      assert.is_false(ok)
      return e
    end
    assert.equal("unknown flag --epoch (see the top of ex.lua)", err({"--epoch", "3"}, "ex.lua"))
    assert.equal("unknown flag epochs", err({"epochs"}))
    assert.equal("flag --lr needs a value", err({"--lr"}))
    assert.equal("flag --epochs needs a number, got ten", err({"--epochs", "ten"}))
  end)
end)
