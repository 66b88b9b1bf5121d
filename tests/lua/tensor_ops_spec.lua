-- Tensor operators, broadcasting, axes, views and tables, against values
-- computed by hand.
local tide = require("tide")

local function close(expected, actual, tol)
  tol = tol or 1e-6
  if type(expected) == "number" then
    assert.is_true(math.abs(expected - actual) <= tol * math.max(1, math.abs(expected)),
                   ("expected %.9g, got %.9g"):format(expected, actual))
    return
  end
  assert.equal(#expected, #actual)
  for i = 1, #expected do close(expected[i], actual[i], tol) end
end

describe("operators", function()
  local a = tide.from_table{{1, 2, 3}, {4, 5, 6}}
  local r = tide.from_table{10, 20, 30}        -- broadcasts over rows
  local c = tide.from_table{{100}, {200}}      -- broadcasts over columns

  it("add, sub, mul, div with broadcasting", function()
    close({{11, 22, 33}, {14, 25, 36}}, (a + r):to_table())
    close({{101, 102, 103}, {204, 205, 206}}, (a + c):to_table())
    close({{-9, -18, -27}, {-6, -15, -24}}, (a - r):to_table())
    close({{10, 40, 90}, {40, 100, 180}}, (a * r):to_table())
    close({{0.01, 0.02, 0.03}, {0.02, 0.025, 0.03}}, (a / c):to_table())
    close({{110, 120, 130}, {210, 220, 230}}, (r + c):to_table())
  end)

  it("numbers on either side", function()
    close({{3, 4, 5}, {6, 7, 8}}, (a + 2):to_table())
    close({{3, 4, 5}, {6, 7, 8}}, (2 + a):to_table())
    close({{-1, 0, 1}, {2, 3, 4}}, (a - 2):to_table())
    close({{1, 0, -1}, {-2, -3, -4}}, (2 - a):to_table())
    close({{3, 6, 9}, {12, 15, 18}}, (a * 3):to_table())
    close({{3, 6, 9}, {12, 15, 18}}, (3 * a):to_table())
    close({{0.5, 1, 1.5}, {2, 2.5, 3}}, (a / 2):to_table())
    close({{1 / 3, 2 / 3, 1}, {4 / 3, 5 / 3, 2}}, (a / 3):to_table())
    close({{12, 6, 4}, {3, 2.4, 2}}, (12 / a):to_table())
  end)

  it("powers and negation", function()
    close({{1, 4, 9}, {16, 25, 36}}, (a ^ 2):to_table())
    close({{2, 4, 8}, {16, 32, 64}}, (2 ^ a):to_table())
    close({{1, 4, 27}, {4, 25, 216}}, (a ^ tide.from_table{{1, 2, 3}, {1, 2, 3}}):to_table())
    close({{-1, -2, -3}, {-4, -5, -6}}, (-a):to_table())
  end)

  it("compound expressions", function()
    -- (a - mean) / 2 with the mean of each row: row means 2 and 5
    local m = a:sum(2, true) / 3
    close({{-0.5, 0, 0.5}, {-0.5, 0, 0.5}}, ((a - m) / 2):to_table())
  end)

  it("comparisons and where are methods, == is identity", function()
    close({{0, 0, 1}, {1, 1, 1}}, a:gt(2.5):to_table())
    close({{0, 1, 0}, {0, 0, 0}}, a:eq(2):to_table())
    close({{0, 0, 3}, {4, 5, 6}}, tide.where(a:gt(2.5), a, 0):to_table())
    assert.is_true(a == a)
    assert.is_false(a == tide.from_table{{1, 2, 3}, {4, 5, 6}})
  end)

  it("unary math", function()
    local x = tide.from_table{-1, 0, 2}
    close({math.exp(-1), 1, math.exp(2)}, x:exp():to_table())
    close({0, 0, 2}, x:relu():to_table())
    close({1, 0, 2}, x:abs():to_table())
    close({math.tanh(-1), 0, math.tanh(2)}, x:tanh():to_table())
    close({1 / (1 + math.exp(1)), 0.5, 1 / (1 + math.exp(-2))}, x:sigmoid():to_table())
    close({-0.5, 0, 1}, x:clamp(-0.5, 1):to_table())
    close({0, 0, 2}, x:clamp(0):to_table())
    close({-0.01, 0, 2}, x:leaky_relu():to_table())
  end)
end)

describe("axes (1-based, negative from the end)", function()
  local a = tide.arange(24):reshape(2, 3, 4)

  it("sum over one, several or all axes", function()
    assert.same({3, 4}, a:sum(1):shape())
    assert.same({2, 4}, a:sum(2):shape())
    assert.same({2, 3}, a:sum(-1):shape())
    assert.same({2, 1, 4}, a:sum(2, true):shape())
    assert.same({3}, a:sum({1, 3}):shape())
    assert.equal(276, a:sum():item())
    -- hand-computed: sum over the last axis of row [0,1,2,3] is 6
    close({{6, 22, 38}, {54, 70, 86}}, a:sum(3):to_table())
    -- over axis 1: a[1][j][k] + a[2][j][k] = 12 + 8(j-1) + 2(k-1)
    close({{12, 14, 16, 18}, {20, 22, 24, 26}, {28, 30, 32, 34}}, a:sum(1):to_table())
  end)

  it("size, shape, transpose, permute, narrow", function()
    assert.equal(2, a:size(1))
    assert.equal(4, a:size(-1))
    assert.same({2, 3, 4}, a:size())
    assert.same({4, 3, 2}, a:permute(3, 2, 1):shape())
    assert.same({2, 4, 3}, a:transpose(2, 3):shape())
    assert.same({3, 2}, tide.zeros(2, 3):t():shape())
    local n = a:narrow(3, 2, 2)                  -- columns 2..3
    assert.same({2, 3, 2}, n:shape())
    close({{{1, 2}, {5, 6}, {9, 10}}, {{13, 14}, {17, 18}, {21, 22}}}, n:to_table())
    assert.error_matches(function() return a:sum(0) end, "1%-based")
    assert.error_matches(function() return a:size(4) end, "out of range")
  end)

  it("views of views keep their offset", function()
    local b = tide.arange(6):reshape(2, 3)
    close({4, 5, 6}, (b:narrow(1, 2, 1):reshape(3) + 1):to_table())
    close({{2, 5}, {3, 6}}, (b:narrow(2, 2, 2):t() + 1):to_table())
    close({5, 6}, (b[2]:narrow(1, 2, 2) + 1):to_table())
  end)

  it("reshape with -1, view, expand, unsqueeze, squeeze, contiguous", function()
    assert.same({6, 4}, a:reshape(-1, 4):shape())
    assert.same({24}, a:view(-1):shape())
    assert.same({2, 12}, a:reshape{2, -1}:shape())
    local col = tide.from_table{{1}, {2}}
    close({{1, 1, 1}, {2, 2, 2}}, col:expand(2, 3):to_table())
    assert.same({1, 2, 1}, col:unsqueeze(1):shape())
    assert.same({2, 1, 1}, col:unsqueeze(-1):shape())
    assert.same({2}, col:squeeze():shape())
    assert.same({2}, col:squeeze(2):shape())
    local t = a:transpose(1, 3)
    assert.is_false(t:is_contiguous())
    assert.is_true(t:contiguous():is_contiguous())
    close(t:to_table(), t:contiguous():to_table())
  end)

  it("reductions and softmax take axes the same way", function()
    local m = tide.from_table{{1, 5, 3}, {4, 2, 6}}
    close({3, 4}, m:mean(2):to_table())
    close({5, 6}, m:max(2):to_table())
    close({1, 2}, m:argmax(2):to_table())       -- values are 0-based indices
    assert.equal(6, m:max():item())
    assert.equal(5, m:argmax():item())
    local s = m:softmax(2):sum(2)
    close({1, 1}, s:to_table(), 1e-6)
  end)
end)

describe("tables and elements", function()
  it("round-trips nested tables", function()
    local t3 = {{{1, 2}, {3, 4}, {5, 6}}, {{7, 8}, {9, 10}, {11, 12.5}}}
    local x = tide.from_table(t3)
    assert.same({2, 3, 2}, x:shape())
    assert.same(t3, x:to_table())
    assert.same({1.5, -2}, tide.tensor{1.5, -2}:to_table())
    assert.equal(3.25, tide.from_table(3.25):to_table())
    assert.same({}, tide.from_table{}:to_table())
    assert.same({{1, 2}, {3, 4}}, tide.from_table({1, 2, 3, 4}, {2, 2}):to_table())
    -- a non-contiguous tensor comes back in logical order
    assert.same({{1, 3, 5}, {2, 4, 6}}, tide.from_table{{1, 2}, {3, 4}, {5, 6}}:t():to_table())
  end)

  it("rejects ragged and non-numeric tables", function()
    assert.error_matches(function() return tide.from_table{{1, 2}, {3}} end, "ragged")
    assert.error_matches(function() return tide.from_table{{1, "x"}} end, "%[1%]%[2%] is a string")
  end)

  it("reads and writes elements with 1-based indices", function()
    local x = tide.arange(6):reshape(2, 3)
    assert.equal(5, x:at(2, 3))
    assert.equal(5, x:at(-1, -1))
    assert.equal(4, x[2][2])
    assert.equal(2, #x)
    assert.same({3, 4, 5}, x[2]:to_table())
    x[1] = 7
    x[2] = tide.from_table{1, 2, 3}
    assert.same({{7, 7, 7}, {1, 2, 3}}, x:to_table())
    local v = tide.zeros(3)
    v[-1] = 9
    assert.same({0, 0, 9}, v:to_table())
    assert.equal(9, v:max():item())
  end)

  it("makes tensors from shapes given as varargs or tables", function()
    assert.same({2, 3}, tide.zeros(2, 3):shape())
    assert.same({2, 3}, tide.ones{2, 3}:shape())
    assert.same({}, tide.zeros():shape())
    assert.same({{0.5, 0.5}}, tide.full(1, 2, 0.5):to_table())
    assert.same({{0.5, 0.5}}, tide.full({1, 2}, 0.5):to_table())
    assert.same({0, 1, 2}, tide.arange(3):to_table())
    assert.same({1, 3}, tide.arange(1, 5, 2):to_table())
    assert.same({2, 2}, tide.empty(2, 2):shape())
    assert.same({2, 3}, tide.zeros_like(tide.ones(2, 3)):shape())
  end)

  it("joins tensors with cat and stack", function()
    local a, b = tide.from_table{{1, 2}}, tide.from_table{{3, 4}}
    assert.same({{1, 2}, {3, 4}}, tide.cat({a, b}):to_table())
    assert.same({{1, 2, 3, 4}}, tide.cat({a, b}, 2):to_table())
    assert.same({2, 1, 2}, tide.stack({a, b}):shape())
    assert.same({1, 2, 2}, tide.stack({a, b}, 2):shape())
  end)

  it("samples repeatably after manual_seed", function()
    tide.manual_seed(42)
    local x = tide.randn(3, 4):to_table()
    local u = tide.rand(5):to_table()
    tide.manual_seed(42)
    assert.same(x, tide.randn(3, 4):to_table())
    assert.same(u, tide.rand(5):to_table())
    for _, v in ipairs(u) do assert.is_true(v >= 0 and v < 1) end
  end)
end)

describe("split", function()
  local tide = require("tide")
  it("cuts views of a given size or sizes, and gradients flow back", function()
    local x = tide.arange(10):reshape(2, 5):requires_grad(true)
    local parts = x:split(2, 2)
    assert.equal(3, #parts)
    assert.same({{0, 1}, {5, 6}}, parts[1]:to_table())
    assert.same({{4}, {9}}, parts[3]:to_table())
    local pieces = x:split({3, 2}, -1)
    local a, b = pieces[1], pieces[2]
    assert.same({2, 3}, a:shape())
    ;(a:sum() + b:sum() * 2):backward()
    assert.same({{1, 1, 1, 2, 2}, {1, 1, 1, 2, 2}}, x:grad():to_table())
  end)
  it("names the shape when sizes do not add up", function()
    local ok, err = pcall(function() return tide.zeros(2, 5):split({2, 2}, 2) end)
    assert.is_false(ok)
    assert.truthy(err:find("split: sizes add up to 4", 1, true))
    assert.truthy(err:find("[2,5]", 1, true))
  end)
end)
