-- examples/vae.lua - a VAE on Fashion-MNIST (MLP 784-512-512-20, Bernoulli
-- likelihood on the gray levels): the test ELBO and the IWAE log-likelihood
-- estimate with 1,000 importance samples, reconstructions and samples.
--
--   bin/tide examples/vae.lua                          (20 epochs, ELBO)
--   bin/tide examples/vae.lua --objective iwae --K 5   (IWAE-5; dreg for DReG)
--   bin/tide examples/vae.lua --quick                  (a smoke run: 5,000 images, 1 epoch)
--
-- flags: --epochs 20, --seed 1, --objective elbo|iwae|dreg, --K 1 (training
-- samples), --beta 1, --likelihood bernoulli|gaussian|laplace, --scale 1,
-- --kind mlp|conv, --hidden 512,512, --latent 20, --batch 128, --lr 1e-3,
-- --binarize (a fresh Bernoulli draw of every training batch),
-- --ll_n 10000 (test images for IWAE-1000), --ll_K 1000, --chunk 250,
-- --dir out/vae (checkpoints, logs; resumes), --img docs/img (PNG grids;
-- "" for none), --classifier out/classifiers/fashion_mnist.safetensors (when
-- the file exists: Fréchet distances of 5,000 samples and of 5,000
-- reconstructions to 5,000 test images, on its features), --threads N, --quick.
-- Prints progress and one line at the end:
--   RESULT model=vae dataset=fashion_mnist objective=... test_elbo=... iwae1000=... lw_var=... epochs=... wall_s=...
local tide = require("tide")
local metrics = require("tide.metrics")
local VAE = require("tide.models.vae")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {epochs = 20, seed = 1, objective = "elbo", K = 1, beta = 1, likelihood = "bernoulli",
                            scale = 1, kind = "mlp", hidden = "512,512", latent = 20, batch = 128, lr = 1e-3,
                            binarize = false, ll_n = 10000, ll_K = 1000, chunk = 250, dir = "out/vae",
                            img = "docs/img", classifier = "out/classifiers/fashion_mnist.safetensors",
                            threads = 0, quick = false})
if o.threads > 0 then tide.set_num_threads(o.threads) end
local train = tide.data.fashion_mnist{split = "train"}
local test = tide.data.fashion_mnist{split = "test"}
if o.quick then
  train = train:split({5000}, o.seed)
  o.epochs, o.ll_n, o.ll_K, o.dir = 1, 200, 100, o.dir .. "-quick"
end
local hidden = {}
for v in o.hidden:gmatch("%d+") do hidden[#hidden + 1] = tonumber(v) end

tide.manual_seed(o.seed)
local model = VAE{shape = {1, 28, 28}, latent = o.latent, hidden = hidden, kind = o.kind, likelihood = o.likelihood,
                  scale = o.scale, beta = o.beta, K = o.K, objective = o.objective}
local opt = tide.optim.Adam(model, {lr = o.lr})
print(("VAE (%s, %s, K=%d) on Fashion-MNIST: %d train images, %d parameters"):format(o.objective, o.likelihood,
      o.K, train:size(), model:num_parameters()))
io.stdout:flush()
local wall0 = os.time()
local Xtest = test:tensor(1)

-- the test ELBO (K = 1 sample, closed-form KL), in batches
local function test_elbo(n)
  return tide.no_grad(function()
    local s = 0
    for start = 1, n, 500 do
      local b = math.min(500, n - start + 1)
      s = s + model:elbo(Xtest:narrow(1, start, b), {K = 1}):sum():item()
    end
    return s / n
  end)
end

local loader = tide.data.loader(train, {batch_size = o.batch, shuffle = true, seed = o.seed, drop_last = true})
local hist = tide.train.fit{
  model = model, optimizer = opt, loader = loader, epochs = o.epochs, dir = o.dir, resume = true, seed = o.seed,
  step = function(batch)
    local x = batch.x[1]
    if o.binarize then x = tide.bernoulli(x) end
    return model:loss(x)
  end,
  on_epoch_end = function() return {test_elbo = test_elbo(2000)} end,
}

model:eval()
local elbo = test_elbo(Xtest:size(1))
print(("test ELBO (10,000 images): %.2f nats (%ds)"):format(elbo, os.time() - wall0))
io.stdout:flush()
local t0 = os.time()
local ll = metrics.log_likelihood(model, Xtest:narrow(1, 1, o.ll_n), {K = o.ll_K, chunk = o.chunk, batch = 100,
                                                                       seed = o.seed})
print(("IWAE-%d log-likelihood (%d test images): %.2f nats, Var log w %.3f (%ds)"):format(o.ll_K, ll.n, ll.ll,
      ll.var, os.time() - t0))

local fid_s, fid_r = -1, -1
local f = io.open(o.classifier, "r")
if f then
  f:close()
  local clf = require("tide.classifier").load(o.classifier)
  local x = Xtest:narrow(1, 1, 5000)
  tide.manual_seed(o.seed)
  fid_s = metrics.fid(clf, x, model:sample(5000))
  fid_r = metrics.fid(clf, x, model:reconstruct(x))
  print(("Fréchet distance to 5,000 test images (%s features): samples %.3f, reconstructions %.3f"):format(
        o.classifier, fid_s, fid_r))
end

if o.img ~= "" then
  os.execute(("mkdir -p '%s'"):format(o.img))
  local sfx = o.quick and "_quick" or (o.objective == "elbo" and "" or "_" .. o.objective)
  local x = Xtest:narrow(1, 1, 16)
  tide.viz.save_grid(o.img .. "/vae_recon" .. sfx .. ".png", {x, model:reconstruct(x)}, {scale = 2})
  tide.manual_seed(o.seed)
  tide.viz.save_grid(o.img .. "/vae_samples" .. sfx .. ".png", model:sample(64), {ncol = 8, scale = 2})
end

print(("RESULT model=vae dataset=fashion_mnist objective=%s K=%d likelihood=%s test_elbo=%.2f iwae%d=%.2f " ..
       "ll_n=%d lw_var=%.3f sample_fid=%.3f recon_fid=%.3f epochs=%d seed=%d wall_s=%d"):format(o.objective, o.K,
       o.likelihood, elbo, o.ll_K, ll.ll, ll.n, ll.var, fid_s, fid_r, hist.epoch, o.seed, os.time() - wall0))
