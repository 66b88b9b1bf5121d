-- tide.metrics: evaluation metrics, one table merged from the files of this
-- folder (see docs/metrics.md):
--   cluster.lua   ACC (Hungarian), NMI, ARI, contingency tables, assignment
--
-- Loading tide.metrics must stay cheap and must not load the engine, so that
-- scoring Lua arrays needs no libtide: a piece that needs tensors or engine
-- ops requires "tide" inside its functions, not at its top. Add a piece by
-- adding its name to PIECES; two pieces may not export the same name.
local PIECES = {"cluster", "likelihood", "coherence", "frechet"}

local M = {}
for _, piece in ipairs(PIECES) do
  for name, f in pairs(require("tide.metrics." .. piece)) do
    if M[name] ~= nil then
      error("tide.metrics: " .. piece .. ".lua exports '" .. name .. "', already taken")
    end
    M[name] = f
  end
end
return M
