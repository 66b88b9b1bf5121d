-- CMVAE (tide.models.cmvae): the objective and every parameter's gradient
-- on tiny fixed cases against PyTorch (tests/fixtures/cmvae.txt, made by
-- make_cmvae.py, which writes the expectation over c as an explicit sum),
-- the cluster posterior, pruning through set_active, and generation.
local tide = require("tide")
local fixture = dofile("tests/lua/fixture.lua")
local CMVAE = require("tide.models.cmvae")

local FAM = {[0] = "normal", [1] = "laplace"}

-- A model built as the fixture case describes, with its parameters.
local function model_of(case)
  local F = fixture.load("cmvae")[case]
  assert(F, "no fixture case " .. case)
  local cfg, dims = F.cfg:to_table(), F.dims:to_table()
  local M, K, beta, C = cfg[1], cfg[2], cfg[3], cfg[4]
  local model = CMVAE{modalities = M, shape = {dims[2]}, hidden = dims[3], zdim = dims[4], wdim = dims[5],
                      clusters = C, beta = beta, samples = K, objective = cfg[6] == 1 and "dreg" or (K > 1 and "iwae" or "elbo"),
                      prior = FAM[cfg[5]], posterior = FAM[cfg[7]], learn_scales = F["p.cluster_scales"] ~= nil}
  local n = 0
  for name, p in model:named_parameters() do
    local want = F["p." .. name]
    assert(want, case .. ": the fixture has no parameter " .. name)
    p:copy_(want)
    n = n + 1
  end
  local expected = 0
  for k in pairs(F) do if k:match("^p%.") then expected = expected + 1 end end
  assert.equal(expected, n)
  return model, F
end

local function check_case(case)
  local model, F = model_of(case)
  model:zero_grad()
  local loss = model:backward(F.x, {noise = {z = F["noise.z"], w = F["noise.w"], r = F["noise.r"]}})
  fixture.assert_near(loss:item(), F.loss:item(), 1e-3, 2e-5, case .. " loss")
  for name, p in model:named_parameters() do
    fixture.assert_close(p:grad(), F["g." .. name], 2e-4, 2e-3, case .. " grad " .. name)
  end
  return model, F
end

describe("CMVAE objective against PyTorch", function()
  it("ELBO (K = 1), Laplace prior with fixed scales", function() check_case("cmvae_elbo") end)
  it("IWAE (K = 3)", function() check_case("cmvae_iwae") end)
  it("DReG (K = 3): detached posteriors, squared weights on the encoders' path", function()
    check_case("cmvae_dreg")
  end)
  it("Normal prior and posterior with learnable (log-variance) scales", function()
    check_case("cmvae_normal_learned")
  end)
  it("Laplace prior with learnable log-scales, IWAE K = 2", function() check_case("cmvae_laplace_learned_iwae") end)
end)

describe("CMVAE clusters", function()
  it("q(c|z) at the posterior means matches PyTorch's Bayes' rule", function()
    local model, F = model_of("cmvae_elbo")
    local mz = tide.no_grad(function() return (model:encode(F.x)) end)
    local M, B, D = mz:size(1), mz:size(2), mz:size(3)
    fixture.assert_close(model:cluster_probs(mz:reshape(M * B, D)), F.qc, 1e-5, 1e-4, "q(c|z)")
  end)

  it("set_active removes clusters from p(c) and q(c|z), and the bound changes", function()
    local model, F = model_of("cmvae_elbo")
    local mz = tide.no_grad(function() return (model:encode(F.x)) end)
    local z = mz:reshape(-1, mz:size(3))
    local mask = tide.from_table({1, 0, 1, 1})
    model:set_active(mask)
    local q = model:cluster_probs(z)
    for i = 1, q:size(1) do assert.equal(0, q:at(i, 2)) end
    local full = F.qc:clone()
    -- the others are renormalized: q_c / (1 - q_2)
    for i = 1, q:size(1) do
      local rest = 1 - full:at(i, 2)
      for c = 1, 4 do
        if c ~= 2 then fixture.assert_near(q:at(i, c), full:at(i, c) / rest, 1e-5, 1e-3, "renormalized q") end
      end
    end
    local noise = {z = F["noise.z"], w = F["noise.w"], r = F["noise.r"]}
    local pruned = model:loss(F.x, {noise = noise}):item()
    model:set_active(tide.ones(4))
    local all = model:loss(F.x, {noise = noise}):item()
    fixture.assert_near(all, F.loss:item(), 1e-3, 2e-5, "loss with every cluster back")
    assert.is_true(math.abs(pruned - all) > 1e-4)
  end)

  it("predict votes over modalities; sample_clusters decodes per cluster", function()
    local model, F = model_of("cmvae_elbo")
    local ds = tide.data.tensors{F.x:select(1, 1), F.x:select(1, 2), F.x:select(1, 3)}
    local pred = model:predict(ds)
    assert.same({4}, pred:shape())
    -- by hand: argmax per modality of q(c|mu_z), mode over the 3 modalities
    local q = F.qc:reshape(3, 4, 4)
    for b = 1, 4 do
      local votes, best, bestn = {}, nil, -1
      for m = 1, 3 do
        local am, av = 0, -1
        for c = 1, 4 do if q:at(m, b, c) > av then am, av = c - 1, q:at(m, b, c) end end
        votes[am] = (votes[am] or 0) + 1
      end
      for c, n in pairs(votes) do if n > bestn then best, bestn = c, n end end
      if bestn > 1 then assert.equal(best, pred:at(b)) end
    end
    local imgs, clusters = model:sample_clusters(2)
    assert.equal(4, #clusters)
    assert.same({3, 8, 6}, imgs:shape())
  end)

  it("saves with its config and chosen clusters; tide.load_model rebuilds the same model", function()
    local model, F = model_of("cmvae_elbo")
    model:set_active(tide.from_table({1, 0, 1, 1}))
    local path = os.tmpname()
    model:save(path)
    local back = tide.load_model(path)
    os.remove(path)
    assert.equal(getmetatable(model), getmetatable(back))
    assert.same({1, 0, 1, 1}, back.active:to_table())
    model:eval()
    local noise = {z = F["noise.z"], w = F["noise.w"], r = F["noise.r"]}
    fixture.assert_near(back:loss(F.x, {noise = noise}):item(), model:loss(F.x, {noise = noise}):item(), 0, 1e-6,
                        "loss of the reloaded model")
    local z = tide.randn(5, model.zdim)
    fixture.assert_close(back:cluster_probs(z), model:cluster_probs(z), 0, 0, "q(c|z)")
  end)

  it("tide.load_model names the file when it has no config", function()
    local path = os.tmpname()
    tide.save(path, {a = tide.ones(2)})
    local ok, err = pcall(tide.load_model, path)
    os.remove(path)
    assert.is_false(ok)
    assert.truthy(tostring(err):find(path, 1, true) and tostring(err):find("config"))
  end)

  it("rejects a wrong number of modalities and an unknown prior", function()
    local model = model_of("cmvae_elbo")
    assert.has_error(function() model:loss(tide.rand(2, 4, 6)) end)
    assert.has_error(function() CMVAE{modalities = 2, prior = "cauchy"} end)
  end)
end)
