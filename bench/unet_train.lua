-- The tide side of the unet_train / unet_sample benchmarks (see unet_ref.py
-- for the same UNet in PyTorch): tide.models.unet, base 32, mults 1,2
-- (583,713 parameters), batch 64 at 28x28, 2 threads ($BENCH_THREADS overrides).
--   TIDE_LIB=build/libtide.so luajit bench/unet_train.lua train    one DDPM training step (Adam)
--   TIDE_LIB=build/libtide.so luajit bench/unet_train.lua sample   one DDIM step (eta 0)
-- Prints tide_ms=<median> tide_peak_mb=<VmHWM> tide_gflops=<model FLOP rate of the step>.
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. here .. "/../bindings/?.lua;" .. package.path
local tide = require("tide")
local UNet = require("tide.models.unet")
local DDPM = require("tide.models.ddpm")

tide.set_num_threads(tonumber(os.getenv("BENCH_THREADS") or "2"))
local B, mode = 64, arg and arg[1] or "train"

local T = dofile(here .. "/timing.lua")
local now_ms, median_ms, median, peak_mb = T.now_ms, T.median_ms, T.median, T.peak_mb

-- multiply-adds of the convolutions and matmuls of one forward pass at batch 1
-- (28x28, base 32, mults 1,2): 2 FLOPs each; a training step is ~3 forwards
local function forward_flops()
  local function conv(cin, cout, k, hw) return cin * cout * k * k * hw end
  local f = conv(1, 32, 3, 784)
    + conv(32, 32, 3, 784) * 2 + conv(32, 32, 3, 196)                          -- 28: Res, down
    + conv(32, 64, 3, 196) + conv(64, 64, 3, 196) + conv(32, 64, 1, 196) + conv(64, 64, 3, 49)
    + 4 * conv(64, 64, 3, 49)                                                 -- mid Res x2
    + conv(64, 192, 1, 49) + conv(64, 64, 1, 49) + 2 * 49 * 49 * 64            -- attention
    + conv(64, 64, 3, 196) + conv(128, 64, 3, 196) + conv(64, 64, 3, 196) + conv(128, 64, 1, 196)
    + conv(64, 64, 3, 784) + conv(128, 32, 3, 784) + conv(32, 32, 3, 784) + conv(96, 32, 1, 784)
    + conv(32, 1, 3, 784)
  return 2 * f
end

tide.manual_seed(0)
local model = DDPM{net = UNet{base = 32, mults = {1, 2}}}
local x0 = tide.rand(B, 1, 28, 28) * 2 - 1
local step, work
if mode == "train" then
  local opt = tide.optim.Adam(model, {lr = 1e-4})
  step = function()
    opt:zero_grad()
    local loss = model:loss(x0)
    loss:backward()
    opt:step()
  end
  work = 3 * forward_flops() * B
elseif mode == "sample" then
  local x = tide.randn(B, 1, 28, 28)
  local t, s = 500, 480
  local ab, abs = model.abar[t + 1], model.abar[s + 1]
  local tt = tide.full({B}, t)
  step = function()
    return tide.no_grad(function()
      local eps = model.net(x, tt)
      local x0h = model:predict_x0(x, t, eps)
      local e = (x - x0h * math.sqrt(ab)) * (1 / math.sqrt(1 - ab))
      return x0h * math.sqrt(abs) + e * math.sqrt(1 - abs)
    end)
  end
  work = forward_flops() * B
else
  error("unet_train.lua train|sample")
end
local ms = median_ms(step)
print(("tide_ms=%.4f tide_peak_mb=%.1f tide_gflops=%.1f"):format(ms, peak_mb(), work / ms * 1e-6))
