-- tide.train - the training loop: progress bar, CSV log, periodic atomic
-- checkpoints, resume, NaN detection, an evaluation hook.
--
--   local hist = tide.train.fit{
--     model = model, optimizer = opt, loader = loader, epochs = 50,
--     step = function(batch, ctx)              -- returns the loss (0-d tensor) and stats
--       local loss, kl = model:elbo(batch.x)
--       return loss, {kl = kl}
--     end,
--     dir = "runs/mvae",                       -- checkpoints + log.csv (+ log_epochs.csv)
--     resume = true,                           -- continue from the latest checkpoint in dir
--     on_epoch_end = function(epoch, ctx) return {acc = evaluate(model)} end,
--   }
--
-- fit zeroes the gradients, calls step, checks the loss, runs backward,
-- checks (and with clip_grad clips) the gradient norm, then steps the
-- optimizer. With backward = false, step does all of that itself and fit
-- only logs, checks and checkpoints.
--
-- Checkpoints are safetensors files <dir>/ckpt-<global step>.safetensors
-- holding the model's parameters under their names (they load with
-- model:load(path, {strict = false}) and in PyTorch), the optimizer's state,
-- `extra` tensors, and the position (epoch, step, global step), seeds and
-- elapsed time as metadata. Each is written to a temporary file, synced and
-- renamed, then older ones beyond `keep` are deleted: a killed run leaves
-- the previous checkpoints whole.
local B = require("tide_ffi")
local W = B.wrappers
local C = B.C
local raise = B.raise
local sys = require("tide.data.sys")
local S = require("tide.serialize")
local U = require("tide.train.util")
local R = require("tide.train.report")
local K = require("tide.train.checkpoint")

local bare, finite, num_of, sorted_keys, fmt_time, derived_seed =
  U.bare, U.finite, U.num_of, U.sorted_keys, U.fmt_time, U.derived_seed
local Csv, Bar, epochs_path = R.Csv, R.Bar, R.epochs_path
local is_tide_optimizer, make_proxy, checksum, generic_opt_state =
  K.is_tide_optimizer, K.make_proxy, K.checksum, K.generic_opt_state

local stats_text = R.stats_text

local train = {checkpoints = K.checkpoints, latest = K.latest, info = K.info, load = K.load}

---------------------------------------------------------------- the run

local OPTIONS = {
  model = true, optimizer = true, loader = true, epochs = true, step = true, dir = true, resume = true,
  log = true, checkpoint_every = true, checkpoint_steps = true, keep = true, on_epoch_end = true,
  on_step_end = true, clip_grad = true, seed = true, progress = true, progress_interval = true, extra = true,
  backward = true, scheduler = true, metadata = true, eval_grad = true, steps_per_epoch = true, overwrite = true,
}

local Run = {}
Run.__index = Run

local function new_run(o)
  if type(o) ~= "table" then raise("train.fit{...}: expects a table of options") end
  for k in pairs(o) do
    if not OPTIONS[k] then raise("train.fit: unknown option '" .. tostring(k) .. "'") end
  end
  if o.model == nil then raise("train.fit: model is missing") end
  if type(o.step) ~= "function" then raise("train.fit: step = function(batch, ctx) return loss, stats end is missing") end
  if o.loader == nil then raise("train.fit: loader is missing") end
  local backward = o.backward ~= false
  if backward and (o.optimizer == nil or type(o.optimizer.step) ~= "function") then
    raise("train.fit: optimizer (with :step()) is missing; with backward = false, step updates the model itself")
  end
  local epochs = o.epochs or 1
  if type(epochs) ~= "number" or epochs < 0 or epochs ~= math.floor(epochs) then
    raise("train.fit: epochs must be a whole number, got " .. tostring(o.epochs))
  end
  local r = setmetatable({o = o, model = o.model, optimizer = o.optimizer, loader = o.loader, epochs = epochs,
                          backward = backward, dir = o.dir, keep = o.keep or 2, seed = o.seed,
                          epoch0 = 1, start = 0, gstep = 0, time0 = 0, history = {}}, Run)
  if r.dir then
    local ok, err = sys.mkdir_p(r.dir)
    if not ok then raise("train.fit: " .. err) end
  end
  r.ckpt_every = o.checkpoint_every or (r.dir and 1 or nil)
  r.ckpt_steps = o.checkpoint_steps
  if (r.ckpt_steps or o.checkpoint_every) and not r.dir then raise("train.fit: checkpoints need dir = ...") end
  r.log_path = o.log
  if r.log_path == nil and r.dir then r.log_path = r.dir .. "/log.csv" end
  r.total = o.steps_per_epoch
  if not r.total and type(r.loader) == "table" and r.loader.num_batches then r.total = r.loader:num_batches() end
  if not r.total and type(r.loader) == "table" and #r.loader > 0 and not r.loader.iter then r.total = #r.loader end
  r.bar = Bar.new(o.progress, nil, o.progress_interval)
  r.proxy = make_proxy(r.model, o.extra)
  return r
end

-- An iterator over the batches of epoch e, the first `start` skipped.
function Run:batches(e, start)
  local L = self.loader
  if type(L) == "table" and L.iter and L.num_batches then
    return L:iter{epoch = e, start = start}
  end
  local it
  if type(L) == "function" then it = L(e)
  elseif type(L) == "table" and L.iter then it = L:iter()
  elseif type(L) == "table" then
    local i = 0
    it = function() i = i + 1 return L[i] end
  else raise("train.fit: loader must be a tide.data loader, a table with :iter(), a function or a list of batches") end
  for _ = 1, start do if it() == nil then break end end
  return it
end

function Run:reseed()
  if self.seed then C.td_manual_seed(derived_seed(self.seed, self.gstep)) end
end

-- A fresh start in a directory that holds checkpoints of another run would
-- mix the two (and the pruning would delete the new ones): refuse, unless
-- overwrite = true, which deletes them.
function Run:fresh_start()
  if not self.dir then return end
  local old = train.checkpoints(self.dir)
  if #old == 0 then return end
  if not self.o.overwrite then
    raise(("train.fit: %s already holds checkpoints (the newest %s): pass resume = true to continue that run, " ..
           "overwrite = true to start over there, or another dir"):format(self.dir, old[#old]))
  end
  for _, p in ipairs(old) do os.remove(p) end
end

function Run:resume()
  local res = self.o.resume
  if not res then return self:fresh_start() end
  local path = res
  if res == true then
    if not self.dir then raise("train.fit: resume = true needs dir = ...") end
    path = train.latest(self.dir)
    if not path then return end -- nothing yet: a fresh start
  elseif type(res) ~= "string" then
    raise("train.fit: resume must be true or a checkpoint path")
  end
  local ok, info = pcall(train.load, path, self.model, {optimizer = self.optimizer, extra = self.o.extra,
                                                      scheduler = self.o.scheduler})
  if not ok then
    local msg = bare(info):gsub("^train: ", "")
    local prev
    if self.dir then
      local all = train.checkpoints(self.dir)
      for i = #all, 1, -1 do
        if all[i] ~= path and all[i] < path then prev = all[i] break end
      end
    end
    raise("train.fit: resume failed: " .. msg ..
          (prev and ("; the previous checkpoint " .. prev .. " is untouched: resume from it with resume = \"" .. prev ..
                     "\" (or delete " .. path .. ")") or ""))
  end
  if info.step and info.step > 0 and self.total and info.steps_per_epoch and info.steps_per_epoch ~= self.total then
    raise(("train.fit: %s was written mid-epoch with %d steps per epoch, the loader now has %d: " ..
           "resume with the same loader settings"):format(path, info.steps_per_epoch, self.total))
  end
  self.epoch0 = (info.epoch or 0) + 1
  self.start = info.step or 0
  self.gstep = info.global_step
  self.time0 = info.time or 0
  self.last_ckpt = path
  self.resumed = path
  if self.seed then self:reseed()
  elseif tonumber(info.rng_seed) then C.td_manual_seed(tonumber(info.rng_seed)) end
end

function Run:elapsed() return self.time0 + (sys.now() - self.t_start) end

-- epoch_done: epochs completed; step: steps done in the epoch after it.
function Run:checkpoint(epoch_done, step)
  local path = ("%s/ckpt-%09d.safetensors"):format(self.dir, self.gstep)
  local meta = {}
  for k, v in pairs(self.o.metadata or {}) do meta[k] = tostring(v) end
  meta["train.epoch"] = tostring(epoch_done)
  meta["train.step"] = tostring(step)
  meta["train.global_step"] = tostring(self.gstep)
  meta["train.steps_per_epoch"] = self.total and tostring(self.total) or ""
  meta["train.seed"] = self.seed and tostring(self.seed) or ""
  meta["train.rng_seed"] = tostring(tonumber(C.td_get_seed()))
  meta["train.time"] = ("%.3f"):format(self:elapsed())
  for _, e in ipairs(self.proxy.list) do meta["train.sum." .. e[1]] = checksum(e[2]) end
  if is_tide_optimizer(self.optimizer) then
    -- the names tide.serialize gives the optimizer's tensors (its documented format)
    for gi, g in ipairs(self.optimizer:state_dict().groups) do
      for ti, ts in ipairs(g.targets) do
        for k, v in pairs(ts) do
          if B.is_tensor(v) then meta[("train.sum.optim.%d.%d.%s"):format(gi, ti, k)] = checksum(v) end
        end
      end
    end
  end
  local opt = self.optimizer
  local list_extra = {}
  local gt, gm = generic_opt_state(opt)
  if gt then
    for _, e in ipairs(gt) do list_extra[#list_extra + 1] = e end
    for k, v in pairs(gm) do meta[k] = v end
  end
  local sched = self.o.scheduler
  if sched and sched.state_dict then
    for k, v in pairs(sched:state_dict()) do
      if type(v) == "number" or type(v) == "string" then meta["train.scheduler." .. k] = tostring(v) end
    end
  end
  -- the proxy as a model for tide.serialize, with the optimizer's tensors appended
  local list = {}
  for _, e in ipairs(self.proxy.list) do list[#list + 1] = e end
  for _, e in ipairs(list_extra) do
    list[#list + 1] = e
    meta["train.sum." .. e[1]] = checksum(e[2])
  end
  local as_model = {named_parameters = function()
    local i = 0
    return function()
      i = i + 1
      if list[i] then return list[i][1], list[i][2] end
    end
  end}
  if self.csv then self.csv:flush() end
  if self.ecsv then self.ecsv:flush() end
  S.save_checkpoint(path, as_model, {optimizer = is_tide_optimizer(opt) and opt or nil, metadata = meta})
  self.last_ckpt = path
  local all = train.checkpoints(self.dir)
  for i = 1, #all - self.keep do
    if all[i] ~= path then os.remove(all[i]) end
  end
  self:reseed()
  return path
end

function Run:nan_stop(what, value, e, k)
  local where = ("epoch %d, step %d%s (global step %d)"):format(e, k, self.total and ("/" .. self.total) or "", self.gstep)
  raise(("train.fit: the %s is %s at %s; stopped before the update. %s"):format(what, tostring(value), where,
    self.last_ckpt and ("The last good checkpoint is " .. self.last_ckpt .. ".")
                    or "No checkpoint was written (give dir = ... to keep them)."))
end

function Run:zero_grad()
  local opt, model = self.optimizer, self.model
  if opt and opt.zero_grad then opt:zero_grad()
  elseif model.zero_grad then model:zero_grad()
  else
    for _, e in ipairs(self.proxy.list) do
      if W.get_grad(e[2]) ~= nil then W.zero_grad(e[2]) end
    end
  end
end

-- The gradient norm (clipped to clip_grad when given), or nil.
function Run:grad_norm()
  local opt, clip = self.optimizer, self.o.clip_grad
  local grads
  if opt and opt.grads then grads = opt:grads()
  else
    grads = {}
    for _, e in ipairs(self.proxy.list) do
      local g = W.get_grad(e[2])
      if g ~= nil then grads[#grads + 1] = g end
    end
  end
  if #grads == 0 then return nil end
  local norm = W.grad_norm(grads)
  if clip and norm == norm then
    local coef = clip / (norm + 1e-6)
    if coef < 1 then for _, g in ipairs(grads) do W.scale_(g, coef) end end
  end
  return norm
end

function Run:columns(stats_keys)
  local cols = {"epoch", "step", "global_step", "loss"}
  for _, k in ipairs(stats_keys) do cols[#cols + 1] = k end
  if self.backward then cols[#cols + 1] = "grad_norm" end
  if self.optimizer and self.optimizer.get_lr then cols[#cols + 1] = "lr" end
  cols[#cols + 1] = "time"
  return cols
end

function Run:run_epoch(e, start, ctx)
  local o, model = self.o, self.model
  if type(model) == "table" and type(model.train) == "function" then model:train(true) end
  if start == 0 then self:reseed() end
  local s = {epoch = e, epochs = self.epochs, k = start, k0 = start, total = self.total, t0 = sys.now(),
             loss_sum = 0, n = 0, sums = {}, means = {}, keys = nil, loss_mean = 0}
  ctx.epoch = e
  for batch in self:batches(e, start) do
    s.k = s.k + 1
    self.gstep = self.gstep + 1
    ctx.step, ctx.global_step = s.k, self.gstep
    if self.backward then self:zero_grad() end
    local loss, stats = o.step(batch, ctx)
    if loss == nil then raise("train.fit: step returned no loss") end
    local lv = num_of(loss, "the loss")
    if not finite(lv) then self:nan_stop("loss", lv, e, s.k) end
    local gn
    if self.backward then
      if not B.is_tensor(loss) then raise("train.fit: step must return the loss as a tensor (or set backward = false)") end
      W.backward(loss, nil)
      gn = self:grad_norm()
      if gn ~= nil and not finite(gn) then self:nan_stop("gradient norm", gn, e, s.k) end
      self.optimizer:step()
    end
    -- statistics
    local row = {epoch = e, step = s.k, global_step = self.gstep, loss = lv, grad_norm = gn}
    if not s.keys then s.keys = sorted_keys(stats) end
    for k, v in pairs(stats or {}) do
      local x = num_of(v, "stat '" .. tostring(k) .. "'")
      row[k] = x
      s.sums[k] = (s.sums[k] or 0) + x
    end
    s.n = s.n + 1
    s.loss_sum = s.loss_sum + lv
    s.loss_mean = s.loss_sum / s.n
    for k, v in pairs(s.sums) do s.means[k] = v / s.n end
    if self.csv then
      if self.optimizer and self.optimizer.get_lr then row.lr = self.optimizer:get_lr() end
      row.time = self:elapsed()
      self.csv:write(row, self:columns(s.keys))
    end
    self.bar:update(s)
    if o.on_step_end then o.on_step_end(ctx, lv, stats) end
    if self.ckpt_steps and self.gstep % self.ckpt_steps == 0 and
       not (s.k == self.total and self:epoch_checkpoint_due(e)) then
      self:checkpoint(e - 1, s.k)
    end
    if ctx.stopped then break end
  end
  return s
end

function Run:epoch_checkpoint_due(e)
  return self.dir ~= nil and self.ckpt_every ~= nil and (e % self.ckpt_every == 0 or e == self.epochs)
end

function Run:end_epoch(e, s, ctx)
  local o, model = self.o, self.model
  if o.scheduler and not ctx.stopped then o.scheduler:step() end
  local rec = {epoch = e, global_step = self.gstep, loss = s.n > 0 and s.loss_mean or nil, steps = s.n,
               epoch_time = sys.now() - s.t0}
  for k, v in pairs(s.means) do rec[k] = v end
  local extra_keys = {}
  self.bar:clear()
  if o.on_epoch_end then
    if type(model) == "table" and type(model.eval) == "function" then model:eval() end
    local function hook() return o.on_epoch_end(e, ctx) end
    local res = o.eval_grad and hook() or require("tide").no_grad(hook)
    if type(model) == "table" and type(model.train) == "function" then model:train(true) end
    if type(res) == "table" then
      for _, k in ipairs(sorted_keys(res)) do
        rec[k] = num_of(res[k], "on_epoch_end's '" .. tostring(k) .. "'")
        extra_keys[#extra_keys + 1] = k
      end
    end
  end
  rec.time = self:elapsed()
  self.history[#self.history + 1] = rec
  if self.ecsv then
    local cols = {"epoch", "global_step", "loss"}
    for _, k in ipairs(s.keys or {}) do cols[#cols + 1] = k end
    for _, k in ipairs(extra_keys) do cols[#cols + 1] = k end
    cols[#cols + 1] = "epoch_time"
    cols[#cols + 1] = "time"
    self.ecsv:write(rec, cols)
  end
  local rate = s.n / math.max(rec.epoch_time, 1e-9)
  local st = stats_text(s.means, s.keys or {}, 6)
  local ev = stats_text(rec, extra_keys, 6)
  self.bar:line(("epoch %d/%d %d steps loss %s%s%s | %.1f it/s %s"):format(e, self.epochs, s.k,
    s.n > 0 and ("%.4g"):format(s.loss_mean) or "-", st ~= "" and (" " .. st) or "", ev ~= "" and (" | " .. ev) or "",
    rate, fmt_time(rec.epoch_time)))
  if self:epoch_checkpoint_due(e) or (self.dir and ctx.stopped) then self:checkpoint(e, 0) end
end

function Run:loop()
  self.t_start = sys.now()
  local ctx = {model = self.model, optimizer = self.optimizer, loader = self.loader, epochs = self.epochs,
               steps_per_epoch = self.total, dir = self.dir, run = self}
  ctx.stop = function(reason) ctx.stopped = reason or true end
  self.ctx = ctx
  if self.log_path then
    local keep_steps, keep_epochs
    if self.resumed then
      local g, done = self.gstep, self.epoch0 - 1
      keep_steps = function(c, col) return (tonumber(c[col.global_step or 0]) or math.huge) <= g end
      keep_epochs = function(c, col) return (tonumber(c[col.epoch or 0]) or math.huge) <= done end
    end
    self.csv = Csv.open(self.log_path, keep_steps)
    self.ecsv = Csv.open(epochs_path(self.log_path), keep_epochs)
  end
  for e = self.epoch0, self.epochs do
    local start = e == self.epoch0 and self.start or 0
    local s = self:run_epoch(e, start, ctx)
    self:end_epoch(e, s, ctx)
    if ctx.stopped then break end
  end
end

function Run:close()
  self.bar:finish()
  if self.csv then self.csv:close() end
  if self.ecsv then self.ecsv:close() end
end

-- fit{...}: see the top of this file. Returns {epochs = {per-epoch means and
-- hook results}, epoch =, global_step =, checkpoint =, stopped =, time =}.
function train.fit(o)
  local r = new_run(o)
  r:resume()
  local ok, err = pcall(r.loop, r)
  r:close()
  if not ok then error(err, 0) end
  local last = r.history[#r.history]
  return {epochs = r.history, epoch = last and last.epoch or (r.epoch0 - 1), global_step = r.gstep,
          checkpoint = r.last_ckpt, stopped = r.ctx.stopped, time = r:elapsed(), resumed_from = r.resumed}
end

train.Csv = Csv
train.derived_seed = derived_seed
train.checksum = checksum
return train
