-- examples/quickstart.lua - the README's script: an MLP classifier on
-- Fashion-MNIST, one epoch, then its test accuracy.
--   bin/tide examples/quickstart.lua
local tide = require("tide")
local nn = tide.nn
tide.manual_seed(1)
local net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
local opt = tide.optim.Adam(net, {lr = 1e-3})
local train = tide.data.fashion_mnist{split = "train"}
local loader = tide.data.loader(train, {batch_size = 128, shuffle = true, seed = 1, labels = true})
for batch in loader:iter() do
  local loss = net(batch.x[1]:reshape(-1, 784)):cross_entropy(batch.y):mean()
  opt:zero_grad(); loss:backward(); opt:step()
end
local test = tide.data.fashion_mnist{split = "test"}
local logits = tide.no_grad(function() return net(test:tensor(1):reshape(-1, 784)) end)
local acc = logits:argmax(2):eq(test:labels()):mean():item()
print(("RESULT model=mlp dataset=fashion-mnist acc=%.4f"):format(acc))
