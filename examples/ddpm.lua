-- examples/ddpm.lua - a DDPM (Ho et al. 2020) with tide's UNet on MNIST or
-- PolyMNIST (one modality): trains with the simple eps-MSE loss and an EMA of
-- the weights, then samples with DDIM (and, for a few images, the full
-- ancestral chain), and writes a grid.
--
--   bin/tide examples/ddpm.lua                  (MNIST, 30 minutes of training)
--   bin/tide examples/ddpm.lua --quick          (10 minutes of training, base 16, batch 32: a rough grid)
--   bin/tide examples/ddpm.lua --dataset polymnist --modality 1
--
-- flags: --dataset mnist|polymnist|mnist_fashion, --modality 1 (PolyMNIST, MNIST x Fashion), --minutes 30
-- (training budget; --steps N instead stops after N steps), --steps 0,
-- --batch 64, --lr 1e-3, --warmup 200, --ema 0.999, --base 32, --mults 1,2,
-- --T 1000, --schedule linear|cosine, --ddim 50 (DDIM steps), --eta 0,
-- --n 64 (grid), --ancestral_n 4 (images sampled with all T steps, timed),
-- --seed 1, --threads 0, --dir out/ddpm (checkpoint), --img docs/img, --quick.
-- The checkpoint <dir>/ddpm_ema.safetensors (EMA weights) carries its config:
-- tide.load_model rebuilds it (a tide.models.dcmvae with conditional = false),
-- and examples/dcmvae.lua --ddpm PATH compares its samples to D-CMVAE's.
-- Prints progress and one line at the end:
--   RESULT model=ddpm dataset=... params=... steps=... train_s=... loss=... ddim_ms_per_image=... ddpm_ms_per_image=...
local tide = require("tide")
local DC = require("tide.models.dcmvae")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {dataset = "mnist", modality = 1, minutes = 30, steps = 0, batch = 64, lr = 1e-3,
                            warmup = 200, ema = 0.999, base = 32, mults = "1,2", T = 1000, schedule = "linear",
                            ddim = 50, eta = 0, n = 64, ancestral_n = 4, seed = 1, threads = 0,
                            dir = "out/ddpm", img = "docs/img", quick = false})
-- --quick: a quarter-size UNet (base 16: 146k parameters), batch 32, 10 minutes, a fast EMA
if o.quick then -- the preset, for the flags not given on the command line
  local given = " " .. table.concat(arg or {}, " ") .. " "
  for k, v in pairs({minutes = 10, base = 16, batch = 32, lr = 2e-3, ema = 0.99}) do
    if not given:find(" %-%-" .. k .. " ") then o[k] = v end
  end
  o.dir = o.dir .. "-quick"
end
if o.threads > 0 then tide.set_num_threads(o.threads) end
local mults = {}
for v in o.mults:gmatch("%d+") do mults[#mults + 1] = tonumber(v) end

local now = require("tide.data.sys").now

-- training images [N,C,28,28] in [0,1]
local X, name
if o.dataset == "mnist" then
  X, name = tide.data.mnist{split = "train"}:tensor(1), "mnist"
elseif o.dataset == "polymnist" or o.dataset == "mnist_fashion" then
  X, name = tide.data[o.dataset]{split = "train"}:tensor(o.modality), o.dataset .. "_m" .. (o.modality - 1)
else
  error("--dataset must be mnist, polymnist or mnist_fashion")
end
local N, C = X:size(1), X:size(2)

tide.manual_seed(o.seed)
-- the unconditional DDPM of tide.models.dcmvae: the same UNet and chain, saved with its config
local model = DC{channels = C, conditional = false, base = o.base, mults = mults, T = o.T, schedule = o.schedule}
print(("DDPM on %s: %d images %dx%dx%d, UNet base %d mults %s, %d parameters, T=%d %s"):format(name, N, C,
      X:size(3), X:size(4), o.base, o.mults, model:num_parameters(), o.T, o.schedule))
io.stdout:flush()

-- training: uniform batches, lr warm-up, EMA after every step
local step, train_s, avg = model:fit(function()
  local idx = tide.randperm(N):narrow(1, 1, o.batch)
  return model:loss(X:index_select(1, idx))   -- [0,1]: loss() scales to [-1,1]
end, o)
os.execute("mkdir -p " .. o.dir)
local ckpt = o.dir .. "/ddpm_ema.safetensors"
model:with_ema(function() model:save(ckpt, {metadata = {dataset = name}}) end)
print("wrote " .. ckpt)

-- sampling with the EMA weights
local shape = {C, X:size(3), X:size(4)}
local s0 = now()
local imgs = model:with_ema(function() return model:ddim(o.n, {shape = shape, steps = o.ddim, eta = o.eta}) end)
local ddim_ms = (now() - s0) * 1000 / o.n
local anc_ms = 0
if o.ancestral_n > 0 then
  s0 = now()
  local a = model:with_ema(function() return model:sample(o.ancestral_n, {shape = shape}) end)
  anc_ms = (now() - s0) * 1000 / o.ancestral_n
  imgs = tide.cat({imgs, a}, 1)
end
if o.img ~= "" then
  os.execute("mkdir -p " .. o.img)
  local path = ("%s/ddpm_%s%s.png"):format(o.img, name, o.quick and "_quick" or "")
  tide.viz.save_grid(path, (imgs + 1) * 0.5, {ncol = 8, scale = 2})
  print("wrote " .. path .. (o.ancestral_n > 0 and (" (last " .. o.ancestral_n .. ": ancestral, T steps)") or ""))
end
print(("RESULT model=ddpm dataset=%s params=%d steps=%d batch=%d train_s=%.0f loss=%.4f ddim_steps=%d " ..
       "ddim_ms_per_image=%.1f ddpm_ms_per_image=%.1f"):format(name, model:num_parameters(), step, o.batch,
       train_s, avg or 0, o.ddim, ddim_ms, anc_ms))
