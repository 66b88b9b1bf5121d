-- tide.data - data sets and loaders.
--
--   local ds = tide.data.polymnist{split = "train"}      -- 5 modalities [3,28,28] in [0,1]
--   local loader = tide.data.loader(ds, {batch_size = 256, shuffle = true, seed = 1, missing = 0.2})
--   for batch in loader:iter() do
--     local x1, mask = batch.x[1], batch.mask            -- [B,3,28,28], [M,B] (1 = present)
--   end
--
-- Data sets: mnist (10,000 digits), fashion_mnist{split = "train"|"test"},
-- polymnist{split = "train"|"val"|"test"}, mnist_fashion{split = ...}
-- (files of datasets/cache, made by datasets/fetch), and tensors{x1, ...,
-- labels =} for your own. Labels come with a batch only when asked
-- ({labels = true}), so an unsupervised model never sees them by accident;
-- ds:labels() gives them all for evaluation.
local D = require("tide.data.dataset")
local L = require("tide.data.loader")
local S = require("tide.data.sets")

local data = {
  Dataset = D.Dataset,
  Loader = L.Loader,
  new = D.new,
  tensors = D.tensors,
  is_dataset = D.is_dataset,
  loader = L.new,
  DataLoader = L.new,
  mnist = S.mnist,
  fashion_mnist = S.fashion_mnist,
  polymnist = S.polymnist,
  mnist_fashion = S.mnist_fashion,
  cache_dir = S.cache_dir,
  available = S.available,
  Rng = require("tide.data.rng").new,
  drop_probability = L.drop_probability,
}

return data
