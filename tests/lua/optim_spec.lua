-- tide.optim: trajectories of a small model trained by tide.optim against
-- torch.optim (tests/fixtures/nn.txt, traj_* and sched_* cases), clipping,
-- schedules, and optimizer state through checkpoints.
local tide = require("tide")
local nn, optim = tide.nn, tide.optim
local fixture = dofile("tests/lua/fixture.lua")

local NAMES = {"1.weight", "1.bias", "3.weight", "3.bias"}
local STEPS = 6

local function fixture_model(F)
  local m = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
  local sd = {}
  for _, n in ipairs(NAMES) do sd[n] = F["p." .. n] end
  m:load_state_dict(sd)
  return m
end

-- Runs the fixture's training loop in tide; make(model) -> optimizer[, scheduler].
local function check_trajectory(case, make, clip)
  local F = fixture.load("nn")[case]
  assert(F, "no fixture case " .. case)
  local m = fixture_model(F)
  local opt, sched = make(m)
  local losses = F.loss:to_table()
  for k = 1, STEPS do
    opt:zero_grad()
    local loss = (m(F.x) - F.y):square():mean()
    loss:backward()
    fixture.assert_near(loss:item(), losses[k], 1e-6, 1e-5, case .. " loss before step " .. k)
    if clip then
      local norm = opt:clip_grad_norm(clip)
      fixture.assert_near(norm, F.norms:to_table()[k], 1e-6, 1e-5, case .. " norm at step " .. k)
    end
    opt:step()
    if sched then sched:step() end
    for _, n in ipairs(NAMES) do
      fixture.assert_close(m:state_dict()[n], F[("s%d.%s"):format(k, n)], 2e-6, 1e-5, ("%s step %d %s"):format(case, k, n))
    end
  end
end

describe("optimizers against torch.optim, 6 steps of a Linear-Tanh-Linear model", function()
  it("Adam", function()
    check_trajectory("traj_adam", function(m) return optim.Adam(m, {lr = 0.05}) end)
  end)

  it("Adam with amsgrad and L2 weight decay", function()
    check_trajectory("traj_adam_amsgrad_wd", function(m)
      return optim.Adam(m, {lr = 0.05, betas = {0.8, 0.99}, weight_decay = 0.1, amsgrad = true})
    end)
  end)

  it("AdamW (decoupled weight decay)", function()
    check_trajectory("traj_adamw", function(m) return optim.AdamW(m, {lr = 0.05, weight_decay = 0.1}) end)
  end)

  it("SGD, with momentum + dampening + weight decay, and nesterov", function()
    check_trajectory("traj_sgd", function(m) return optim.SGD(m, {lr = 0.1}) end)
    check_trajectory("traj_sgd_momentum_wd", function(m)
      return optim.SGD(m, {lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 0.01})
    end)
    check_trajectory("traj_sgd_nesterov", function(m)
      return optim.SGD(m, {lr = 0.1, momentum = 0.9, nesterov = true})
    end)
  end)

  it("Adam with clip_grad_norm and StepLR", function()
    check_trajectory("traj_adam_clip_step", function(m)
      local opt = optim.Adam(m, {lr = 0.05})
      return opt, optim.StepLR(opt, 2, 0.5)
    end, 0.5)
  end)

  it("steps a list of tensors and groups with their own hyperparameters", function()
    local F = fixture.load("nn").traj_sgd_momentum_wd
    local m = fixture_model(F)
    local ps = m:parameters()
    -- the same update through per-tensor targets in two groups
    local opt = optim.SGD({{params = {ps[1], ps[2]}}, {params = {ps[3], ps[4]}, lr = 0.1}},
                          {lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 0.01})
    for k = 1, STEPS do
      opt:zero_grad()
      local l = (m(F.x) - F.y):square():mean()
      l:backward()
      opt:step()
    end
    for _, n in ipairs(NAMES) do
      fixture.assert_close(m:state_dict()[n], F[("s%d.%s"):format(STEPS, n)], 2e-6, 1e-5, n)
    end
  end)
end)

describe("learning-rate schedules against torch.optim.lr_scheduler", function()
  local function check(case, make)
    local lrs = fixture.get("nn", case, "lrs"):to_table()
    local opt = optim.SGD(tide.zeros(1):requires_grad(true), {lr = 0.1})
    local s = make(opt)
    fixture.assert_near(opt:get_lr(), lrs[1], 1e-8, 1e-6, case .. " epoch 0")
    for e = 2, #lrs do
      s:step()
      fixture.assert_near(opt:get_lr(), lrs[e], 1e-8, 1e-6, case .. " epoch " .. (e - 1))
    end
  end

  it("StepLR, ExponentialLR, CosineAnnealingLR, LinearLR", function()
    check("sched_step", function(o) return optim.StepLR(o, 3, 0.5) end)
    check("sched_exponential", function(o) return optim.ExponentialLR(o, 0.8) end)
    check("sched_cosine", function(o) return optim.CosineAnnealingLR(o, 10, 0.01) end)
    check("sched_linear", function(o) return optim.LinearLR(o, 0.25, 1.0, 4) end)
  end)

  it("linear warmup then cosine (torch's SequentialLR of LinearLR and CosineAnnealingLR)", function()
    check("sched_warmup_cosine", function(o)
      return optim.WarmupLR(o, 3, optim.CosineAnnealingLR(o, 8), 0.1)
    end)
  end)
end)

describe("gradient clipping", function()
  it("scales the flat gradient to max_norm and returns the norm before", function()
    local g = tide.from_table{3, 4}
    local p = tide.zeros(2):requires_grad(true)
    p:set_grad(g)
    local norm = optim.clip_grad_norm({g}, 1)
    fixture.assert_near(norm, 5, 1e-6, 1e-6, "norm")
    fixture.assert_close(p:grad(), tide.from_table{0.6, 0.8}, 1e-6, 1e-6, "clipped")
    -- below the limit nothing changes
    fixture.assert_near(optim.clip_grad_norm(p:grad(), 10), 1, 1e-6, 1e-6, "norm after")
    fixture.assert_close(p:grad(), tide.from_table{0.6, 0.8}, 1e-6, 1e-6, "unchanged")
  end)
end)

describe("optimizer state", function()
  local function setup()
    local F = fixture.load("nn").traj_adam_amsgrad_wd
    local m = fixture_model(F)
    local opt = optim.Adam(m, {lr = 0.05, betas = {0.8, 0.99}, weight_decay = 0.1, amsgrad = true})
    local function step()
      opt:zero_grad()
      local l = (m(F.x) - F.y):square():mean()
      l:backward()
      opt:step()
    end
    return m, opt, step
  end

  it("is saved with the model and resumes the same trajectory", function()
    local m, opt, step = setup()
    step(); step(); step()
    local path = os.tmpname()
    m:save(path, {optimizer = opt, metadata = {epoch = "3"}})
    step(); step()
    local want = m:flat_parameters():clone()
    local m2, opt2, step2 = setup()
    local meta = tide.serialize.load_checkpoint(path, m2, {optimizer = opt2, metadata_keys = {"epoch"}})
    assert.equal("3", meta.epoch)
    assert.equal(3, opt2:state_dict().groups[1].targets[1].step)
    step2(); step2()
    fixture.assert_close(m2:flat_parameters(), want, 0, 0, "resumed")
    os.remove(path)
  end)

  it("the optimizer follows a model re-homed into a bigger one", function()
    local m, opt, step = setup()
    step()
    local big = nn.Sequential(nn.Linear(2, 2), m)
    big:flat_parameters() -- m's parameters move into big's buffer
    step()
    local sd = opt:state_dict()
    assert.equal(2, sd.groups[1].targets[1].step)
    local flat = big:flat_parameters()
    assert.is_true(m[1].weight.data == flat.data + 6)
  end)

  it("checks its options", function()
    assert.has_error(function() optim.Adam(nn.Linear(2, 2), {lr = 0.1, betas = 0.9}) end)
    assert.has_error(function() optim.Adam(nn.Linear(2, 2), {learning_rate = 0.1}) end)
    assert.has_error(function() optim.SGD(nn.Linear(2, 2)) end)
    local ok, err = pcall(function()
      local o = optim.Adam(nn.Linear(2, 2), {lr = -1})
      o.param_groups[1].targets[1].module(tide.zeros(1, 2)):sum():backward()
      o:step()
    end)
    assert.is_false(ok)
    assert.truthy(err:find("adam_step: bad hyperparameters", 1, true), err)
  end)
end)
