-- End to end: a small MLP (tide.nn + tide.optim) learns two interleaved
-- moons, generated here with a seed, to >= 99% training accuracy.
local tide = require("tide")
local nn, optim = tide.nn, tide.optim

-- n points per moon, Gaussian noise of the given std; labels 0 and 1.
local function make_moons(n, noise)
  local t = (tide.rand(n) * math.pi):to_table()
  local pts, labels = {}, {}
  for i = 1, n do
    pts[#pts + 1] = {math.cos(t[i]), math.sin(t[i])}
    labels[#labels + 1] = 0
    pts[#pts + 1] = {1 - math.cos(t[i]), 0.5 - math.sin(t[i])}
    labels[#labels + 1] = 1
  end
  local x = tide.from_table(pts) + tide.randn(2 * n, 2) * noise
  return x, tide.from_table(labels)
end

describe("two moons", function()
  it("an MLP reaches >= 99% training accuracy in a few seconds", function()
    tide.manual_seed(42)
    -- tiny matrices: one thread (no OpenMP barriers on a busy machine)
    local threads = tide.get_num_threads()
    tide.set_num_threads(1)
    finally(function() tide.set_num_threads(threads) end)
    local x, y = make_moons(300, 0.1)
    local model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    local opt = optim.Adam(model, {lr = 0.01})
    local first, loss
    for _ = 1, 300 do
      opt:zero_grad()
      loss = model(x):cross_entropy(y):mean()
      first = first or loss:item()
      loss:backward()
      opt:step()
    end
    local acc = tide.no_grad(function()
      model:eval()
      return model(x):argmax(2):eq(y):mean():item()
    end)
    -- more steps leave no tensor behind
    loss = nil
    collectgarbage()
    collectgarbage()
    local live = tide.memory().live_tensors
    for _ = 1, 20 do
      opt:zero_grad()
      model(x):cross_entropy(y):mean():backward()
      opt:step()
    end
    collectgarbage()
    collectgarbage()
    assert.equal(live, tide.memory().live_tensors)
    loss = model(x):cross_entropy(y):mean()
    assert.is_true(loss:item() < first / 10, ("loss %g -> %g"):format(first, loss:item()))
    assert.is_true(acc >= 0.99, "accuracy " .. acc)
  end)
end)
