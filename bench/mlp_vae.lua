-- The tide side of the mlp_vae benchmark (see mlp_vae.py for the same model
-- in PyTorch): one training step (forward, backward, Adam) of an MLP VAE,
-- batch 128, 2 threads ($BENCH_THREADS overrides). Prints tide_ms=<median> tide_peak_mb=<VmHWM>.
--   TIDE_LIB=build/libtide.so luajit bench/mlp_vae.lua [steps]
-- (with steps: print the loss after that many steps, no timing)
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. here .. "/../bindings/?.lua;" .. package.path
local tide = require("tide")
local nn, optim = tide.nn, tide.optim
local ffi = require("ffi")

tide.set_num_threads(tonumber(os.getenv("BENCH_THREADS") or "2"))
local B, D, H, Z = 128, 784, 512, 20

local VAE = nn.Module:extend("VAE")

function VAE:init()
  self.enc = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU())
  self.mu = nn.Linear(H, Z)
  self.logvar = nn.Linear(H, Z)
  self.dec = nn.Sequential(nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, D))
end

function VAE:forward(x)
  local h = self.enc(x)
  local mu, logvar = self.mu(h), self.logvar(h)
  local z = mu + (logvar * 0.5):exp() * tide.randn(B, Z)
  local rec = self.dec(z):bce_with_logits(x):sum()
  local kl = ((logvar + 1) - mu:square() - logvar:exp()):sum() * -0.5
  return (rec + kl) * (1 / B)
end

ffi.cdef("int clock_gettime(int clk, struct timespec_ *ts); struct timespec_ { int64_t sec, nsec; };")
local ts = ffi.new("struct timespec_")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.sec) * 1e3 + tonumber(ts.nsec) * 1e-6
end

-- The median time of fn() in ms, as bench/bench.h: ~0.2 s of warm-up (at
-- least 3 runs), then 11 to 301 timed runs (odd) fitting in budget_ms.
local function median_ms(fn, budget_ms)
  budget_ms = budget_ms or 1500
  local t0, warm, est = now_ms(), 0, 0
  while warm < 3 or now_ms() - t0 < 200 do
    local s = now_ms()
    fn()
    est = now_ms() - s
    warm = warm + 1
  end
  local reps = est > 0 and math.floor(budget_ms / est) or 301
  reps = math.min(math.max(reps, 11), 301)
  if reps % 2 == 0 then reps = reps + 1 end
  local t = {}
  for i = 1, reps do
    local s = now_ms()
    fn()
    t[i] = now_ms() - s
  end
  table.sort(t)
  return t[(reps + 1) / 2]
end

local function peak_mb()
  local f = io.open("/proc/self/status", "r")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return (tonumber(s:match("VmHWM:%s*(%d+)")) or 0) / 1024
end

tide.manual_seed(0)
local model = VAE()
local opt = optim.Adam(model, {lr = 1e-3})
local x = tide.rand(B, D)

local function step()
  opt:zero_grad()
  local loss = model(x)
  loss:backward()
  opt:step()
  return loss
end

if arg and arg[1] then
  local loss
  for _ = 1, tonumber(arg[1]) do loss = step() end
  print(("loss=%.6f"):format(loss:item()))
  return
end
local ms = median_ms(step)
print(("tide_ms=%.4f tide_peak_mb=%.1f"):format(ms, peak_mb()))
