-- tide - multimodal generative clustering on a C engine.
--   local tide = require("tide")
--   local x = tide.randn(4, 3):requires_grad(true)
--   local y = (x * 2 + 1):sum()
--   y:backward(); print(x:grad())
-- Submodules (tide.nn, tide.optim, ...) load on first use.
local B = require("tide_ffi")
local T = require("tide.tensor")

local tide = {}
for k, v in pairs(T.functions) do tide[k] = v end
tide.Tensor = T.Tensor          -- the method table of every tensor
tide.C = B.C                    -- the raw C namespace (no error checks, no GC)
tide.binding = B                -- lib_path, header_path, wrappers, info, signature()
tide.help = require("tide.help").help  -- prints a one-line doc
tide.doc = require("tide.help").doc    -- returns it (or nil)
tide.set_printoptions = require("tide.format").set_printoptions
tide.version = "0.1.0"

-- tide.nn -> require("tide.nn") when lua/tide/nn(.lua|/init.lua) exists.
return setmetatable(tide, {
  __index = function(t, k)
    if type(k) ~= "string" or not package.searchpath("tide." .. k, package.path) then return nil end
    local m = require("tide." .. k)
    rawset(t, k, m)
    return m
  end,
})
