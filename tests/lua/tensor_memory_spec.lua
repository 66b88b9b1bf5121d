-- Memory stays flat over a training loop without collectgarbage(): the
-- binding runs the Lua GC by the bytes C holds.
local tide = require("tide")

local function rss_bytes()
  local f = io.open("/proc/self/statm", "r")
  if not f then return nil end
  local _, resident = f:read("*n", "*n")
  f:close()
  return resident * 4096
end

-- A 2-layer MLP from raw tensor ops, trained with manual SGD.
local function make_mlp()
  tide.manual_seed(7)
  local m = {
    x = tide.randn(32, 16), y = tide.randn(32, 4),
    w1 = (tide.randn(16, 64) * 0.25):detach():requires_grad(true),
    b1 = tide.zeros(64):requires_grad(true),
    w2 = (tide.randn(64, 4) * 0.125):detach():requires_grad(true),
    b2 = tide.zeros(4):requires_grad(true),
  }
  local params = {m.w1, m.b1, m.w2, m.b2}
  function m.step(lr)
    local h = (m.x:matmul(m.w1) + m.b1):relu()
    local loss = ((h:matmul(m.w2) + m.b2 - m.y) ^ 2):mean()
    loss:backward()
    tide.no_grad(function()
      for _, p in ipairs(params) do
        p:copy_(p - p:grad() * lr)
        p:zero_grad()
      end
    end)
    return loss:item()
  end
  return m
end

describe("memory", function()
  it("stays flat over 2000 training steps (td_mem_in_use and RSS within 10%)", function()
    collectgarbage()
    local runs0 = tide.memory().gc_runs
    local m = make_mlp()
    local first, last
    local mem, rss = {0, 0, 0}, {0, 0, 0}    -- peaks of: warm-up, window 1, window 2
    for step = 1, 2000 do
      local l = m.step(0.05)
      first = first or l
      last = l
      local w = step <= 500 and 1 or (step <= 1250 and 2 or 3)
      mem[w] = math.max(mem[w], tide.memory().in_use)
      if step % 50 == 0 then rss[w] = math.max(rss[w], rss_bytes() or 0) end
    end
    assert.is_true(last < first, ("loss went from %g to %g"):format(first, last))
    -- the driver collected, so C memory never ran away
    -- C memory never ran away
    assert.is_true(mem[3] < 64 * 2 ^ 20, "peak " .. mem[3])
    assert.is_true(mem[3] <= mem[2] * 1.10, ("in_use peaks %d then %d"):format(mem[2], mem[3]))
    if rss[2] > 0 then
      assert.is_true(rss[3] <= rss[2] * 1.10, ("RSS peaks %d then %d"):format(rss[2], rss[3]))
    end
  end)

  it("collects for big tensors that leave little garbage on the Lua heap", function()
    collectgarbage()
    local runs0 = tide.memory().gc_runs
    tide.C.td_mem_reset_peak()
    local base = tide.memory().in_use
    for _ = 1, 200 do
      local t = tide.zeros(512, 512)            -- 1 MB each, 200 MB in all
    end
    local peak = tide.memory().peak
    assert.is_true(tide.memory().gc_runs > runs0)
    assert.is_true(peak - base < 48 * 2 ^ 20, "peak grew by " .. (peak - base))
  end)

  it("frees every tensor once Lua lets go of it", function()
    collectgarbage()
    collectgarbage()
    local live = tide.memory().live_tensors
    do
      local x = tide.ones(100, 100):requires_grad(true)
      local y = ((x * 2):exp() + 1):sum()
      y:backward()
    end
    collectgarbage()
    collectgarbage()
    assert.equal(live, tide.memory().live_tensors)
  end)
end)
