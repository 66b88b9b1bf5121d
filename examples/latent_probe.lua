-- examples/latent_probe.lua - what the shared latent of a multimodal VAE
-- checkpoint (CMVAE, MMVAE+) knows of the class, per modality and pooled.
--
--   bin/tide examples/latent_probe.lua --ckpt runs/cmvae/cmvae.safetensors [--dataset polymnist] [--ref 2000]
--
-- On the test split, for z = each modality's posterior mean and for their
-- average over modalities: ACC / NMI of k-means (10 centres, 3 restarts),
-- and the accuracy of the nearest neighbour (squared distance) among --ref
-- training tuples. Then per dimension of z, the ranges over dimensions of
-- the mean posterior scale, the spread of one modality's z means over the
-- test set, and the part of that spread the class explains (the standard
-- deviation of the class means).
local tide = require("tide")
local metrics = require("tide.metrics")
local parse = require("tide.cli").parse

local o = parse(arg or {}, {ckpt = "", dataset = "polymnist", ref = 2000, seed = 1, threads = 2}, "examples/latent_probe.lua")
local path = o.ckpt
if path == "" then error("usage: bin/tide examples/latent_probe.lua --ckpt FILE [--dataset polymnist] [--ref 2000]", 0) end
tide.set_num_threads(o.threads)
local model = tide.load_model(path)
if not model.embed then error(path .. ": not a multimodal VAE with a shared latent (no embed)", 0) end
local test = tide.data[o.dataset]{split = "test"}
local ref = tide.data[o.dataset]{split = "train"}:split({o.ref}, o.seed)
local y, yref = test:labels(), ref:labels()
local e, eref = model:embed(test), model:embed(ref)

-- accuracy of the nearest of the reference points a [R,D] for b [N,D]
local function nearest_acc(a, b)
  local d = (a * a):sum(2):reshape(1, -1) - b:matmul(a:t()) * 2   -- + |b|^2, the same along a row
  local nn, ok = d:neg():argmax(2), 0
  for i = 1, b:size(1) do if yref:at(nn:at(i) + 1) == y:at(i) then ok = ok + 1 end end
  return ok / b:size(1)
end

local function probe(name, z, zref)
  local s = metrics.scores(y, tide.cluster.kmeans(z, 10, {n_init = 3, seed = o.seed}).labels)
  print(("%-14s k-means ACC %.3f NMI %.3f | 1-NN ACC %.3f"):format(name, s.acc, s.nmi, nearest_acc(zref, z)))
end

local M = e.mu_z:size(1)
for m = 1, M do probe("z of m" .. (m - 1), e.mu_z:select(1, m):contiguous(), eref.mu_z:select(1, m):contiguous()) end
probe("mean over m", e.mu_z:mean(1), eref.mu_z:mean(1))

-- per dimension, modality 1: the spread over the test set and the spread of the class means
local z = e.mu_z:select(1, 1):contiguous()
local N, D = z:size(1), z:size(2)
local center = z - z:mean(1, true)
local spread = (center * center):mean(1):sqrt()
local onehot = y:reshape(N, 1):eq(tide.arange(0, 10):reshape(1, 10))          -- [N,10]
local counts = onehot:sum(1):reshape(10, 1)
local class_means = onehot:t():matmul(center) / counts:clamp(1, N)             -- [10,D]
local between = (class_means * class_means * counts):sum(1):div(N):sqrt()
local scale = e.scale_z:mean(1):mean(1)
local function range(t) return ("%.2f-%.2f"):format(t:neg():max():neg():item(), t:max():item()) end
print(("per dim of z (m0): posterior scale %s, spread of the means %s, of the class means %s")
      :format(range(scale), range(spread), range(between)))
