-- tide.cli - command-line flags for scripts: `--name value` over a table of
-- defaults, whose types decide the parsing (a boolean flag takes no value,
-- a number flag must be a number); unknown flags are errors.
--
--   local o = tide.cli.parse(arg, {epochs = 20, quick = false, out = "runs/x"}, "examples/x.lua")
local M = {}

function M.parse(argv, defaults, script)
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  argv = argv or {}
  local i = 1
  while i <= #argv do
    local key = argv[i]:match("^%-%-([%w_]+)$")
    if not key or o[key] == nil then
      error("unknown flag " .. argv[i] .. (script and " (see the top of " .. script .. ")" or ""), 0)
    end
    if type(o[key]) == "boolean" then o[key] = true
    else
      i = i + 1
      local v = argv[i]
      if v == nil then error("flag --" .. key .. " needs a value", 0) end
      if type(o[key]) == "number" then v = tonumber(v) or error("flag --" .. key .. " needs a number, got " .. v, 0) end
      o[key] = v
    end
    i = i + 1
  end
  return o
end

return M
