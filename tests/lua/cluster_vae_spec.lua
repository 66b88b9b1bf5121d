-- tide.models.cluster_vae: the one-step clustering VAE loss on a tiny
-- network of fixed weights, with the noise given, against the equation
-- written out in PyTorch (tests/fixtures/make_clustering.py).
local tide = require("tide")
local CVAE = require("tide.models.cluster_vae")
local fixture = dofile("tests/lua/fixture.lua")

local function fx(case, name) return fixture.get("clustering", case, name) end

local function tiny(case, opts)
  opts = opts or {}
  local m = CVAE.new{x_dim = 12, hidden = {8, 6}, z_dim = 3, k = 4, cls_hidden = 7,
                     likelihood = opts.likelihood, scale = opts.scale}
  local n, want = 0, 0
  for name, p in m:named_parameters() do
    p:copy_(fx(case, "param." .. name))
    n = n + 1
  end
  for name in pairs(fixture.load("clustering")[case]) do
    if name:match("^param%.") then want = want + 1 end
  end
  assert.are.equal(want, n)
  return m
end

describe("ClusterVAE", function()
  for _, c in ipairs{{"cluster_vae"}, {"cluster_vae_normal", "normal", 0.5}} do
    local case = c[1]
    it("loss, its parts and gradients match PyTorch (" .. case .. ")", function()
      local m = tiny(case, {likelihood = c[2], scale = c[3]})
      local x, eps = fx(case, "x"), fx(case, "eps")
      local losses, parts = m:losses(x, eps)
      fixture.assert_close(losses, fx(case, "losses"), 1e-4, 1e-5, "losses")
      fixture.assert_close(parts.rec, fx(case, "rec"), 1e-4, 1e-5, "log q(x|z)")
      fixture.assert_close(parts.py, fx(case, "py"), 1e-6, 1e-4, "p(y|z)")
      m:zero_grad()
      local loss = m:loss(x, {eps = eps})
      fixture.assert_near(loss:item(), fx(case, "loss"):item(), 1e-4, 1e-5, "loss")
      loss:backward()
      for name, p in m:named_parameters() do
        fixture.assert_close(p:grad(), fx(case, "grad." .. name), 1e-5, 1e-3, case .. " grad " .. name)
      end
    end)
  end

  it("predicts the argmax of p(y|z) at the encoder mean", function()
    local m = tiny("cluster_vae")
    local x = fx("cluster_vae", "x")
    local p = m:predict_proba(x)
    fixture.assert_close(p:sum(2), tide.ones(5), 1e-5, 0, "p(y|z) sums to 1")
    local mu = m:encode(x)
    fixture.assert_close(m:predict(x), m.classifier(mu):argmax(2), 0, 0, "argmax at the mean")
  end)

  it("kind = 'conv' runs on nets' conv encoder and decoder (and VaDE too)", function()
    tide.manual_seed(1)
    local x = tide.rand(3, 1, 28, 28)
    for _, m in ipairs{CVAE.new{kind = "conv", width = 4, z_dim = 3, k = 4, cls_hidden = 5},
                       require("tide.models.vade").new{kind = "conv", width = 4, z_dim = 3, k = 4}} do
      m:zero_grad()
      local loss = m:loss(x)
      assert.is_true(loss:item() == loss:item() and math.abs(loss:item()) < 1e5)
      loss:backward()
      assert.is_true(m:logvar_head().weight:grad():abs():sum():item() > 0)
      assert.are.same({3}, m:predict(x):shape())
      assert.are.same({3, 784}, m:decode(tide.zeros(3, 3)):shape())
    end
  end)

  it("a few Adam steps lower the loss", function()
    local m = tiny("cluster_vae")
    local x = fx("cluster_vae", "x")
    local opt = tide.optim.Adam(m, {lr = 1e-2})
    local first, last
    for i = 1, 30 do
      opt:zero_grad()
      local loss = m:loss(x, {eps = tide.zeros(5, 3)})
      loss:backward()
      opt:step()
      first = first or loss:item()
      last = loss:item()
    end
    assert.is_true(last < first - 0.5)
  end)
end)
