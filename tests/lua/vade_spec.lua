-- tide.models.vade: the VaDE ELBO and the autoencoder pre-training loss on
-- a tiny network of fixed weights, with the noise given, against the
-- paper's equations written out in PyTorch (tests/fixtures/
-- make_clustering.py); the GMM initialization and prediction.
local tide = require("tide")
local VaDE = require("tide.models.vade")
local fixture = dofile("tests/lua/fixture.lua")

local function fx(case, name) return fixture.get("clustering", case, name) end

-- The fixture's network: x 12 -> 8 -> 6 -> z 3, K = 4, weights of the case.
local function tiny(case)
  local m = VaDE.new{x_dim = 12, hidden = {8, 6}, z_dim = 3, k = 4}
  local n = 0
  for name, p in m:named_parameters() do
    p:copy_(fx(case, "param." .. name))
    n = n + 1
  end
  local want = 0
  for name in pairs(fixture.load("clustering")[case]) do
    if name:match("^param%.") then want = want + 1 end
  end
  assert.are.equal(want, n)
  return m
end

local function check_grads(m, case, atol, rtol)
  for name, p in m:named_parameters() do
    fixture.assert_close(p:grad(), fx(case, "grad." .. name), atol, rtol, case .. " grad " .. name)
  end
end

describe("VaDE", function()
  it("ELBO, its parts and gradients match PyTorch", function()
    local m = tiny("vade")
    local x, eps = fx("vade", "x"), fx("vade", "eps")
    local elbo, parts = m:elbo(x, eps)
    fixture.assert_close(elbo, fx("vade", "elbo"), 1e-4, 1e-5, "elbo")
    fixture.assert_close(parts.rec, fx("vade", "rec"), 1e-4, 1e-5, "log p(x|z)")
    fixture.assert_close(parts.gamma, fx("vade", "gamma"), 1e-6, 1e-4, "gamma")
    m:zero_grad()
    local loss = m:loss(x, {eps = eps})
    fixture.assert_near(loss:item(), fx("vade", "loss"):item(), 1e-4, 1e-5, "loss")
    loss:backward()
    check_grads(m, "vade", 1e-5, 1e-3)
  end)

  it("pre-training loss and gradients match PyTorch", function()
    local m = tiny("vade_pretrain")
    m:zero_grad()
    local loss = m:pretrain_loss(fx("vade_pretrain", "x"))
    fixture.assert_near(loss:item(), fx("vade_pretrain", "loss"):item(), 1e-4, 1e-5, "loss")
    loss:backward()
    check_grads(m, "vade_pretrain", 1e-5, 1e-3)
  end)

  it("the closed-form E_q log p(z|c) agrees with a Monte Carlo average", function()
    local m = tiny("vade")
    local mu, logvar = m:encode(fx("vade", "x"))
    local J = m:expected_log_joint(mu, logvar)
    tide.manual_seed(3)
    local S, acc = 4000, nil
    local mu_s = mu:reshape(1, 5, 3):expand(S, 5, 3):reshape(S * 5, 3)
    local sd_s = (logvar * 0.5):exp():reshape(1, 5, 3):expand(S, 5, 3):reshape(S * 5, 3)
    local z = mu_s + sd_s * tide.randn(S * 5, 3)
    acc = tide.gmm_log_joint(z, m.pi_logits, m.mu_c, m.logvar_c, 0):reshape(S, 5, 4):mean(1)
    fixture.assert_close(J:detach(), acc, 0.1, 0.02, "closed form vs Monte Carlo")
  end)

  it("initializes the prior by GMM-EM on the codes and predicts by q(c|x)", function()
    local m = tiny("vade")
    -- codes of 4 far groups of inputs
    tide.manual_seed(5)
    local protos = tide.rand(4, 12):gt(0.5)
    local lab = tide.arange(4):reshape(4, 1):expand(4, 25):reshape(-1)
    local x = (protos:index_select(1, lab) * 0.9 + tide.rand(100, 12) * 0.1)
    local g = m:init_gmm(x, {seed = 1})
    fixture.assert_close(m.mu_c, g.means, 0, 0, "mu_c from the fit")
    fixture.assert_close(m.logvar_c, g.logvars, 0, 0, "logvar_c from the fit")
    fixture.assert_close(m.pi_logits, g.logits, 0, 0, "pi_logits from the fit")
    local p = m:predict_proba(x)
    fixture.assert_close(p:sum(2), tide.ones(100), 1e-5, 0, "q(c|x) sums to 1")
    fixture.assert_close(m:predict(x), g.labels, 0, 0, "predict = the GMM's labels on the codes")
  end)

  it("random_shift translates each image by at most s pixels, zeros shifted in", function()
    local x = (tide.arange(3 * 784):reshape(3, 1, 28, 28) + 1)
    tide.manual_seed(4)
    local y = VaDE.random_shift(x, 2)
    assert.are.same({3, 1, 28, 28}, y:shape())
    local xt, yt = x:reshape(3, 28, 28):to_table(), y:reshape(3, 28, 28):to_table()
    local seen = {}
    for b = 1, 3 do
      local found
      for dy = -2, 2 do
        for dx = -2, 2 do
          local ok = true
          for i = 1, 28 do
            for j = 1, 28 do
              local si, sj = i - dy, j - dx
              local want = (si >= 1 and si <= 28 and sj >= 1 and sj <= 28) and xt[b][si][sj] or 0
              if yt[b][i][j] ~= want then ok = false end
            end
          end
          if ok then found = dy .. "," .. dx end
        end
      end
      assert.is_not_nil(found, "image " .. b .. " is not a shift of its input")
      seen[found] = true
    end
    assert.are.equal(x, VaDE.random_shift(x, 0))
    -- with rot = 180 the angles are multiples of 90 degrees, so each output
    -- is its input turned by 0, 1, 2 or 3 quarter turns
    local x8 = tide.arange(8 * 784):reshape(8, 1, 28, 28) + 1
    local x8t = x8:reshape(8, 28, 28):to_table()
    local r = VaDE.random_shift(x8, 0, 180):reshape(8, 28, 28):to_table()
    local turns = {}
    for b = 1, 8 do
      local ok = {true, true, true, true}
      for i = 1, 28 do
        for j = 1, 28 do
          local v, a = r[b][i][j], x8t[b]
          ok[1] = ok[1] and v == a[i][j]
          ok[2] = ok[2] and v == a[j][29 - i]
          ok[3] = ok[3] and v == a[29 - i][29 - j]
          ok[4] = ok[4] and v == a[29 - j][i]
        end
      end
      local k = ok[1] and 1 or ok[2] and 2 or ok[3] and 3 or ok[4] and 4
      assert.is_truthy(k, "image " .. b .. " is not a quarter turn of its input")
      turns[k] = true
    end
    assert.is_true(next(turns, next(turns)) ~= nil, "8 draws all took the same turn")
    -- masking noise zeroes about p of the entries and keeps the rest
    local m = VaDE.mask_noise(tide.ones(100, 100), 0.2)
    local kept = m:sum():item() / 1e4
    assert.is_true(kept > 0.77 and kept < 0.83)
    assert.are.equal(1e4, m:eq(0):sum():item() + m:eq(1):sum():item())
  end)

  it("a few Adam steps lower the loss", function()
    local m = tiny("vade")
    local x = fx("vade", "x")
    local opt = tide.optim.Adam(m, {lr = 1e-2})
    tide.manual_seed(1)
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
