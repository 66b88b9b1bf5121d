-- Printing: PyTorch-like text with the shape, aligned columns, summaries.
local tide = require("tide")

describe("tostring", function()
  it("prints a small matrix with aligned columns", function()
    local t = tide.from_table{{0.1234, -1}, {2, 3}}
    assert.equal("tensor([[ 0.1234, -1.0000],\n" ..
                 "        [ 2.0000,  3.0000]], shape=[2,2])", tostring(t))
  end)

  it("prints whole numbers with a trailing dot", function()
    assert.equal("tensor([0., 1., 2.], shape=[3])", tostring(tide.arange(3)))
    assert.equal("tensor([[ -1., 100.]], shape=[1,2])", tostring(tide.from_table{{-1, 100}}))
  end)

  it("prints scalars and empty tensors", function()
    assert.equal("tensor(3.5000)", tostring(tide.scalar(3.5)))
    assert.equal("tensor(2.)", tostring(tide.scalar(2)))
    assert.equal("tensor(-0.2500)", tostring(tide.from_table{-0.25}:sum()))
    assert.equal("tensor([], shape=[0,3])", tostring(tide.zeros(0, 3)))
  end)

  it("switches to scientific notation for wide ranges", function()
    assert.equal("tensor([1.0000e-05, 1.0000e+00], shape=[2])", tostring(tide.from_table{1e-5, 1}))
    assert.equal("tensor([1.0000e+09, 2.5000e+00], shape=[2])", tostring(tide.from_table{1e9, 2.5}))
  end)

  it("prints nan and inf", function()
    assert.equal("tensor([   nan,    inf,   -inf, 1.5000], shape=[4])",
                 tostring(tide.from_table{0 / 0, 1 / 0, -1 / 0, 1.5}))
  end)

  it("shows requires_grad", function()
    local t = tide.from_table{1, 2}:requires_grad(true)
    assert.equal("tensor([1., 2.], shape=[2], requires_grad=true)", tostring(t))
    assert.equal("tensor(3., requires_grad=true)", tostring(t:sum()))
  end)

  it("summarizes large tensors with the first and last 3 per dim", function()
    assert.equal("tensor([   0.,    1.,    2.,  ..., 1997., 1998., 1999.], shape=[2000])",
                 tostring(tide.arange(2000)))
    local s = tostring(tide.arange(1200):reshape(40, 30))
    assert.equal(table.concat({
      "tensor([[   0.,    1.,    2.,  ...,   27.,   28.,   29.],",
      "        [  30.,   31.,   32.,  ...,   57.,   58.,   59.],",
      "        [  60.,   61.,   62.,  ...,   87.,   88.,   89.],",
      "        ...,",
      "        [1110., 1111., 1112.,  ..., 1137., 1138., 1139.],",
      "        [1140., 1141., 1142.,  ..., 1167., 1168., 1169.],",
      "        [1170., 1171., 1172.,  ..., 1197., 1198., 1199.]], shape=[40,30])"}, "\n"), s)
  end)

  it("separates the blocks of a 3-d tensor by a blank line", function()
    assert.equal(table.concat({
      "tensor([[[0., 1.],",
      "         [2., 3.]],",
      "",
      "        [[4., 5.],",
      "         [6., 7.]]], shape=[2,2,2])"}, "\n"), tostring(tide.arange(8):reshape(2, 2, 2)))
  end)

  it("wraps long rows at 80 columns under the first element", function()
    local s = tostring(tide.arange(30) * 0.5)
    local n, comma = 0, nil
    for line in s:gmatch("[^\n]+") do
      n = n + 1
      assert.is_true(#line <= 80, line)
      comma = comma or line:find(",")
      if n > 1 then
        assert.matches("^        ", line)
        assert.equal(comma, line:find(","))    -- columns line up
      end
    end
    assert.is_true(n > 1)
    assert.matches("^tensor%(%[ 0%.0000,  0%.5000,", s)
  end)

  it("prints views in logical order", function()
    local t = tide.from_table{{1, 2}, {3, 4}}:t()
    assert.equal("tensor([[1., 3.],\n        [2., 4.]], shape=[2,2])", tostring(t))
  end)
end)
