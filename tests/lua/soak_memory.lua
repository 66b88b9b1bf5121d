-- soak_memory.lua - a long training loop without collectgarbage(): prints
-- the engine's bytes in use and the process RSS as it goes.
--   bin/tide tests/lua/soak_memory.lua [steps=20000]
-- Not a spec (too long for ctest); tensor_memory_spec.lua runs 2000 steps.
local tide = rawget(_G, "tide") or require("tide")
local steps = tonumber(arg and arg[1]) or 20000

local function rss_mb()
  local f = assert(io.open("/proc/self/statm", "r"))
  local _, resident = f:read("*n", "*n")
  f:close()
  return resident * 4096 / 2 ^ 20
end

tide.manual_seed(7)
local x, y = tide.randn(32, 16), tide.randn(32, 4)
local w1 = (tide.randn(16, 64) * 0.25):detach():requires_grad(true)
local b1 = tide.zeros(64):requires_grad(true)
local w2 = (tide.randn(64, 4) * 0.125):detach():requires_grad(true)
local b2 = tide.zeros(4):requires_grad(true)
local params = {w1, b1, w2, b2}

local t0 = os.clock()
local peak_in_use, peak_rss = 0, 0
print(("%8s %10s %12s %10s %10s %8s"):format("step", "loss", "in_use", "peak_rss", "lua_kb", "gc_runs"))
for step = 1, steps do
  local h = (x:matmul(w1) + b1):relu()
  local loss = ((h:matmul(w2) + b2 - y) ^ 2):mean()
  loss:backward()
  tide.no_grad(function()
    for _, p in ipairs(params) do
      p:copy_(p - p:grad() * 0.05)
      p:zero_grad()
    end
  end)
  local m = tide.memory()
  peak_in_use = math.max(peak_in_use, m.in_use)
  if step % 100 == 0 then peak_rss = math.max(peak_rss, rss_mb()) end
  if step % (steps / 10) == 0 or step == 1 then
    print(("%8d %10.5f %12d %9.1fM %10.0f %8d"):format(step, loss:item(), peak_in_use, peak_rss,
                                                      collectgarbage("count"), m.gc_runs))
    peak_in_use, peak_rss = 0, 0
  end
end
print(("%d steps in %.2f s (%.1f us/step)"):format(steps, os.clock() - t0, (os.clock() - t0) / steps * 1e6))
