-- MMVAE+ (tide.models.mmvae_plus): the bound and every parameter's gradient
-- on tiny fixed cases against PyTorch (tests/fixtures/cmvae.txt, made by
-- make_cmvae.py: the bound written modality by modality), plus the pieces
-- around it (IWAE with one sample is the ELBO, generation shapes, training).
local tide = require("tide")
local fixture = dofile("tests/lua/fixture.lua")
local MMVAEPlus = require("tide.models.mmvae_plus")

local FAM = {[0] = "normal", [1] = "laplace"}

local function model_of(case)
  local F = fixture.load("cmvae")[case]
  assert(F, "no fixture case " .. case)
  local cfg, dims = F.cfg:to_table(), F.dims:to_table()
  local M, K, beta = cfg[1], cfg[2], cfg[3]
  local model = MMVAEPlus{modalities = M, shape = {dims[2]}, hidden = dims[3], zdim = dims[4], wdim = dims[5],
                          beta = beta, samples = K, posterior = FAM[cfg[7]],
                          objective = cfg[6] == 1 and "dreg" or (K > 1 and "iwae" or "elbo")}
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

local function noise_of(F) return {z = F["noise.z"], w = F["noise.w"], r = F["noise.r"]} end

local function check_case(case)
  local model, F = model_of(case)
  model:zero_grad()
  local loss = model:backward(F.x, {noise = noise_of(F)})
  fixture.assert_near(loss:item(), F.loss:item(), 1e-3, 2e-5, case .. " loss")
  for name, p in model:named_parameters() do
    fixture.assert_close(p:grad(), F["g." .. name], 2e-4, 2e-3, case .. " grad " .. name)
  end
end

describe("MMVAE+ objective against PyTorch", function()
  it("ELBO, Laplace posteriors and priors", function() check_case("mmvae_plus_elbo") end)
  it("IWAE (K = 3), Normal posteriors and priors", function() check_case("mmvae_plus_iwae") end)
  it("DReG (K = 2)", function() check_case("mmvae_plus_dreg") end)
end)

describe("MMVAE+", function()
  it("IWAE and DReG with one sample give the ELBO's value", function()
    local model, F = model_of("mmvae_plus_elbo")
    local nz = noise_of(F)
    local elbo = model:loss(F.x, {noise = nz}):item()
    fixture.assert_near(model:loss(F.x, {noise = nz, objective = "iwae"}):item(), elbo, 1e-4, 1e-6, "iwae K=1")
    fixture.assert_near(model:loss(F.x, {noise = nz, objective = "dreg"}):item(), elbo, 1e-4, 1e-6, "dreg K=1")
  end)

  it("the bound grows with more importance samples (on average)", function()
    local model, F = model_of("mmvae_plus_elbo")
    tide.manual_seed(3)
    local e, i = 0, 0
    for _ = 1, 8 do
      e = e + model:loss(F.x, {samples = 1}):item()
      i = i + model:loss(F.x, {samples = 8, objective = "iwae"}):item()
    end
    assert.is_true(i < e)
  end)

  it("takes a list of modalities or a stacked tensor", function()
    local model, F = model_of("mmvae_plus_elbo")
    local nz = noise_of(F)
    local a = model:loss(F.x, {noise = nz}):item()
    local b = model:loss({F.x:select(1, 1), F.x:select(1, 2), F.x:select(1, 3)}, {noise = nz}):item()
    fixture.assert_near(a, b, 1e-6, 1e-6, "list vs stacked")
  end)

  it("generates every modality from one (cross-modal) and from the prior", function()
    local model, F = model_of("mmvae_plus_elbo")
    assert.same({3, 4, 6}, model:cross_generate(F.x, 2):shape())
    assert.same({3, 5, 6}, model:sample(5):shape())
    local e = model:embed(tide.data.tensors{F.x:select(1, 1), F.x:select(1, 2), F.x:select(1, 3)})
    assert.same({3, 4, 3}, e.mu_z:shape())
    assert.same({3, 4, 2}, e.scale_w:shape())
  end)

  it("trains: the loss of a fixed batch falls with Adam", function()
    tide.manual_seed(5)
    local model = MMVAEPlus{modalities = 2, shape = {8}, hidden = 16, zdim = 2, wdim = 2, beta = 1}
    local x = tide.rand(2, 16, 8)
    local opt = tide.optim.Adam(model, {lr = 1e-2})
    local step = model:fit_step(opt, 100)
    local first, last
    for i = 1, 60 do
      tide.manual_seed(100 + i)
      local loss = step({x = x})
      if i == 1 then first = loss:item() end
      last = loss:item()
    end
    assert.is_true(last < first - 1)
  end)

  it("scale_head softmax: the posterior scales of z and of w sum to their dims, in the order of the head", function()
    for _, arch in ipairs({"light", "light_conv"}) do
      tide.manual_seed(3)
      local model = MMVAEPlus{modalities = 2, shape = {3, 8, 8}, hidden = 8, zdim = 3, wdim = 5, arch = arch,
                              scale_head = "softmax"}
      local _, sz, _, sw = model:encode(tide.rand(2, 4, 3, 8, 8))
      assert.is_true((sz:sum(3) - 3):abs():max():item() < 1e-4, arch)
      assert.is_true((sw:sum(3) - 5):abs():max():item() < 1e-4, arch)
      local path = os.tmpname() .. ".safetensors"
      model:save(path)
      local back = tide.load_model(path)
      os.remove(path)
      assert.equals("softmax", back.config.scale_head)
      local x = tide.rand(2, 4, 3, 8, 8)
      local _, a = model:encode(x)
      local _, b = back:encode(x)
      assert.is_true((a - b):abs():max():item() < 1e-6)
    end
    -- softplus (the default) does not tie the dimensions together
    tide.manual_seed(3)
    local plain = MMVAEPlus{modalities = 2, shape = {3, 8, 8}, hidden = 8, zdim = 3, wdim = 5, arch = "light"}
    local _, sz = plain:encode(tide.rand(2, 4, 3, 8, 8))
    assert.is_true((sz:sum(3) - 3):abs():max():item() > 1e-3)
    assert.has_error(function() MMVAEPlus{modalities = 2, shape = {3, 8, 8}, scale_head = "exp"} end)
  end)
end)
