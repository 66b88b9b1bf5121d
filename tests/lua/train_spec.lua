-- tide.train: the loop learns, checkpoints resume exactly (also after a
-- real SIGKILL), broken checkpoints fail clearly and leave the previous
-- one usable, a NaN stops the run, duck-typed models and optimizers work.
local tide = require("tide")
local train = tide.train
local sys = require("tide.data.sys")
local ffi = require("ffi")

local dirs = {}
local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(sys.mkdir_p(p))
  dirs[#dirs + 1] = p
  return p
end

local function cleanup()
  for _, d in ipairs(dirs) do
    if d:match("^/tmp/") then os.execute("rm -rf '" .. d .. "'") end
  end
  dirs = {}
end

-- A regression problem, a model, an optimizer and a loader; everything
-- seeded, so two calls give the same start.
local function setup(lr)
  tide.manual_seed(42)
  local X = tide.randn(96, 4)
  local Y = X:matmul(tide.from_table{{1}, {-2}, {0.5}, {3}}) + 0.1 * tide.randn(96, 1)
  local model = tide.nn.Linear(4, 1)
  local opt = tide.optim.Adam(model, {lr = lr or 0.05})
  local loader = tide.data.loader(tide.data.tensors{X, Y}, {batch_size = 16, shuffle = true, seed = 3})
  local function step(b)
    local out = model(b.x[1])
    -- some randomness inside the step, so the engine RNG state matters
    local noise = tide.randn(out:shape()):mul_scalar(1e-3)
    return tide.mse_loss(out + noise, b.x[2]), {bias = model.bias:sum()}
  end
  return {X = X, Y = Y, model = model, opt = opt, loader = loader, step = step}
end

local function params(model)
  local out = {}
  for name, p in model:named_parameters() do out[name] = p:clone() end
  return out
end

local function max_diff(a, b)
  local d = 0
  for k, t in pairs(a) do d = math.max(d, (t - b[k]):abs():max():item()) end
  return d
end

local function fit(s, o)
  o.model, o.optimizer, o.loader, o.step = s.model, s.opt, s.loader, s.step
  if o.progress == nil then o.progress = false end
  if o.seed == nil then o.seed = 9 end
  return train.fit(o)
end

local function read_lines(path)
  local out = {}
  for l in io.lines(path) do out[#out + 1] = l end
  return out
end

describe("tide.train.fit", function()
  after_each(cleanup)

  it("trains a tiny model: the loss goes down", function()
    local s = setup()
    local h = fit(s, {epochs = 6})
    assert.equal(6, #h.epochs)
    assert.equal(36, h.global_step)
    assert.is_true(h.epochs[6].loss < 0.3 * h.epochs[1].loss,
      ("loss %g -> %g"):format(h.epochs[1].loss, h.epochs[6].loss))
    assert.is_number(h.epochs[1].bias)
  end)

  it("writes the CSV logs and calls on_epoch_end in eval mode without grad", function()
    local s = setup()
    local dir = tmpdir()
    local calls = {}
    local h = fit(s, {epochs = 2, dir = dir, on_epoch_end = function(e, ctx)
      calls[#calls + 1] = {e, s.model.training, tide.is_grad_enabled(), ctx.global_step}
      return {val = tide.mse_loss(s.model(s.X), s.Y)}
    end})
    assert.same({{1, false, false, 6}, {2, false, false, 12}}, calls)
    assert.is_true(s.model.training)
    assert.is_number(h.epochs[2].val)
    local lines = read_lines(dir .. "/log.csv")
    assert.equal("epoch,step,global_step,loss,bias,grad_norm,lr,time", lines[1])
    assert.equal(13, #lines)
    assert.matches("^2,6,12,", lines[13])
    local ep = read_lines(dir .. "/log_epochs.csv")
    assert.equal("epoch,global_step,loss,bias,val,epoch_time,time", ep[1])
    assert.equal(3, #ep)
  end)

  it("prints progress lines (plain when not a terminal)", function()
    local s = setup()
    local path = os.tmpname()
    local f = io.open(path, "w")
    fit(s, {epochs = 2, progress = f})
    f:close()
    local text = io.open(path):read("*a")
    os.remove(path)
    assert.matches("epoch 1/2 [^\n]*loss [%d.e+-]+ bias [^\n]*it/s", text)
    assert.matches("epoch 2/2 6 steps loss", text)
    assert.is_nil(text:find("\r", 1, true))
  end)

  it("resumes from the latest checkpoint as if never stopped", function()
    local a = setup()
    fit(a, {epochs = 4, dir = tmpdir()})
    local want = params(a.model)

    local b = setup()
    local dir = tmpdir()
    local h1 = fit(b, {epochs = 2, dir = dir})
    assert.equal(2, h1.epoch)
    assert.same({dir .. "/ckpt-000000006.safetensors", dir .. "/ckpt-000000012.safetensors"}, train.checkpoints(dir))
    local c = setup(0.05)
    c.model.weight:fill(7) -- the checkpoint must overwrite it
    local h2 = fit(c, {epochs = 4, dir = dir, resume = true})
    assert.equal(dir .. "/ckpt-000000012.safetensors", h2.resumed_from)
    assert.equal(2, #h2.epochs)
    assert.equal(3, h2.epochs[1].epoch)
    assert.equal(24, h2.global_step)
    assert.equal(24, c.opt.steps) -- the optimizer's state came back with the model
    assert.is_true(max_diff(want, params(c.model)) < 1e-6, "diff " .. max_diff(want, params(c.model)))
    -- the log continues without gaps or repeats
    local lines = read_lines(dir .. "/log.csv")
    assert.equal(25, #lines)
    for i = 2, 25 do assert.matches("^%d+,%d+," .. (i - 1) .. ",", lines[i]) end
    -- keep = 2: the older ones are gone
    assert.equal(2, #train.checkpoints(dir))
    -- a finished run resumes to nothing to do
    local h3 = fit(setup(), {epochs = 4, dir = dir, resume = true})
    assert.equal(0, #h3.epochs)
    assert.equal(24, h3.global_step)
    -- a fresh run there must say resume or overwrite
    local ok, err = pcall(fit, setup(), {epochs = 1, dir = dir})
    assert.is_false(ok)
    assert.matches("already holds checkpoints", err, 1, true)
    fit(setup(), {epochs = 1, dir = dir, overwrite = true})
    assert.same({dir .. "/ckpt-000000006.safetensors"}, train.checkpoints(dir))
  end)

  it("survives a SIGKILL mid-epoch: resume matches an uninterrupted run", function()
    local a = setup()
    fit(a, {epochs = 3, dir = tmpdir(), checkpoint_steps = 4})
    local want = params(a.model)

    local dir = tmpdir()
    -- the child builds the same setup as setup() and kills itself at global step 11
    local child = dir .. "/run.lua"
    f = io.open(child, "w")
    f:write(([[
      local ffi = require("ffi")
      ffi.cdef("int tide_spec_kill_(int pid, int sig) __asm__(\"kill\"); int tide_spec_getpid_(void) __asm__(\"getpid\");")
      local tide = require("tide")
      tide.manual_seed(42)
      local X = tide.randn(96, 4)
      local Y = X:matmul(tide.from_table{{1}, {-2}, {0.5}, {3}}) + 0.1 * tide.randn(96, 1)
      local model = tide.nn.Linear(4, 1)
      local opt = tide.optim.Adam(model, {lr = 0.05})
      local loader = tide.data.loader(tide.data.tensors{X, Y}, {batch_size = 16, shuffle = true, seed = 3})
      tide.train.fit{model = model, optimizer = opt, loader = loader, epochs = 3, dir = %q, checkpoint_steps = 4,
        progress = false, seed = 9,
        step = function(b, ctx)
          if ctx.global_step == 11 then ffi.C.tide_spec_kill_(ffi.C.tide_spec_getpid_(), 9) end
          local out = model(b.x[1])
          local noise = tide.randn(out:shape()):mul_scalar(1e-3)
          return tide.mse_loss(out + noise, b.x[2]), {bias = model.bias:sum()}
        end}
      os.exit(0)
    ]]):format(dir))
    f:close()
    local cmd = ("LUA_PATH=%q luajit %q >/dev/null 2>&1"):format(package.path, child)
    local rc = os.execute(cmd)
    assert.are_not.equal(0, rc) -- killed
    assert.equal(dir .. "/ckpt-000000008.safetensors", train.latest(dir))
    local info = train.info(dir .. "/ckpt-000000008.safetensors")
    assert.equal(1, info.epoch) -- epoch 1 done, 2 steps into epoch 2
    assert.equal(2, info.step)
    -- the log has rows past the checkpoint (up to step 10): resume drops them
    local c = setup()
    local h = fit(c, {epochs = 3, dir = dir, checkpoint_steps = 4, resume = true})
    assert.equal(18, h.global_step)
    assert.is_true(max_diff(want, params(c.model)) < 1e-6, "diff " .. max_diff(want, params(c.model)))
    local lines = read_lines(dir .. "/log.csv")
    assert.equal(19, #lines)
    for i = 2, 19 do assert.matches("^%d+,%d+," .. (i - 1) .. ",", lines[i]) end
    -- no temporary files left behind by the resumed run
    for _, n in ipairs(sys.list_dir(dir)) do assert.is_nil(n:find("%.tmp%.")) end
  end)

  it("a truncated or corrupt checkpoint fails clearly; the previous one is intact", function()
    local s = setup()
    local dir = tmpdir()
    fit(s, {epochs = 2, dir = dir})
    local older, newest = dir .. "/ckpt-000000006.safetensors", dir .. "/ckpt-000000012.safetensors"
    local f = io.open(newest, "rb")
    local bytes = f:read("*a")
    f:close()
    -- truncated
    f = io.open(newest, "wb")
    f:write(bytes:sub(1, math.floor(#bytes / 2)))
    f:close()
    local c = setup()
    local before = params(c.model)
    local ok, err = pcall(fit, c, {epochs = 4, dir = dir, resume = true})
    assert.is_false(ok)
    assert.matches("resume failed", err, 1, true)
    assert.matches(newest, err, 1, true)
    assert.matches(older .. " is untouched", err, 1, true)
    assert.equal(0, max_diff(before, params(c.model)))
    -- corrupt data (the same length): the checksums catch it
    f = io.open(newest, "wb")
    f:write(bytes:sub(1, #bytes - 12), ("\127"):rep(12))
    f:close()
    ok, err = pcall(fit, c, {epochs = 4, dir = dir, resume = true})
    assert.is_false(ok)
    assert.matches("corrupt", err, 1, true)
    assert.equal(0, max_diff(before, params(c.model)))
    -- the previous one loads and training continues from it
    local h = fit(c, {epochs = 3, dir = dir, resume = older})
    assert.equal(older, h.resumed_from)
    assert.equal(2, #h.epochs)
    assert.equal(18, h.global_step)
  end)

  it("stops on a NaN loss, naming where, and keeps the last good checkpoint", function()
    local s = setup()
    local dir = tmpdir()
    local inner = s.step
    s.step = function(b, ctx)
      local loss, st = inner(b, ctx)
      if ctx.global_step == 9 then loss = loss * (0 / 0) end
      return loss, st
    end
    local seen
    local ok, err = pcall(fit, s, {epochs = 3, dir = dir, checkpoint_steps = 4, on_step_end = function(ctx)
      seen = params(s.model)
    end})
    assert.is_false(ok)
    assert.matches("loss is nan at epoch 2, step 3/6 (global step 9)", err, 1, true)
    assert.matches("ckpt-000000008.safetensors", err, 1, true)
    assert.equal(dir .. "/ckpt-000000008.safetensors", train.latest(dir))
    -- no update happened at the NaN step
    assert.equal(0, max_diff(seen, params(s.model)))
    -- and the checkpoint loads
    local c = setup()
    local info = train.load(train.latest(dir), c.model, {optimizer = c.opt})
    assert.equal(8, info.global_step)
    assert.equal(0, max_diff(seen, params(c.model)))
  end)

  it("stops on a NaN gradient before the update", function()
    local s = setup()
    s.step = function(b)
      -- a finite loss (0) whose gradient is 0 * inf = nan
      return s.model(b.x[1]):mul_scalar(0):sqrt():sum()
    end
    local before = params(s.model)
    local ok, err = pcall(fit, s, {epochs = 1})
    assert.is_false(ok)
    assert.matches("gradient norm is nan at epoch 1, step 1", err, 1, true)
    assert.matches("No checkpoint was written", err, 1, true)
    assert.equal(0, max_diff(before, params(s.model)))
  end)

  it("works with a duck-typed model and optimizer", function()
    tide.manual_seed(1)
    local w = tide.zeros(3):requires_grad(true)
    local target = tide.from_table{1, -1, 2}
    local model = {parameters = function() return {w} end}
    local opt = {n = 0}
    function opt.zero_grad() w:zero_grad() end
    function opt.step()
      tide.no_grad(function() w:copy_(w - w:grad() * 0.2) end)
      opt.n = opt.n + 1
    end
    function opt:state_dict() return {n = self.n, tag = "sgd"} end
    function opt:load_state_dict(sd) self.n = sd.n; self.tag = sd.tag end
    local batches = {1, 2, 3, 4}
    local dir = tmpdir()
    local h = train.fit{model = model, optimizer = opt, loader = batches, epochs = 3, dir = dir, progress = false,
      step = function() return (w - target):square():sum() end}
    assert.equal(12, opt.n)
    assert.is_true(h.epochs[3].loss < 0.01 * h.epochs[1].loss)
    -- resume into fresh objects
    local w_end = w:clone()
    w:fill(0)
    opt.n = 0
    local h2 = train.fit{model = model, optimizer = opt, loader = batches, epochs = 3, dir = dir, progress = false,
      resume = true, step = function() return (w - target):square():sum() end}
    assert.equal(0, #h2.epochs)
    assert.equal(12, opt.n)
    assert.equal("sgd", opt.tag)
    assert.equal(0, (w - w_end):abs():max():item())
  end)

  it("backward = false: the step updates the model; ctx.stop ends the run", function()
    local s = setup()
    local n = 0
    local h = train.fit{model = s.model, loader = s.loader, epochs = 5, backward = false, progress = false,
      step = function(b, ctx)
        n = n + 1
        if ctx.epoch == 2 and ctx.step == 3 then ctx.stop("enough") end
        return 1.5, {k = n}
      end}
    assert.equal("enough", h.stopped)
    assert.equal(9, n)
    assert.equal(2, #h.epochs)
    assert.equal(1.5, h.epochs[1].loss)
  end)

  it("rejects unknown options and missing pieces", function()
    local s = setup()
    assert.has_error(function() train.fit{model = s.model, loader = s.loader, step = s.step, optimizer = s.opt, epoch = 3} end)
    assert.has_error(function() train.fit{model = s.model, loader = s.loader, optimizer = s.opt} end)
    assert.has_error(function() train.fit{model = s.model, loader = s.loader, step = s.step} end)
  end)
end)
