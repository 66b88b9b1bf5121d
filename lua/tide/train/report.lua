-- tide.train.report - what a run tells: the CSV logs and the progress
-- line on stderr.
local sys = require("tide.data.sys")
local U = require("tide.train.util")
local raise = require("tide_ffi").raise
local fmt_num, fmt_time = U.fmt_num, U.fmt_time

local Csv = {}
Csv.__index = Csv

local function csv_cell(v)
  if type(v) == "number" then return fmt_num(v) end
  v = tostring(v or "")
  if v:find('[,"\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

local function split_csv_line(line)
  local out = {}
  for cell in (line .. ","):gmatch("([^,]*),") do out[#out + 1] = cell end
  return out
end

-- Opens path for appending. keep(cells, col) (when resuming) says which rows
-- stay (rows past the checkpoint, from a run killed after it, go); without
-- it the file starts afresh.
function Csv.open(path, keep)
  local self = setmetatable({path = path}, Csv)
  local dir = path:match("^(.*)/[^/]+$")
  if dir then assert(sys.mkdir_p(dir)) end
  if keep and sys.exists(path) then
    local lines = {}
    for line in io.lines(path) do lines[#lines + 1] = line end
    if #lines > 0 then
      self.columns = split_csv_line(lines[1])
      local col = {}
      for i, c in ipairs(self.columns) do col[c] = i end
      local kept = {lines[1]}
      for i = 2, #lines do
        if keep(split_csv_line(lines[i]), col) then kept[#kept + 1] = lines[i] end
      end
      local ok, err = sys.write_atomic(path, table.concat(kept, "\n") .. "\n")
      if not ok then raise("train.fit: cannot rewrite the log " .. path .. ": " .. tostring(err)) end
    end
  end
  local f, err = io.open(path, keep and "ab" or "wb")
  if not f then raise("train.fit: cannot open the log " .. path .. ": " .. tostring(err)) end
  self.f = f
  self.flushed = sys.now()
  return self
end

-- row: {column = value}; the first row fixes the columns (order given).
function Csv:write(row, columns)
  if not self.columns then
    self.columns = columns
    self.f:write(table.concat(columns, ","), "\n")
  end
  local cells = {}
  for i, c in ipairs(self.columns) do cells[i] = csv_cell(row[c]) end
  self.f:write(table.concat(cells, ","), "\n")
  local now = sys.now()
  if now - self.flushed > 1 then
    self.f:flush()
    self.flushed = now
  end
end

function Csv:flush() if self.f then self.f:flush() end end

function Csv:close()
  if self.f then self.f:close() end
  self.f = nil
end

-- The log of epoch ends beside the log of steps: log.csv -> log_epochs.csv.
local function epochs_path(path) return (path:gsub("%.csv$", "")) .. "_epochs.csv" end

---------------------------------------------------------------- progress

local Bar = {}
Bar.__index = Bar

-- mode: nil/true (stderr), false (silent) or an open file.
function Bar.new(mode, stream, interval)
  if io.type(mode) == "file" then stream = mode end
  local self = setmetatable({stream = stream or io.stderr, last = -math.huge, width = 0}, Bar)
  self.on = mode ~= false
  self.tty = self.on and sys.isatty(self.stream)
  self.interval = interval or (self.tty and 0.1 or 10)
  return self
end

local function stats_text(means, keys, max)
  local parts = {}
  for i, k in ipairs(keys) do
    if i > (max or 4) then break end
    if means[k] ~= nil then parts[#parts + 1] = ("%s %.4g"):format(k, means[k]) end
  end
  return table.concat(parts, " ")
end

function Bar:_emit(text, final)
  if self.tty then
    local pad = math.max(0, self.width - #text)
    self.stream:write("\r", text, (" "):rep(pad), final and "\n" or "")
    self.width = final and 0 or #text
  else
    self.stream:write(text, "\n")
  end
  self.stream:flush()
end

-- A line during an epoch (throttled): epoch, k/total, loss, stats, it/s, ETA.
function Bar:update(s, force)
  if not self.on then return end
  local now = sys.now()
  if not force and now - self.last < self.interval then return end
  self.last = now
  local done = s.k - s.k0
  local rate = done / math.max(now - s.t0, 1e-9)
  local pos
  if s.total then
    local frac = s.k / math.max(s.total, 1)
    local bar = ""
    if self.tty then
      local n = math.floor(frac * 20 + 1e-9)
      bar = "[" .. ("="):rep(n) .. (n < 20 and ">" or "") .. (" "):rep(math.max(0, 19 - n)) .. "] "
    end
    pos = ("%s%d/%d"):format(bar, s.k, s.total)
  else
    pos = tostring(s.k)
  end
  local eta = (s.total and rate > 0) and (" ETA " .. fmt_time((s.total - s.k) / rate)) or ""
  local st = stats_text(s.means, s.keys)
  self:_emit(("epoch %d/%d %s loss %.4g%s | %.1f it/s%s"):format(s.epoch, s.epochs, pos, s.loss_mean,
    st ~= "" and (" " .. st) or "", rate, eta))
end

function Bar:line(text)
  if not self.on then return end
  self:_emit(text, true)
end

-- Wipes the bar line of a terminal (before an epoch's summary or a hook).
function Bar:clear()
  if self.on and self.tty and self.width > 0 then
    self.stream:write("\r", (" "):rep(self.width), "\r")
    self.stream:flush()
    self.width = 0
  end
end

function Bar:finish()
  if self.on and self.tty and self.width > 0 then
    self.stream:write("\n")
    self.width = 0
  end
end

return {Csv = Csv, Bar = Bar, epochs_path = epochs_path, stats_text = stats_text}
