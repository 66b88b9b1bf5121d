-- tide.models.unet: the whole UNet (values, input and parameter gradients)
-- and the DDPM loss against PyTorch (tests/fixtures/ddpm.txt, made by
-- make_ddpm.py from bench/unet_ref.py), and each block against the same
-- computation in primitive engine ops.
local tide = require("tide")
local U = require("tide.models.unet")
local DDPM = require("tide.models.ddpm")
local fixture = dofile("tests/lua/fixture.lua")

local function tiny()
  local net = U.UNet{in_channels = 1, cond_channels = 1, base = 4, mults = {1, 2}, groups = 2, temb = 8}  -- make_ddpm.py
  local F = fixture.load("ddpm").unet
  local sd = {}
  for name in net:named_parameters() do
    sd[name] = assert(F["param." .. name], "no fixture parameter " .. name)
  end
  net:load_state_dict(sd)
  return net
end

local function maxdiff(a, b) return (a - b):abs():max():item() end

describe("UNet", function()
  it("matches PyTorch: output and gradients of x, cond and every parameter", function()
    local F = fixture.load("ddpm").unet
    local net = tiny()
    local x = F.x:clone():requires_grad(true)
    local cond = F.cond:clone():requires_grad(true)
    local out = net(x, F.t, cond)
    fixture.assert_close(out, F.out, 1e-5, 1e-4, "unet out")
    out:backward(F.gout)
    fixture.assert_close(x:grad(), F.grad_x, 1e-5, 1e-3, "grad x")
    fixture.assert_close(cond:grad(), F.grad_cond, 1e-5, 1e-3, "grad cond")
    local n = 0
    for name, p in net:named_parameters() do
      fixture.assert_close(p:grad(), F["grad." .. name], 1e-5, 1e-3, "grad." .. name)
      n = n + 1
    end
    assert.is_true(n > 40)
  end)

  it("the DDPM loss with it matches PyTorch (value and parameter gradients)", function()
    local F = fixture.load("ddpm").loss
    local net = tiny()
    local m = DDPM{net = net}
    local loss = m:loss(F.x0, {t = F.t, eps = F.eps, cond = F.cond})
    fixture.assert_close(loss, F.out, 1e-6, 1e-5, "loss")
    loss:backward()
    for name, p in net:named_parameters() do
      fixture.assert_close(p:grad(), F["grad." .. name], 1e-6, 1e-3, "loss grad." .. name)
    end
  end)

  it("has the parameter count of its PyTorch twin and checks its conditioning input", function()
    assert.equals(583713, U.UNet{}:num_parameters())       -- bench/unet_ref.py UNet()
    assert.equals(583713 + 288, U.UNet{cond_channels = 1}:num_parameters())
    local net = U.UNet{base = 8, mults = {1, 2}, groups = 2, cond_channels = 2}
    assert.has_error(function() net(tide.randn(1, 1, 8, 8), {0}) end)
    local y = net(tide.randn(3, 1, 12, 12), {0, 5, 9}, tide.randn(3, 2, 12, 12))
    assert.same({3, 1, 12, 12}, y:shape())
  end)
end)

describe("UNet blocks against primitive ops", function()
  it("ResBlock = conv(silu(GN(conv(silu(GN(x))) + Linear(st)))) + 1x1 skip", function()
    tide.manual_seed(3)
    local r = U.ResBlock(4, 6, 5, 2)
    for _, p in ipairs(r:parameters()) do p:detach():copy_(tide.randn(p:shape())) end
    local x, st = tide.randn(2, 4, 5, 5), tide.randn(2, 5)
    local e = r.temb(st):reshape(2, 6, 1, 1)
    local h = r.conv1(x:group_norm(2, r.norm1.weight, r.norm1.bias):silu())
    h = r.conv2((h + e):group_norm(2, r.norm2.weight, r.norm2.bias):silu())
    local want = r.skip(x) + h
    assert.is_true(maxdiff(r(x, st), want) < 1e-4)
  end)

  it("SelfAttention = x + proj(softmax(q k^T / sqrt(C)) v) over the pixels", function()
    tide.manual_seed(4)
    local a = U.SelfAttention(4, 2)
    local x = tide.randn(2, 4, 3, 3)
    local qkv = a.qkv(a.norm(x))                                   -- [2,12,3,3]
    local function part(i) return qkv:narrow(2, 4 * (i - 1) + 1, 4):reshape(2, 4, 9):transpose(2, 3) end
    local q, k, v = part(1), part(2), part(3)
    local p = (q:matmul(k:transpose(2, 3)) * (1 / 2)):softmax(-1)
    local o = p:matmul(v):transpose(2, 3):reshape(2, 4, 3, 3)
    assert.is_true(maxdiff(a(x), x + a.proj(o)) < 1e-5)
  end)

  it("UpConv = conv3x3(upsample_nearest2d(x, 2))", function()
    tide.manual_seed(5)
    local u = U.UpConv(3, 5)
    local x = tide.randn(2, 3, 4, 4)
    local want = x:upsample_nearest2d(2):conv2d(u.weight, u.bias, 1, 1)
    assert.is_true(maxdiff(u(x), want) < 1e-5)
  end)
end)
