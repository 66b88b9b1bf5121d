-- tide.distributions against torch.distributions (tests/fixtures/
-- distributions.txt, made by make_distributions.py), and sampling statistics.
local tide = require("tide")
local D = tide.distributions
local fixture = dofile("tests/lua/fixture.lua")
local unpack = unpack or table.unpack

-- fn(inputs...) -> tensor, checked against the case's out and, through the
-- case's gout, against its grad_in<k>.
local function check_case(case, fn, tol)
  tol = tol or 1e-5
  local F = fixture.load("distributions")[case]
  assert(F, "no fixture case " .. case)
  local inputs = {}
  for k = 0, 9 do
    local t = F["in" .. k]
    if not t then break end
    t = t:clone()
    if F["grad_in" .. k] then t:requires_grad(true) end
    inputs[k + 1] = t
  end
  local out = fn(unpack(inputs))
  fixture.assert_close(out, F.out, tol, tol, case .. " out")
  if F.gout then
    (out * F.gout):sum():backward()
    for k, x in ipairs(inputs) do
      local want = F["grad_in" .. (k - 1)]
      if want then fixture.assert_close(x:grad(), want, tol, tol, case .. " grad_in" .. (k - 1)) end
    end
  end
end

describe("distributions against torch.distributions", function()
  it("Normal: log_prob, entropy, KL (with broadcasting)", function()
    check_case("normal_log_prob", function(x, m, s) return D.Normal(m, s):log_prob(x) end)
    check_case("normal_entropy", function(m, s) return D.Normal(m, s):entropy() end)
    check_case("kl_normal", function(m1, s1, m2, s2) return D.kl(D.Normal(m1, s1), D.Normal(m2, s2)) end)
  end)

  it("Laplace: log_prob, entropy, KL", function()
    check_case("laplace_log_prob", function(x, m, s) return D.Laplace(m, s):log_prob(x) end)
    check_case("laplace_entropy", function(m, s) return D.Laplace(m, s):entropy() end)
    check_case("kl_laplace", function(m1, s1, m2, s2) return D.kl(D.Laplace(m1, s1), D.Laplace(m2, s2)) end)
  end)

  it("Bernoulli(logits): log_prob, entropy, mean, KL", function()
    check_case("bernoulli_log_prob", function(x, l) return D.Bernoulli(l):log_prob(x) end)
    check_case("bernoulli_entropy", function(l) return D.Bernoulli(l):entropy() end)
    check_case("bernoulli_mean", function(l) return D.Bernoulli(l):mean() end)
    check_case("kl_bernoulli", function(l1, l2) return D.kl(D.Bernoulli(l1), D.Bernoulli{logits = l2}) end)
  end)

  it("Categorical(logits): log_prob of 0-based ids (broadcast), entropy, KL", function()
    check_case("categorical_log_prob", function(x, l) return D.Categorical(l):log_prob(x) end)
    check_case("categorical_log_prob_bcast", function(x, l) return D.Categorical(l):log_prob(x) end)
    check_case("categorical_entropy", function(l) return D.Categorical(l):entropy() end)
    check_case("kl_categorical", function(l1, l2) return D.kl(D.Categorical(l1), D.Categorical(l2)) end)
  end)

  it("kl fails for mixed families", function()
    local ok, err = pcall(D.kl, D.Normal(0, 1), D.Laplace(0, 1))
    assert.is_false(ok)
    assert.truthy(err:find("Normal || Laplace", 1, true), err)
  end)
end)

describe("sampling", function()
  it("Normal:rsample is loc + scale * eps and carries gradients to loc and scale", function()
    tide.manual_seed(21)
    local loc = tide.from_table{1, -2}:requires_grad(true)
    local scale = tide.from_table{0.5, 2}:requires_grad(true)
    local z = D.Normal(loc, scale):rsample{20000}
    assert.same({20000, 2}, z:shape())
    local m, v = z:mean(1):to_table(), z:var(1):to_table()
    fixture.assert_near(m[1], 1, 0.02, 0, "mean 1")
    fixture.assert_near(m[2], -2, 0.06, 0, "mean 2")
    fixture.assert_near(v[1], 0.25, 0.01, 0, "var 1")
    fixture.assert_near(v[2], 4, 0.15, 0, "var 2")
    z:sum():backward()
    assert.same({20000, 20000}, loc:grad():to_table())
    -- d/dscale sum(loc + scale eps) = sum(eps) = (sum(z) - n loc) / scale
    local zs = z:detach():sum(1):to_table()
    fixture.assert_near(scale:grad():to_table()[2], (zs[2] + 2 * 20000) / 2, 1e-2, 1e-3, "dscale")
    local s = D.Normal(loc, scale):sample()
    assert.is_false(s:requires_grad())
  end)

  it("Laplace:rsample has the Laplace mean and variance 2 scale^2", function()
    tide.manual_seed(22)
    local z = D.Laplace(tide.from_table{3}, tide.from_table{0.5}):rsample{40000}
    fixture.assert_near(z:mean():item(), 3, 0.02, 0, "mean")
    fixture.assert_near(z:var():item(), 0.5, 0.03, 0, "var")
    -- E|z - loc| = scale
    fixture.assert_near((z - 3):abs():mean():item(), 0.5, 0.02, 0, "mean |z - loc| = scale")
  end)

  it("Bernoulli:sample and Categorical:sample follow their probabilities", function()
    tide.manual_seed(23)
    local b = D.Bernoulli(tide.from_table{-1, 0, 2}):sample{20000}
    local freq = b:mean(1):to_table()
    local p = {1 / (1 + math.exp(1)), 0.5, 1 / (1 + math.exp(-2))}
    for i = 1, 3 do fixture.assert_near(freq[i], p[i], 0.015, 0, "bernoulli " .. i) end
    local probs = {0.1, 0.6, 0.3}
    local c = D.Categorical{probs = tide.from_table{probs, {1, 0, 0}}}
    local s = c:sample{30000}
    assert.same({30000, 2}, s:shape())
    local col1 = s:narrow(2, 1, 1)
    for k = 0, 2 do
      fixture.assert_near(col1:eq(k):mean():item(), probs[k + 1], 0.012, 0, "class " .. k)
    end
    assert.equal(0, s:narrow(2, 2, 1):sum():item())
  end)
end)
