-- examples/dcmvae.lua - D-CMVAE: a DDPM conditioned on a VAE's
-- reconstructions (tide.models.dcmvae) that sharpens them, on one PolyMNIST
-- modality (or MNIST).
--
--   bin/tide examples/dcmvae.lua --quick                 (stand-in VAE: a 4x blur; 5 minutes)
--   bin/tide examples/dcmvae.lua --cmvae runs/cmvae/cmvae.safetensors --modality 1 --src 2
--
-- The conditioning y comes from
--   --cmvae PATH  a tide.models.cmvae checkpoint (5 PolyMNIST modalities,
--                 --arch light, --clusters 40): y = CMVAE's reconstruction of
--                 modality --modality from modality --src (the same one:
--                 self-reconstruction; another: cross-modal); the grid then
--                 refines samples of --grid_clusters clusters.
--   (none)        a stand-in with the blur of a VAE output: 4x4 average pooling
--                 then nearest up-sampling; the grid refines blurred test images.
-- flags: --dataset polymnist|mnist, --modality 1, --src 0 (= modality),
-- --minutes 20 (or --steps N), --batch 32, --lr 1e-3, --warmup 100, --ema 0.995,
-- --base 16, --mults 1,2, --T 1000, --ddim 50, --n 16, --seed 1, --threads 0,
-- --arch light, --clusters 40, --grid_clusters 0,1,2,3, --img docs/img, --dir out/dcmvae, --quick.
-- Prints one line at the end:
--   RESULT model=dcmvae dataset=... cond=... steps=... train_s=... loss=... mse_vae=... mse_refined=... ddim_ms_per_image=...
-- (mse_*: the mean squared error to the true test images of the conditioning
-- and of its refinement, [0,1] scale).
local tide = require("tide")
local DC = require("tide.models.dcmvae")

local function parse(argv, defaults)
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  local i = 1
  while i <= #argv do
    local key = argv[i]:match("^%-%-([%w_]+)$")
    if not key or o[key] == nil then error("unknown flag " .. argv[i]) end
    if type(o[key]) == "boolean" then o[key] = true
    else
      i = i + 1
      o[key] = type(o[key]) == "number" and tonumber(argv[i]) or argv[i]
    end
    i = i + 1
  end
  return o
end

local o = parse(arg or {}, {dataset = "polymnist", modality = 1, src = 0, minutes = 20, steps = 0, batch = 32,
                            lr = 1e-3, warmup = 100, ema = 0.995, base = 16, mults = "1,2", T = 1000, ddim = 50,
                            n = 16, seed = 1, threads = 0, cmvae = "", arch = "light", clusters = 40,
                            grid_clusters = "0,1,2,3", img = "docs/img", dir = "out/dcmvae", quick = false})
if o.quick then -- the preset, unless given on the command line
  local given = " " .. table.concat(arg or {}, " ") .. " "
  if not given:find(" %-%-minutes ") then o.minutes = 5 end
  o.dir = o.dir .. "-quick"
end
if o.threads > 0 then tide.set_num_threads(o.threads) end
if o.src == 0 then o.src = o.modality end
local mults = {}
for v in o.mults:gmatch("%d+") do mults[#mults + 1] = tonumber(v) end

local ffi = require("ffi")
pcall(ffi.cdef, "int clock_gettime(int clk, struct timespec_ *ts); struct timespec_ { int64_t sec, nsec; };")
local ts = ffi.new("struct timespec_")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

-- data: all modalities stacked [M,N,C,H,W] for a CMVAE; the target modality [N,C,H,W]
local train, test
if o.dataset == "polymnist" then
  train, test = tide.data.polymnist{split = "train"}, tide.data.polymnist{split = "test"}
elseif o.dataset == "mnist" then
  if o.cmvae ~= "" then error("--cmvae needs --dataset polymnist") end
  train, test = tide.data.mnist{split = "train"}, tide.data.mnist{split = "test"}
else
  error("--dataset must be polymnist or mnist")
end
local function stacked(ds, idx)
  local xs = {}
  for m = 1, ds:num_modalities() do xs[m] = ds:tensor(m):index_select(1, idx) end
  return xs
end
local X = train:tensor(o.modality)
local N, C = X:size(1), X:size(2)

-- the conditioning: recon(xs) with xs the list of modalities of a batch
local recon, cmvae, cond_name
if o.cmvae ~= "" then
  local CMVAE = require("tide.models.cmvae")
  cmvae = CMVAE{modalities = train:num_modalities(), clusters = o.clusters, arch = o.arch}
  cmvae:load(o.cmvae)
  cmvae:eval()
  local r = DC.cmvae_recon(cmvae, o.modality, o.src)
  recon = function(xs) return r(tide.stack(xs, 1)):clamp(0, 1) end
  cond_name = o.src == o.modality and "cmvae_self" or ("cmvae_cross_from_m" .. (o.src - 1))
else
  recon = function(xs) return xs[o.modality]:avg_pool2d(4, 4):upsample_nearest2d(4) end
  cond_name = "blur4_standin"
end

tide.manual_seed(o.seed)
local model = DC{channels = C, recon = recon, T = o.T, unet = {base = o.base, mults = mults}}
local opt = tide.optim.Adam(model, {lr = o.lr})
print(("D-CMVAE on %s m%d (%s): %d images, %d parameters"):format(o.dataset, o.modality - 1, cond_name, N,
      model:num_parameters()))
io.stdout:flush()

local t0, step, avg = now(), 0, nil
model:ema_update(o.ema)
while true do
  if o.steps > 0 and step >= o.steps then break end
  if o.steps == 0 and now() - t0 >= o.minutes * 60 then break end
  step = step + 1
  local idx = tide.randperm(N):narrow(1, 1, o.batch)
  local xs = stacked(train, idx)
  opt:set_lr(o.lr * math.min(1, step / o.warmup))
  opt:zero_grad()
  local loss = model:loss(xs[o.modality], {batch = xs})
  loss:backward()
  opt:clip_grad_norm(1)
  opt:step()
  model:ema_update(o.ema)
  local l = loss:item()
  avg = avg and 0.98 * avg + 0.02 * l or l
  if step % 50 == 0 then
    print(("step %d  loss %.4f  %.1f s"):format(step, avg, now() - t0))
    io.stdout:flush()
  end
end
local train_s = now() - t0
os.execute("mkdir -p " .. o.dir)
model:with_ema(function() model:save(o.dir .. "/dcmvae_ema.safetensors") end)

-- refine the reconstructions of n test images; compare both to the truth
local idx = tide.arange(0, o.n)
local xs = stacked(test, idx)
local y = tide.no_grad(function() return recon(xs) end)
local s0 = now()
local sharp = model:with_ema(function() return model:refine(y, {steps = o.ddim}) end)
local ddim_ms = (now() - s0) * 1000 / o.n
local truth = xs[o.modality]
local mse_vae = (y - truth):square():mean():item()
local mse_ref = (sharp - truth):square():mean():item()
if o.img ~= "" then
  os.execute("mkdir -p " .. o.img)
  local rows = {truth, y, sharp}
  if cmvae then -- cluster samples, CMVAE output above D-CMVAE output
    local ids = {}
    for v in o.grid_clusters:gmatch("%d+") do ids[#ids + 1] = tonumber(v) end
    local gen = DC.cmvae_cluster_sampler(cmvae, o.modality, ids)
    local r, g = model:with_ema(function() return model:generate(#ids * 4, gen, {steps = o.ddim}) end)
    rows[#rows + 1], rows[#rows + 2] = g:clamp(0, 1), r
  end
  local path = ("%s/ddpm_dcmvae_%s%s.png"):format(o.img, cond_name, o.quick and "_quick" or "")
  tide.viz.save_grid(path, rows, {scale = 2})
  print("wrote " .. path .. " (rows: test images, conditioning, refined" .. (cmvae and ", cluster samples, refined" or "") .. ")")
end
print(("RESULT model=dcmvae dataset=%s_m%d cond=%s params=%d steps=%d batch=%d train_s=%.0f loss=%.4f " ..
       "mse_vae=%.4f mse_refined=%.4f ddim_steps=%d ddim_ms_per_image=%.1f"):format(o.dataset, o.modality - 1,
       cond_name, model:num_parameters(), step, o.batch, train_s, avg or 0, mse_vae, mse_ref, o.ddim, ddim_ms))
