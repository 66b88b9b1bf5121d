-- The tide side of the cmvae benchmarks (see cmvae_torch.py for the same
-- model in PyTorch): one CMVAE training step (forward, backward, Adam with
-- amsgrad) on PolyMNIST-shaped inputs, 5 modalities, batch 128, 40 clusters,
-- z and w of 32 dims, ELBO (one sample), 2 threads.
--   TIDE_LIB=build/libtide.so luajit bench/cmvae.lua light|light_conv|paper [steps]
-- Prints tide_ms=<median> tide_fwd_ms= tide_bwd_ms= tide_opt_ms= (medians of
-- the three phases) tide_params= tide_peak_mb=. Timing as bench/bench.h
-- (~0.2 s of warm-up, at least 3 runs, then 11 to 301 runs in ~1.5 s), except
-- for steps over 2 s: one warm-up run, then 3 timed runs.
-- (with steps: print the loss after that many steps, no timing)
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. here .. "/../bindings/?.lua;" .. package.path
local tide = require("tide")
local CMVAE = require("tide.models.cmvae")

tide.set_num_threads(tonumber(os.getenv("BENCH_THREADS") or "2"))
local arch = arg and arg[1] or "light"
local M, B = 5, 128

local T = dofile(here .. "/timing.lua")
local now_ms, median_ms, median, peak_mb = T.now_ms, T.median_ms, T.median, T.peak_mb

tide.manual_seed(0)
local model = CMVAE{modalities = M, clusters = 40, zdim = 32, wdim = 32, beta = 2.5, arch = arch}
local opt = tide.optim.Adam(model, {lr = 1e-3, amsgrad = true})
local x = tide.rand(M, B, 3, 28, 28)

local phases = {fwd = {}, bwd = {}, opt = {}}
local function step(record)
  local t0 = now_ms()
  opt:zero_grad()
  local loss = model:loss(x)
  local t1 = now_ms()
  loss:backward()
  local t2 = now_ms()
  opt:step()
  local t3 = now_ms()
  if record then
    phases.fwd[#phases.fwd + 1] = t1 - t0
    phases.bwd[#phases.bwd + 1] = t2 - t1
    phases.opt[#phases.opt + 1] = t3 - t2
  end
  return loss
end

if arg and arg[2] then
  local loss
  for _ = 1, tonumber(arg[2]) do loss = step() end
  print(("loss=%.6f"):format(loss:item()))
  return
end

local t0, warm, est = now_ms(), 0, 0
while warm < 3 or now_ms() - t0 < 200 do
  local s = now_ms()
  step()
  est = now_ms() - s
  warm = warm + 1
  if est > 2000 then break end
end
local reps
if est > 2000 then reps = 3
else
  reps = math.min(math.max(math.floor(1500 / est), 11), 301)
  if reps % 2 == 0 then reps = reps + 1 end
end
local t = {}
for i = 1, reps do
  local s = now_ms()
  step(true)
  t[i] = now_ms() - s
end
print(("tide_ms=%.3f tide_fwd_ms=%.3f tide_bwd_ms=%.3f tide_opt_ms=%.3f tide_params=%d tide_peak_mb=%.1f tide_reps=%d")
      :format(median(t), median(phases.fwd), median(phases.bwd), median(phases.opt), model:num_parameters(),
              peak_mb(), reps))
