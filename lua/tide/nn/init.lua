-- tide.nn - modules with one flat parameter buffer per model.
--   local nn = require("tide.nn")   (or tide.nn)
--   local net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
--   local y = net(x); print(net)
-- See nn/module.lua for classes, parameters and the flat buffers.
local Mod = require("tide.nn.module")
local L = require("tide.nn.layers")

local nn = {
  Module = Mod.Module,
  is_module = Mod.is_module,
  init = require("tide.nn.init_fns"),
  GRU = require("tide.nn.gru"),
}
for k, v in pairs(L) do nn[k] = v end

return nn
