-- tide.nn: layers against PyTorch (tests/fixtures/nn.txt, made by
-- make_nn.py), the flat parameter buffer, the module tree.
local tide = require("tide")
local nn = tide.nn
local fixture = dofile("tests/lua/fixture.lua")
local unpack = unpack or table.unpack

-- Loads the fixture's parameters into mod, runs it on the fixture's inputs
-- and checks outputs and every gradient (inputs and parameters).
local function check_case(case, mod, tol)
  tol = tol or 1e-5
  local F = fixture.load("nn")[case]
  assert(F, "no fixture case " .. case)
  local seen = 0
  for name, p in mod:named_parameters() do
    local want = F["p." .. name]
    assert(want, case .. ": the fixture has no parameter " .. name)
    p:copy_(want)
    seen = seen + 1
  end
  local expected = 0
  for k in pairs(F) do if k:match("^p%.") then expected = expected + 1 end end
  assert.equal(expected, seen)
  local inputs = {}
  for k = 0, 9 do
    local t = F["in" .. k]
    if not t then break end
    t = t:clone()
    if F["grad_in" .. k] then t:requires_grad(true) end
    inputs[k + 1] = t
  end
  mod:zero_grad()
  local outs = {mod(unpack(inputs))}
  fixture.assert_close(outs[1], F.out, tol, tol, case .. " out")
  local loss = (outs[1] * F.gout):sum()
  if F.out1 then
    fixture.assert_close(outs[2], F.out1, tol, tol, case .. " out1")
    loss = loss + (outs[2] * F.gout1):sum()
  end
  loss:backward()
  for k, x in ipairs(inputs) do
    local want = F["grad_in" .. (k - 1)]
    if want then fixture.assert_close(x:grad(), want, tol, tol, case .. " grad_in" .. (k - 1)) end
  end
  for name, p in mod:named_parameters() do
    fixture.assert_close(p:grad(), F["grad_p." .. name], tol, tol, case .. " grad of " .. name)
  end
end

describe("nn layers against PyTorch", function()
  it("Linear (2-d and 3-d input, with and without bias)", function()
    check_case("linear", nn.Linear(5, 4))
    check_case("linear_3d", nn.Linear(5, 4))
    local m = nn.Linear(5, 4, false)
    assert.is_nil(m.bias)
    check_case("linear_nobias", m)
  end)

  it("Conv2d", function()
    check_case("conv2d", nn.Conv2d(3, 4, 3, 2, 1))
    check_case("conv2d_nobias", nn.Conv2d(2, 3, 2, 1, 0, false))
  end)

  it("ConvTranspose2d (weight [in, out, k, k], output_padding)", function()
    check_case("conv_transpose2d", nn.ConvTranspose2d(4, 3, 4, 2, 1))
    check_case("conv_transpose2d_outpad", nn.ConvTranspose2d(2, 3, 3, 2, 1, 1))
  end)

  it("GroupNorm", function() check_case("group_norm", nn.GroupNorm(2, 6)) end)

  it("Embedding (0-based indices of any shape)", function() check_case("embedding", nn.Embedding(10, 4)) end)

  it("GRU: PyTorch's gates and layout, batch_first with h0, and time-first without", function()
    check_case("gru_batch_first", nn.GRU(3, 5, {batch_first = true}), 2e-5)
    check_case("gru", nn.GRU(4, 3), 2e-5)
  end)

  it("activations", function()
    check_case("act_relu", nn.ReLU())
    check_case("act_leaky_relu", nn.LeakyReLU(0.2))
    check_case("act_sigmoid", nn.Sigmoid())
    check_case("act_tanh", nn.Tanh())
    check_case("act_silu", nn.SiLU())
    check_case("act_gelu", nn.GELU())
    check_case("act_softplus", nn.Softplus())
  end)

  it("Sequential (children named 1, 2, ...)", function()
    check_case("sequential", nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
  end)
end)

describe("default initialization", function()
  it("Linear and Conv2d: weight and bias uniform in +-1/sqrt(fan_in), spread like U(-b, b)", function()
    tide.manual_seed(3)
    for _, case in ipairs{{nn.Linear(200, 300), 200}, {nn.Conv2d(8, 64, 5), 8 * 25},
                          {nn.ConvTranspose2d(64, 8, 5), 8 * 25}} do
      local m, fan = case[1], case[2]
      local b = 1 / math.sqrt(fan)
      for _, p in ipairs{m.weight, m.bias} do
        assert.is_true(p:abs():max():item() <= b)
        if p.numel > 1000 then
          -- the variance of U(-b, b) is b^2 / 3 (within 5% for this many samples)
          local var = p:var():item()
          assert.is_true(math.abs(var / (b * b / 3) - 1) < 0.05, "variance " .. var)
        end
      end
    end
  end)

  it("GroupNorm ones/zeros, Embedding N(0,1), GRU U(+-1/sqrt(H))", function()
    tide.manual_seed(4)
    local g = nn.GroupNorm(2, 4)
    assert.same({1, 1, 1, 1}, g.weight:to_table())
    assert.same({0, 0, 0, 0}, g.bias:to_table())
    local e = nn.Embedding(1000, 20)
    assert.is_true(math.abs(e.weight:mean():item()) < 0.03)
    assert.is_true(math.abs(e.weight:var():item() - 1) < 0.05)
    local gru = nn.GRU(10, 16)
    for _, p in ipairs(gru:parameters()) do assert.is_true(p:abs():max():item() <= 0.25) end
    assert.is_true(gru.weight_ih:abs():max():item() > 0.2)
  end)

  it("the same seed gives the same model", function()
    tide.manual_seed(11)
    local a = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tide.manual_seed(11)
    local b = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    local pa, pb = a:flat_parameters(), b:flat_parameters()
    assert.same(pa:to_table(), pb:to_table())
  end)
end)

describe("the flat parameter buffer", function()
  local function model()
    tide.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 5), nn.Tanh()), nn.Linear(5, 2))
  end

  it("parameters are views into one flat tensor, in depth-first order", function()
    local m = model()
    local flat, gflat = m:flat_parameters()
    assert.equal(16 + 25 + 12, flat.numel)
    assert.equal(flat.numel, gflat.numel)
    assert.equal(flat.numel, m:num_parameters())
    local off = 0
    local names = {}
    for name, p in m:named_parameters() do
      names[#names + 1] = name
      assert.is_true(p.data == flat.data + off, name .. " is not at offset " .. off)
      assert.is_true(p:grad().data == gflat.data + off, name .. "'s grad is not in the flat gradient")
      off = off + p.numel
    end
    assert.same({"1.weight", "1.bias", "3.1.weight", "3.1.bias", "4.weight", "4.bias"}, names)
    -- writing the flat buffer changes the parameters
    flat:fill(0.5)
    assert.equal(0.5, m[3][1].weight:at(2, 3))
  end)

  it("backward accumulates into the flat gradient; zero_grad clears it in one fill", function()
    local m = model()
    local _, gflat = m:flat_parameters()
    local x = tide.randn(6, 3)
    m(x):sum():backward()
    local g1 = gflat:clone()
    assert.is_true(g1:abs():sum():item() > 0)
    -- the flat gradient is the parameters' gradients laid end to end
    local parts = {}
    for _, p in ipairs(m:parameters()) do parts[#parts + 1] = p:grad():reshape(-1) end
    fixture.assert_close(tide.cat(parts), g1, 0, 0, "flat gradient")
    m(x):sum():backward()
    fixture.assert_close(gflat, g1 * 2, 1e-6, 1e-6, "accumulated")
    m:zero_grad()
    assert.equal(0, gflat:abs():sum():item())
  end)

  it("backward writes weight gradients straight into the flat gradient (no temporary)", function()
    local m = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    local x = tide.randn(4, 256)
    m(x):sum():backward() -- warm-up
    collectgarbage()
    local y = m(x):sum()
    tide.C.td_mem_reset_peak()
    local before = tide.memory().in_use
    y:backward()
    local extra = tide.memory().peak - before
    -- a temporary for one weight gradient alone would be 256 KB
    assert.is_true(extra < 128 * 1024, "backward allocated " .. extra .. " bytes")
  end)

  it("an optimizer step on the flat buffer changes the parameter views", function()
    local m = model()
    local w = m[1].weight
    local before = w:clone()
    local opt = tide.optim.SGD(m, {lr = 0.1})
    m(tide.randn(6, 3)):square():sum():backward()
    local g = w:grad():clone()
    opt:step()
    fixture.assert_close(w, before - g * 0.1, 1e-6, 1e-6, "w after a step")
  end)

  it("a sub-module's flat slice is part of its model's buffer", function()
    local m = model()
    local flat = m:flat_parameters()
    local sub, gsub = m[3]:flat_parameters()
    assert.equal(25, sub.numel)
    assert.is_true(sub.data == flat.data + 16)
    assert.is_true(gsub.data == m[3][1].weight:grad().data)
  end)

  it("re-homes a built module placed in a new container; its parameter objects stay valid", function()
    tide.manual_seed(2)
    local enc = nn.Linear(3, 4)
    local x = tide.randn(2, 3)
    local y1 = enc(x) -- builds enc alone
    local w = enc.weight
    local old_flat = enc:flat_parameters()
    assert.is_true(w.data == old_flat.data)
    local model = nn.Sequential(nn.Linear(5, 3), enc)
    local flat = model:flat_parameters()
    assert.is_true(w.data == flat.data + 18, "enc's weight moved into the container's buffer")
    assert.is_true(enc.weight == w)
    fixture.assert_close(enc(x), y1, 0, 0, "same values after the move")
    -- gradients land in the container's flat gradient
    local _, gflat = model:flat_parameters()
    model(tide.randn(2, 5)):sum():backward()
    assert.is_true(gflat:narrow(1, 19, 12):abs():sum():item() > 0)
    assert.is_true(w:grad().data == gflat.data + 18)
  end)

  it("rebuilds after a child is added to a built model", function()
    local m = nn.Sequential(nn.Linear(2, 3))
    assert.equal(9, m:flat_parameters().numel)
    m:add(nn.Linear(3, 1))
    local flat = m:flat_parameters()
    assert.equal(13, flat.numel)
    assert.is_true(m[2].bias.data == flat.data + 12)
    local y = m(tide.randn(4, 2))
    assert.same({4, 1}, y:shape())
  end)

  it("custom modules: extend, register_parameter, children by assignment", function()
    local Affine = nn.Module:extend("Affine")
    function Affine:init(n)
      self:register_parameter("scale", {n}, nn.init.ones_)
      self:register_parameter("shift", tide.full(n, 0.5))
      self.inner = nn.Linear(n, n)
    end
    function Affine:forward(x) return self.inner(x) * self.scale + self.shift end
    local a = Affine(3)
    local names = {}
    for n in a:named_parameters() do names[#names + 1] = n end
    assert.same({"scale", "shift", "inner.weight", "inner.bias"}, names)
    assert.same({0.5, 0.5, 0.5}, a.shift:to_table())
    assert.same({2, 3}, a(tide.randn(2, 3)):shape())
    assert.has_error(function() a.scale = tide.zeros(3) end)
    -- a name first given a plain value can later hold a child
    a.extra = 3
    assert.equal(3, a.extra)
    a.extra = nn.Linear(1, 1)
    assert.equal(20, a:num_parameters())
    a.extra = nil
    assert.equal(18, a:num_parameters())
    assert.is_nil(a.extra)
    local s = tostring(a)
    assert.truthy(s:find("Affine  18 parameters", 1, true), s)
    assert.truthy(s:find("(inner): Linear(3 -> 3)  12 parameters", 1, true), s)
  end)

  it("train() / eval() reach every module; Dropout is the identity in eval mode", function()
    tide.manual_seed(5)
    local m = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.25)))
    m:eval()
    assert.is_false(m[2][1].training)
    local x = tide.ones(200, 50)
    local d = m[2][1]
    fixture.assert_close(d(x), x, 0, 0, "eval dropout")
    m:train()
    assert.is_true(m[2][1].training)
    local y = d(x)
    local zeros = y:eq(0):sum():item()
    assert.is_true(math.abs(zeros / 10000 - 0.25) < 0.02, "dropped " .. zeros)
    -- the kept ones are scaled by 1/(1-p)
    assert.is_true(math.abs(y:sum():item() / (10000 - zeros) - 1 / 0.75) < 1e-4)
    -- gradient flows through the same mask
    local xg = tide.ones(10, 10):requires_grad(true)
    local out = d(xg)
    out:sum():backward()
    fixture.assert_close(xg:grad(), out:detach(), 0, 0, "dropout grad")
  end)

  it("Flatten / Unflatten (1-based axes)", function()
    local x = tide.randn(2, 3, 4, 5)
    assert.same({2, 60}, nn.Flatten()(x):shape())
    assert.same({2, 12, 5}, nn.Flatten(2, 3)(x):shape())
    assert.same({2, 3, 2, 2, 5}, nn.Unflatten(3, {2, 2})(x):shape())
    assert.same({2, 1, 28, 28}, nn.Unflatten(2, {1, 28, 28})(tide.zeros(2, 784)):shape())
  end)

  it("errors name the layer and the shapes", function()
    local ok, err = pcall(function() return nn.Linear(5, 4)(tide.zeros(3, 6)) end)
    assert.is_false(ok)
    assert.truthy(err:find("[3,6]", 1, true), err)
    assert.truthy(err:find("nn_spec.lua", 1, true), "error points at the caller: " .. err)
    ok, err = pcall(function() return nn.GRU(3, 4)(tide.zeros(2, 3)) end)
    assert.truthy(err:find("GRU: input [2,3]", 1, true), err)
  end)
end)

describe("checkpoints", function()
  it("model:save / tide.load round trip through safetensors, names are dotted", function()
    tide.manual_seed(8)
    local a = nn.Sequential(nn.Linear(3, 4), nn.GRU(4, 2))
    local path = os.tmpname()
    a:save(path)
    local tensors = tide.load(path)
    fixture.assert_close(tensors["1.weight"], a[1].weight, 0, 0, "1.weight")
    fixture.assert_close(tensors["2.bias_hh"], a[2].bias_hh, 0, 0, "2.bias_hh")
    local b = nn.Sequential(nn.Linear(3, 4), nn.GRU(4, 2))
    tide.load(path, b)
    fixture.assert_close(b:flat_parameters(), a:flat_parameters(), 0, 0, "loaded")
    local c = nn.Sequential(nn.Linear(3, 5))
    assert.has_error(function() c:load(path) end)
    os.remove(path)
  end)

  it("loads a PyTorch state_dict file with torch_names and computes what PyTorch computed", function()
    local Net = nn.Module:extend("Net")
    function Net:init()
      self.enc = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
      self.gru = nn.GRU(6, 5, {batch_first = true})
      self.head = nn.Linear(5, 2)
    end
    function Net:forward(x)
      local out = self.gru(self.enc(x))
      return self.head(out:select(2, -1))
    end
    local net = Net()
    net:load(fixture.dir .. "nn_torch_model.safetensors", {torch_names = true})
    local F = fixture.load("nn").torch_model
    fixture.assert_close(net(F.x), F.out, 1e-5, 1e-5, "PyTorch model in tide")
    -- and back: the names PyTorch's state_dict uses
    local path = os.tmpname()
    net:save(path, {torch_names = true})
    local names = tide.serialize.open(path):names()
    table.sort(names)
    assert.same({"enc.0.bias", "enc.0.weight", "gru.bias_hh_l0", "gru.bias_ih_l0", "gru.weight_hh_l0",
                 "gru.weight_ih_l0", "head.bias", "head.weight"}, names)
    os.remove(path)
  end)

  it("tide.serialize: tensors with metadata, read lazily (names, shapes, rows)", function()
    local S = tide.serialize
    local path = os.tmpname()
    local a, b = tide.arange(12):reshape(4, 3), tide.from_table{1.5, -2}
    tide.save(path, {alpha = a, beta = b}, {note = 'quote " and \\ backslash', n = "2"})
    local f = S.open(path)
    local names = f:names()
    table.sort(names)
    assert.same({"alpha", "beta"}, names)
    assert.same({4, 3}, f:shape("alpha"))
    assert.equal("F32", f:dtype("beta"))
    assert.is_nil(f:shape("gamma"))
    assert.equal('quote " and \\ backslash', f:metadata("note"))
    fixture.assert_close(f:get_rows("alpha", 2, 2), a:narrow(1, 2, 2), 0, 0, "rows 2..3")
    fixture.assert_close(f:get("beta"), b, 0, 0, "beta")
    assert.has_error(function() f:get("gamma") end)
    f:close()
    assert.has_error(function() f:names() end)
    assert.has_error(function() S.open(path .. ".missing") end)
    os.remove(path)
  end)
end)
