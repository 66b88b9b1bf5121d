-- The tide side of the mlp_vae benchmark (see mlp_vae.py for the same model
-- in PyTorch): one training step (forward, backward, Adam) of an MLP VAE,
-- batch 128, 2 threads ($BENCH_THREADS overrides). Prints tide_ms=<median> tide_peak_mb=<VmHWM>.
--   TIDE_LIB=build/libtide.so luajit bench/mlp_vae.lua [steps]
-- (with steps: print the loss after that many steps, no timing)
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. here .. "/../bindings/?.lua;" .. package.path
local tide = require("tide")
local nn, optim = tide.nn, tide.optim

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

local T = dofile(here .. "/timing.lua")
local now_ms, median_ms, median, peak_mb = T.now_ms, T.median_ms, T.median, T.peak_mb

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
