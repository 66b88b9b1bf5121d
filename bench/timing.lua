-- bench/timing.lua - what the Lua sides of the benchmarks share (loaded
-- with dofile): a monotonic clock, the median of timed runs as
-- bench/bench.h takes it, and the process's peak memory.
local ffi = require("ffi")
pcall(ffi.cdef, "int clock_gettime(int clk, struct timespec_ *ts); struct timespec_ { int64_t sec, nsec; };")
local ts = ffi.new("struct timespec_")

local T = {}

function T.now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.sec) * 1e3 + tonumber(ts.nsec) * 1e-6
end

-- The median of a list of numbers (sorts it).
function T.median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

-- The median time of fn() in ms: ~0.2 s of warm-up (at least 3 runs), then
-- 11 to 301 timed runs (odd) fitting in budget_ms (1500).
function T.median_ms(fn, budget_ms)
  budget_ms = budget_ms or 1500
  local t0, warm, est = T.now_ms(), 0, 0
  while warm < 3 or T.now_ms() - t0 < 200 do
    local s = T.now_ms()
    fn()
    est = T.now_ms() - s
    warm = warm + 1
  end
  local reps = est > 0 and math.floor(budget_ms / est) or 301
  reps = math.min(math.max(reps, 11), 301)
  if reps % 2 == 0 then reps = reps + 1 end
  local t = {}
  for i = 1, reps do
    local s = T.now_ms()
    fn()
    t[i] = T.now_ms() - s
  end
  return T.median(t)
end

-- Peak resident memory of this process (VmHWM) in MB.
function T.peak_mb()
  local f = io.open("/proc/self/status", "r")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return (tonumber(s:match("VmHWM:%s*(%d+)")) or 0) / 1024
end

return T
