-- Autograd through the Lua API, against gradients computed by hand.
local tide = require("tide")

local function close(expected, actual, tol)
  tol = tol or 1e-5
  if type(expected) == "number" then
    assert.is_true(math.abs(expected - actual) <= tol * math.max(1, math.abs(expected)),
                   ("expected %.9g, got %.9g"):format(expected, actual))
    return
  end
  assert.equal(#expected, #actual)
  for i = 1, #expected do close(expected[i], actual[i], tol) end
end

describe("autograd", function()
  it("d/dx sum(w x^2 + exp(x)) = 2 w x + exp(x)", function()
    local xs, ws = {-1, 0.5, 2}, {3, -2, 0.25}
    local x = tide.from_table(xs):requires_grad(true)
    local w = tide.from_table(ws)
    local y = (w * x ^ 2 + x:exp()):sum()
    close(3 * 1 + -2 * 0.25 + 0.25 * 4 + math.exp(-1) + math.exp(0.5) + math.exp(2), y:item())
    y:backward()
    local g = {}
    for i = 1, 3 do g[i] = 2 * ws[i] * xs[i] + math.exp(xs[i]) end
    close(g, x:grad():to_table())
    assert.is_nil(w:grad())
  end)

  it("undoes broadcasting in gradients", function()
    local a = tide.from_table{{1, 2, 3}, {4, 5, 6}}:requires_grad(true)
    local b = tide.from_table{10, 20, 30}:requires_grad(true)
    local c = tide.from_table{{2}, {3}}:requires_grad(true)
    ;((a + b) * c):sum():backward()
    close({{2, 2, 2}, {3, 3, 3}}, a:grad():to_table())
    close({5, 5, 5}, b:grad():to_table())
    close({{66}, {75}}, c:grad():to_table()) -- row sums of a + b
  end)

  it("divides, subtracts and raises with numbers on the left", function()
    local x = tide.from_table{1, 2, 4}:requires_grad(true)
    ;((1 - x) + 8 / x + 2 ^ x):sum():backward()
    local g = {}
    for i, v in ipairs{1, 2, 4} do g[i] = -1 - 8 / v ^ 2 + 2 ^ v * math.log(2) end
    close(g, x:grad():to_table())
  end)

  it("flows through views and reductions over 1-based axes", function()
    local x = tide.arange(6):reshape(2, 3):requires_grad(true)
    -- L = sum over rows of (x[:, 2:3] * [1, 2]) then mean over axis 1
    local y = (x:narrow(2, 2, 2) * tide.from_table{1, 2}):sum(2):mean()
    y:backward()
    close({{0, 0.5, 1}, {0, 0.5, 1}}, x:grad():to_table())
    x:zero_grad()
    close({{0, 0, 0}, {0, 0, 0}}, x:grad():to_table())
    x:t():sum(1):sum():backward()
    close({{1, 1, 1}, {1, 1, 1}}, x:grad():to_table())
  end)

  it("matmul: dL/dA = G B^T, dL/dB = A^T G for L = sum(A B)", function()
    local A = tide.from_table{{1, 2}, {3, 4}}:requires_grad(true)
    local B = tide.from_table{{5, 6, 7}, {8, 9, 10}}:requires_grad(true)
    A:matmul(B):sum():backward()
    close({{18, 27}, {18, 27}}, A:grad():to_table())          -- row sums of B
    close({{4, 4, 4}, {6, 6, 6}}, B:grad():to_table())          -- column sums of A
  end)

  it("accumulates over backward calls until zero_grad", function()
    local x = tide.from_table{1, 2}:requires_grad(true)
    ;(x * 3):sum():backward()
    ;(x * 3):sum():backward()
    close({6, 6}, x:grad():to_table())
    x:zero_grad()
    close({0, 0}, x:grad():to_table())
  end)

  it("records nothing under no_grad and after detach", function()
    local x = tide.ones(2):requires_grad(true)
    local y = tide.no_grad(function() return x * 2 end)
    assert.is_false(y:requires_grad())
    assert.is_true((x * 2):requires_grad())
    assert.is_false((x * 2):detach():requires_grad())
    assert.is_true(x.is_leaf)
    assert.is_false((x * 2).is_leaf)
  end)

  it("takes an explicit gradient for a non-scalar root", function()
    local x = tide.from_table{1, 2, 3}:requires_grad(true)
    ;(x * x):backward(tide.from_table{1, 0, -1})
    close({2, 0, -6}, x:grad():to_table())
  end)
end)
