-- examples/train_classifiers.lua - the classifiers of the coherence and
-- Fréchet-distance metrics, trained with tide and saved as checkpoints
-- (tide.classifier; load with require("tide.classifier").load(path)).
--
--   bin/tide examples/train_classifiers.lua                   (all of them)
--   bin/tide examples/train_classifiers.lua --which fashion   (one: fashion | mnist | polymnist | text)
--   bin/tide examples/train_classifiers.lua --quick           (a smoke run: 2,000 images, 1 epoch)
--
-- Files in --out (default out/classifiers):
--   fashion_mnist.safetensors   Fashion-MNIST images [1,28,28] (train 60,000; test 10,000)
--   mnist.safetensors           the "mnist" modality of tide.data.mnist_fashion (train 8,000; test 1,000)
--   polymnist_m0 .. m4.safetensors  one per PolyMNIST modality [3,28,28] (train 8,000; test 1,000)
--   text.safetensors            class names as token ids (tide.models.text), trained on names with
--                               10% of the characters replaced at random, tested on clean and on
--                               30%-corrupted names
-- flags: --which all, --epochs N (default per data set: fashion 3, mnist 10,
-- polymnist 20, text 2), --batch 128, --lr 1e-3, --seed 1, --out DIR,
-- --threads N, --quick. One line per classifier:
--   RESULT model=classifier dataset=<d> modality=<m> test_acc=... epochs=... wall_s=...
local tide = require("tide")
local C = require("tide.classifier")
local text = require("tide.models.text")

local parse = require("tide.cli").parse

local o = parse(arg or {}, {which = "all", epochs = 0, batch = 128, lr = 1e-3, seed = 1,
                            out = "out/classifiers", threads = 0, quick = false})
if o.threads > 0 then tide.set_num_threads(o.threads) end
os.execute(("mkdir -p '%s'"):format(o.out))

local function want(name) return o.which == "all" or o.which == name end

local function cut(x, y)
  if not o.quick then return x, y end
  local n = math.min(2000, x:size(1))
  return x:narrow(1, 1, n), y:narrow(1, 1, n)
end

-- trains one classifier on (xtr, ytr), scores it on (xte, yte), saves it
local function run(file, dataset, modality, opts, xtr, ytr, xte, yte, fit_opts)
  local t0 = os.time()
  xtr, ytr = cut(xtr, ytr)
  tide.manual_seed(o.seed)
  local clf = C.new(opts)
  local epochs = o.epochs > 0 and o.epochs or fit_opts.epochs
  local fo = {epochs = o.quick and 1 or epochs, batch = o.batch, lr = o.lr,
              seed = o.seed, progress = true, val = {xte, yte}}
  fo.transform = fit_opts.transform
  C.fit(clf, xtr, ytr, fo)
  local acc = C.accuracy(clf, xte, yte)
  local path = o.out .. "/" .. file .. ".safetensors"
  clf:save(path, {metadata = {dataset = dataset, modality = modality, test_acc = ("%.4f"):format(acc)}})
  print(("RESULT model=classifier dataset=%s modality=%s test_acc=%.4f epochs=%d file=%s wall_s=%d"):format(
        dataset, modality, acc, fo.epochs, path, os.time() - t0))
  io.stdout:flush()
  return clf
end

if want("fashion") then
  local tr, te = tide.data.fashion_mnist{split = "train"}, tide.data.fashion_mnist{split = "test"}
  run("fashion_mnist", "fashion_mnist", "image", {kind = "image", channels = 1},
      tr:tensor(1), tr:labels(), te:tensor(1), te:labels(), {epochs = 3})
end

if want("mnist") then
  local tr, te = tide.data.mnist_fashion{split = "train"}, tide.data.mnist_fashion{split = "test"}
  local m = 1
  for i, name in ipairs(tr.modalities) do if name == "mnist" then m = i end end
  run("mnist", "mnist_fashion", "mnist", {kind = "image", channels = 1},
      tr:tensor(m), tr:labels(), te:tensor(m), te:labels(), {epochs = 10})
end

if want("polymnist") then
  local tr, te = tide.data.polymnist{split = "train"}, tide.data.polymnist{split = "test"}
  for m = 1, tr:num_modalities() do
    run("polymnist_m" .. (m - 1), "polymnist", tr.modalities[m], {kind = "image", channels = 3},
        tr:tensor(m), tr:labels(), te:tensor(m), te:labels(), {epochs = 20})
  end
end

if want("text") then
  tide.manual_seed(o.seed)
  local n = o.quick and 2000 or 20000
  local ytr = tide.categorical(tide.full(10, 0.1), n)
  local yte = tide.categorical(tide.full(10, 0.1), 2000)
  local clf = run("text", "fashion_mnist", "text", {kind = "text"}, text.from_labels(ytr), ytr,
                  text.from_labels(yte), yte, {epochs = 2, transform = function(x) return text.corrupt(x, 0.1) end})
  local noisy = C.accuracy(clf, text.corrupt(text.from_labels(yte), 0.3), yte)
  print(("RESULT model=classifier dataset=fashion_mnist modality=text_corrupt30 test_acc=%.4f"):format(noisy))
end
