-- examples/vqvae.lua - a VQ-VAE on Fashion-MNIST: a 7x7 grid of codes from
-- a codebook of K vectors; test reconstruction error, codebook usage
-- (perplexity, dead codes) and reconstructions.
--
--   bin/tide examples/vqvae.lua                      (5 epochs, learned codebook)
--   bin/tide examples/vqvae.lua --ema                (EMA codebook updates)
--   bin/tide examples/vqvae.lua --quick              (a smoke run: 5,000 images, 1 epoch)
--
-- flags: --epochs 5, --seed 1, --codes 128, --dim 16, --width 32, --beta 0.25,
-- --ema, --decay 0.99, --init data|uniform (k-means++ seeding from the
-- first batch, or the paper's U(-1/K, 1/K)), --restart (move codes unused
-- for 100 steps onto batch vectors), --likelihood gaussian|bernoulli (MSE or BCE),
-- --batch 128, --lr 1e-3, --dir out/vqvae (checkpoints, logs; resumes),
-- --img docs/img ("" for none), --classifier out/classifiers/fashion_mnist.safetensors
-- (when the file exists: the Fréchet distance of reconstructions to the
-- test images on its features), --threads N, --quick.
-- Prints progress and one line at the end:
--   RESULT model=vqvae dataset=fashion_mnist codebook=learned|ema test_mse=... perplexity=... dead=... ...
local tide = require("tide")
local metrics = require("tide.metrics")
local VQVAE = require("tide.models.vqvae")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {epochs = 5, seed = 1, codes = 128, dim = 16, width = 32, beta = 0.25, ema = false,
                            decay = 0.99, init = "data", restart = false, likelihood = "gaussian", batch = 128, lr = 1e-3, dir = "out/vqvae",
                            img = "docs/img", classifier = "out/classifiers/fashion_mnist.safetensors",
                            threads = 0, quick = false})
if o.threads > 0 then tide.set_num_threads(o.threads) end
local train = tide.data.fashion_mnist{split = "train"}
local test = tide.data.fashion_mnist{split = "test"}
local mode = (o.ema and "ema" or "learned") .. (o.init == "data" and "" or "-" .. o.init) ..
             (o.restart and "-restart" or "")
if o.quick then
  train = train:split({5000}, o.seed)
  o.epochs, o.dir = 1, o.dir .. "-quick"
end
o.dir = o.dir .. "-" .. mode

tide.manual_seed(o.seed)
local model = VQVAE{channels = 1, dim = o.dim, codes = o.codes, width = o.width, beta = o.beta, ema = o.ema,
                    decay = o.decay, likelihood = o.likelihood, init = o.init, restart = o.restart}
local opt = tide.optim.Adam(model, {lr = o.lr})
print(("VQ-VAE (%d codes of %d, %s codebook) on Fashion-MNIST: %d train images, %d parameters"):format(o.codes,
      o.dim, mode, train:size(), model:num_parameters()))
io.stdout:flush()
local wall0 = os.time()
local Xtest = test:tensor(1)

-- test reconstruction MSE and the codes of every test image
local function evaluate(n)
  return tide.no_grad(function()
    local se, ids = 0, {}
    for start = 1, n, 500 do
      local b = math.min(500, n - start + 1)
      local x = Xtest:narrow(1, start, b)
      local codes = model:codes(x)
      se = se + (model:decode_codes(codes) - x):square():sum():item()
      ids[#ids + 1] = codes
    end
    return se / (n * 784), tide.cat(ids, 1)
  end)
end

local loader = tide.data.loader(train, {batch_size = o.batch, shuffle = true, seed = o.seed, drop_last = true})
local hist = tide.train.fit{
  model = model, optimizer = opt, loader = loader, epochs = o.epochs, dir = o.dir, resume = true, seed = o.seed,
  extra = model:buffers(),
  step = function(batch) return model:loss(batch.x[1]) end,
  on_epoch_end = function()
    local mse, ids = evaluate(2000)
    local u = VQVAE.usage(ids, o.codes)
    return {test_mse = mse, perplexity = u.perplexity, dead = u.dead}
  end,
}

model:eval()
local mse, ids = evaluate(Xtest:size(1))
local u = VQVAE.usage(ids, o.codes)
print(("test MSE %.5f, codebook perplexity %.1f of %d codes, %d dead (%ds)"):format(mse, u.perplexity, o.codes,
      u.dead, os.time() - wall0))

local fid = -1
local f = io.open(o.classifier, "r")
if f then
  f:close()
  local clf = require("tide.classifier").load(o.classifier)
  local x = Xtest:narrow(1, 1, 5000)
  fid = metrics.fid(clf, x, model:reconstruct(x))
  print(("Fréchet distance of reconstructions (5,000 test images, %s features): %.3f"):format(o.classifier, fid))
end

if o.img ~= "" then
  os.execute(("mkdir -p '%s'"):format(o.img))
  local sfx = (o.quick and "_quick" or "") .. "_" .. mode:gsub("-", "_")
  local x = Xtest:narrow(1, 1, 16)
  tide.viz.save_grid(o.img .. "/vae_vqvae_recon" .. sfx .. ".png", {x, model:reconstruct(x):clamp(0, 1)}, {scale = 2})
end

print(("RESULT model=vqvae dataset=fashion_mnist codebook=%s codes=%d dim=%d test_mse=%.5f perplexity=%.2f " ..
       "dead=%d recon_fid=%.3f epochs=%d seed=%d wall_s=%d"):format(mode, o.codes, o.dim, mse, u.perplexity, u.dead,
       fid, hist.epoch, o.seed, os.time() - wall0))
