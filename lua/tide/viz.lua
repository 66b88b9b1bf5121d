-- tide.viz - pictures of a run: image grids and line plots, as PNG.
--
--   tide.viz.save_grid("samples.png", x, {ncol = 8})      -- x [N,C,H,W], [N,H,W] or [N,H*W], in [0,1]
--   tide.viz.save_grid("recon.png", {x, xhat})             -- one row per tensor
--   tide.viz.plot("curve.png", {series = {{x = ks, y = bic, name = "BIC"}}, xlabel = "K"})
--   tide.viz.loss_curve("loss.png", "runs/vae/log.csv")    -- or a train.fit history
--   tide.viz.k_curve("k.png", {2, 3, 4, 5}, {410, 380, 395, 400}, {criterion = "BIC"})
--
-- Grids are made by the engine (td_image_grid, td_png_save). Plots are
-- drawn by gnuplot when it is installed (Debian gnuplot-nox): axes, ticks,
-- labels and legends well done for free, from one short script with the
-- data inline, and no plotting code to maintain here. Without gnuplot (or
-- with backend = "builtin", or TIDE_NO_GNUPLOT=1) a plain plot is drawn
-- into a tensor (lines, points, axes, numbers at the axis ends; no text
-- labels) and written with td_png_save, so a script never fails for lack
-- of it.
local B = require("tide_ffi")
local W = B.wrappers
local raise = B.raise
local sys = require("tide.data.sys")

local viz = {}

---------------------------------------------------------------- grids

-- images -> [N,C,H,W]: [N,H,W] gets C = 1; [N,D] with D = s^2 or 3 s^2
-- becomes square images; opts.shape = {C,H,W} overrides.
local function as_nchw(x, opts, fname)
  if not B.is_tensor(x) then raise(fname .. ": images must be a tensor, got " .. type(x)) end
  local s = x:shape()
  local n = s[1]
  if opts and opts.shape then
    return W.reshape(x, {n, opts.shape[1], opts.shape[2], opts.shape[3]})
  end
  if x.ndim == 4 then return x end
  if x.ndim == 3 then return W.reshape(x, {n, 1, s[2], s[3]}) end
  if x.ndim == 2 then
    local d = s[2]
    local r = math.floor(math.sqrt(d) + 0.5)
    if r * r == d then return W.reshape(x, {n, 1, r, r}) end
    local r3 = math.floor(math.sqrt(d / 3) + 0.5)
    if 3 * r3 * r3 == d then return W.reshape(x, {n, 3, r3, r3}) end
  end
  raise(("%s: images of shape %s: expected [N,C,H,W], [N,H,W] or [N,H*W] (or give shape = {C,H,W})"):format(
    fname, B.shape_str(x)))
end

local function to_channels(x, c)
  local s = x:shape()
  if s[2] == c then return x end
  return W.contiguous(W.expand(x, {s[1], c, s[3], s[4]}))
end

-- The grid as a tensor [C, H', W'] (see save_grid for the options).
function viz.grid(images, opts)
  opts = opts or {}
  local fname = "viz.grid"
  local x, ncol
  if type(images) == "table" and not B.is_tensor(images) then
    -- one row per tensor
    if #images == 0 then raise(fname .. ": empty list of images") end
    local rows, c, n = {}, 1, nil
    for i, t in ipairs(images) do
      rows[i] = as_nchw(t, opts, fname)
      local s = rows[i]:shape()
      if n and s[1] ~= n then
        raise(("%s: row %d has %d images, row 1 has %d"):format(fname, i, s[1], n))
      end
      n = s[1]
      c = math.max(c, s[2])
    end
    for i = 1, #rows do rows[i] = to_channels(rows[i], c) end
    x = W.concat(rows, 1)
    ncol = opts.ncol or n
  else
    x = as_nchw(images, opts, fname)
    local n = x:size(1)
    ncol = opts.ncol or math.min(n, math.max(1, math.ceil(math.sqrt(n))))
  end
  local pad = opts.padding or 2
  local g = W.image_grid(x, ncol, pad, opts.pad_value or 1)
  local scale = opts.scale or 1
  if scale ~= 1 then
    local s = g:shape()
    g = W.reshape(W.upsample_nearest2d(W.reshape(g, {1, s[1], s[2], s[3]}), scale), {s[1], s[2] * scale, s[3] * scale})
  end
  return g
end

-- Writes images as a PNG grid: opts ncol (default: about square, or the
-- row length for a list), padding (2), pad_value (1 = white), scale
-- (an integer zoom), shape ({C,H,W} for flat images). Values are clamped to
-- [0,1]. Returns path.
function viz.save_grid(path, images, opts)
  if type(path) ~= "string" then raise("viz.save_grid(path, images, opts): path must be a string") end
  local g = viz.grid(images, opts)
  W.png_save(path, g)
  return path
end

---------------------------------------------------------------- gnuplot

local gnuplot_terminal -- nil: not checked yet; false: none

-- "pngcairo" or "png" when gnuplot can write PNG, else nil.
function viz.gnuplot_terminal()
  if gnuplot_terminal == nil then
    gnuplot_terminal = false
    local p = io.popen("gnuplot -e 'set terminal' 2>&1 < /dev/null", "r")
    if p then
      local out = p:read("*a") or ""
      p:close()
      if out:find("%f[%w]pngcairo%f[%W]") then gnuplot_terminal = "pngcairo"
      elseif out:find("%f[%w]png%f[%W]") then gnuplot_terminal = "png" end
    end
  end
  return gnuplot_terminal or nil
end

local function gp_string(s)
  return "'" .. tostring(s):gsub("'", "''"):gsub("[\r\n]", " ") .. "'"
end

local function gp_num(v)
  if v ~= v then return "NaN" end
  if v == math.huge or v == -math.huge then return "NaN" end
  return ("%.9g"):format(v)
end

local function gnuplot_plot(path, spec, term)
  local w, h = spec.width or 800, spec.height or 500
  local tmp = ("%s.tmp.%d.png"):format(path, sys.getpid())
  local L = {}
  L[#L + 1] = ("set terminal %s size %d,%d noenhanced%s"):format(term, w, h, term == "pngcairo" and " font 'Sans,10'" or "")
  L[#L + 1] = "set output " .. gp_string(tmp)
  if spec.title then L[#L + 1] = "set title " .. gp_string(spec.title) end
  if spec.xlabel then L[#L + 1] = "set xlabel " .. gp_string(spec.xlabel) end
  if spec.ylabel then L[#L + 1] = "set ylabel " .. gp_string(spec.ylabel) end
  if spec.logy then L[#L + 1] = "set logscale y" end
  if spec.logx then L[#L + 1] = "set logscale x" end
  if spec.integer_x then L[#L + 1] = "set xtics 1" end
  L[#L + 1] = "set grid"
  L[#L + 1] = "set key top right"
  for i, s in ipairs(spec.series) do
    L[#L + 1] = ("$d%d << EOD"):format(i)
    for j = 1, #s.y do L[#L + 1] = gp_num(s.x[j]) .. " " .. gp_num(s.y[j]) end
    L[#L + 1] = "EOD"
  end
  for _, m in ipairs(spec.marks or {}) do
    L[#L + 1] = ("set arrow from %s, graph 0 to %s, graph 1 nohead dashtype 2 lc rgb '#888888'"):format(gp_num(m.x), gp_num(m.x))
    if m.label then
      L[#L + 1] = ("set label %s at %s, graph 0.95 offset 0.5,0"):format(gp_string(m.label), gp_num(m.x))
    end
  end
  local plots = {}
  for i, s in ipairs(spec.series) do
    local style = s.style or (s.points and "linespoints pt 7 ps 0.8" or "lines")
    plots[i] = ("$d%d using 1:2 with %s lw 2 title %s"):format(i, style, gp_string(s.name or ("series " .. i)))
  end
  L[#L + 1] = "plot " .. table.concat(plots, ", ")
  L[#L + 1] = "unset output"
  local errf = os.tmpname()
  local p = io.popen("gnuplot 2> " .. errf, "w")
  if not p then
    os.remove(errf)
    return false, "cannot run gnuplot"
  end
  p:write(table.concat(L, "\n"), "\n")
  p:close()
  local ef = io.open(errf, "rb")
  local err = ef and ef:read("*a") or ""
  if ef then ef:close() end
  os.remove(errf)
  local f = io.open(tmp, "rb")
  local magic = f and f:read(8)
  if f then f:close() end
  if magic ~= "\137PNG\r\n\26\n" then
    os.remove(tmp)
    return false, "gnuplot failed: " .. (err ~= "" and err or "no PNG written")
  end
  local ok, rerr = os.rename(tmp, path)
  if not ok then
    os.remove(tmp)
    return false, rerr
  end
  return true
end

---------------------------------------------------------------- the built-in plotter

local COLORS = {{0.12, 0.47, 0.71}, {1.0, 0.5, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16},
                {0.58, 0.4, 0.74}, {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.5, 0.5, 0.5}}

-- 3x5 glyphs, rows top to bottom, bits left to right
local FONT = {
  ["0"] = {7, 5, 5, 5, 7}, ["1"] = {2, 6, 2, 2, 7}, ["2"] = {7, 1, 7, 4, 7}, ["3"] = {7, 1, 7, 1, 7},
  ["4"] = {5, 5, 7, 1, 1}, ["5"] = {7, 4, 7, 1, 7}, ["6"] = {7, 4, 7, 5, 7}, ["7"] = {7, 1, 1, 1, 1},
  ["8"] = {7, 5, 7, 5, 7}, ["9"] = {7, 5, 7, 1, 7}, ["."] = {0, 0, 0, 0, 2}, ["-"] = {0, 0, 7, 0, 0},
  ["e"] = {0, 7, 7, 4, 7}, ["+"] = {0, 2, 7, 2, 0}, ["n"] = {0, 6, 5, 5, 5}, ["a"] = {0, 7, 1, 7, 7},
}

local Canvas = {}
Canvas.__index = Canvas

local function new_canvas(w, h)
  local t = W.full({3, h, w}, 1)
  return setmetatable({t = t, d = t.data, w = w, h = h}, Canvas)
end

function Canvas:set(x, y, c)
  x, y = math.floor(x + 0.5), math.floor(y + 0.5)
  if x < 0 or y < 0 or x >= self.w or y >= self.h then return end
  local d, hw, o = self.d, self.w * self.h, y * self.w + x
  d[o], d[hw + o], d[2 * hw + o] = c[1], c[2], c[3]
end

function Canvas:dot(x, y, c, r)
  for dy = -r, r do
    for dx = -r, r do
      if dx * dx + dy * dy <= r * r + r then self:set(x + dx, y + dy, c) end
    end
  end
end

function Canvas:line(x0, y0, x1, y1, c, thick, dash)
  local n = math.max(math.abs(x1 - x0), math.abs(y1 - y0), 1)
  n = math.ceil(n)
  for i = 0, n do
    if not dash or (i % 8) < 4 then
      local x, y = x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n
      if thick then self:dot(x, y, c, 1) else self:set(x, y, c) end
    end
  end
end

function Canvas:text(s, x, y, c, scale)
  scale = scale or 2
  for i = 1, #s do
    local g = FONT[s:sub(i, i)]
    if g then
      for row = 1, 5 do
        for col = 0, 2 do
          if math.floor(g[row] / 2 ^ (2 - col)) % 2 == 1 then
            for sy = 0, scale - 1 do
              for sx = 0, scale - 1 do self:set(x + col * scale + sx, y + (row - 1) * scale + sy, c) end
            end
          end
        end
      end
    end
    x = x + 4 * scale
  end
end

local function short_num(v)
  local s = ("%.4g"):format(v)
  return s
end

local function builtin_plot(path, spec)
  local w, h = spec.width or 800, spec.height or 500
  local cv = new_canvas(w, h)
  local left, right, top, bottom = 70, 20, 20, 40
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  local function ty(v) return spec.logy and (v > 0 and math.log10(v) or nil) or v end
  for _, s in ipairs(spec.series) do
    for j = 1, #s.y do
      local x, y = s.x[j], ty(s.y[j])
      if x == x and y and y == y and math.abs(y) ~= math.huge then
        xmin, xmax = math.min(xmin, x), math.max(xmax, x)
        ymin, ymax = math.min(ymin, y), math.max(ymax, y)
      end
    end
  end
  if xmin > xmax then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  if xmax == xmin then xmin, xmax = xmin - 1, xmax + 1 end
  if ymax == ymin then ymin, ymax = ymin - 1, ymax + 1 end
  local pw, ph = w - left - right, h - top - bottom
  local function px(x) return left + (x - xmin) / (xmax - xmin) * pw end
  local function py(y) return top + (1 - (y - ymin) / (ymax - ymin)) * ph end
  local black, grey = {0, 0, 0}, {0.85, 0.85, 0.85}
  for i = 1, 4 do
    local gx, gy = left + pw * i / 5, top + ph * i / 5
    cv:line(gx, top, gx, top + ph, grey)
    cv:line(left, gy, left + pw, gy, grey)
  end
  cv:line(left, top, left + pw, top, black)
  cv:line(left, top + ph, left + pw, top + ph, black)
  cv:line(left, top, left, top + ph, black)
  cv:line(left + pw, top, left + pw, top + ph, black)
  local function yl(v) return spec.logy and 10 ^ v or v end
  cv:text(short_num(yl(ymax)), 4, top, black)
  cv:text(short_num(yl(ymin)), 4, top + ph - 10, black)
  cv:text(short_num(xmin), left, top + ph + 8, black)
  local xs = short_num(xmax)
  cv:text(xs, left + pw - #xs * 8, top + ph + 8, black)
  for _, m in ipairs(spec.marks or {}) do
    if m.x >= xmin and m.x <= xmax then cv:line(px(m.x), top, px(m.x), top + ph, {0.5, 0.5, 0.5}, false, true) end
  end
  for i, s in ipairs(spec.series) do
    local c = COLORS[(i - 1) % #COLORS + 1]
    local prev
    for j = 1, #s.y do
      local x, y = s.x[j], ty(s.y[j])
      if x == x and y and y == y and math.abs(y) ~= math.huge then
        local X, Y = px(x), py(y)
        if prev then cv:line(prev[1], prev[2], X, Y, c, true) end
        if s.points then cv:dot(X, Y, c, 3) end
        prev = {X, Y}
      else
        prev = nil
      end
    end
  end
  W.png_save(path, cv.t)
  return true
end

---------------------------------------------------------------- plots

local function to_list(v, what)
  if B.is_tensor(v) then
    local t = W.reshape(W.contiguous(v), {-1})
    local out = {}
    for i = 1, t.numel do out[i] = t.data[i - 1] end
    return out
  end
  if type(v) ~= "table" then raise("viz.plot: " .. what .. " must be a table of numbers or a tensor") end
  return v
end

local function normalize(spec)
  if type(spec) ~= "table" then raise("viz.plot(path, spec): spec must be a table") end
  local series = spec.series
  if series == nil then
    if spec.y == nil then raise("viz.plot: give series = {{x =, y =, name =}, ...} or y =") end
    series = {{x = spec.x, y = spec.y, name = spec.name, points = spec.points}}
  end
  local out = {}
  for i, s in ipairs(series) do
    local y = to_list(s.y, "y")
    local x = s.x and to_list(s.x, "x") or nil
    if not x then
      x = {}
      for j = 1, #y do x[j] = j end
    end
    if #x ~= #y then raise(("viz.plot: series %d has %d x values and %d y values"):format(i, #x, #y)) end
    out[i] = {x = x, y = y, name = s.name, points = s.points, style = s.style}
  end
  if #out == 0 then raise("viz.plot: no series") end
  local r = {}
  for k, v in pairs(spec) do r[k] = v end
  r.series = out
  return r
end

-- Writes a line plot: spec {series = {{x =, y =, name =, points =}, ...}
-- (or x =, y = for one), title, xlabel, ylabel, logy, logx, marks = {{x =,
-- label =}}, width, height, backend = "gnuplot" | "builtin"}. Returns path
-- and the backend used.
function viz.plot(path, spec)
  if type(path) ~= "string" then raise("viz.plot(path, spec): path must be a string") end
  spec = normalize(spec)
  local backend = spec.backend
  local no_gp = os.getenv("TIDE_NO_GNUPLOT")
  if backend == nil then backend = (no_gp and no_gp ~= "" and no_gp ~= "0") and "builtin" or "auto" end
  if backend == "gnuplot" or backend == "auto" then
    local term = viz.gnuplot_terminal()
    if term then
      local ok, err = gnuplot_plot(path, spec, term)
      if ok then return path, "gnuplot" end
      if backend == "gnuplot" then raise("viz.plot: " .. tostring(err)) end
    elseif backend == "gnuplot" then
      raise("viz.plot: gnuplot with a png terminal is not installed (apt-get install gnuplot-nox)")
    end
  elseif backend ~= "builtin" then
    raise("viz.plot: backend must be 'gnuplot', 'builtin' or nil, got " .. tostring(backend))
  end
  builtin_plot(path, spec)
  return path, "builtin"
end

-- Columns of a CSV file: {name = {numbers}} and the header order.
local function read_csv(path)
  local f = io.open(path, "rb")
  if not f then raise("viz: cannot open " .. path) end
  local header
  local cols = {}
  for line in f:lines() do
    local cells = {}
    for c in (line .. ","):gmatch("([^,]*),") do cells[#cells + 1] = c end
    if not header then
      header = cells
      for _, h in ipairs(header) do cols[h] = {} end
    else
      for i, h in ipairs(header) do cols[h][#cols[h] + 1] = tonumber(cells[i]) or (0 / 0) end
    end
  end
  f:close()
  if not header then raise("viz: " .. path .. " is empty") end
  return cols, header
end
viz.read_csv = read_csv

-- Loss curves from a train log (log.csv, log_epochs.csv) or a
-- train.fit history: opts.columns (default {"loss"}), x = "global_step"
-- (CSV) or "epoch" (history), smooth = a window for a moving average.
function viz.loss_curve(path, src, opts)
  opts = opts or {}
  local cols
  if type(src) == "string" then
    cols = read_csv(src)
  elseif type(src) == "table" and src.epochs then
    cols = {}
    for _, r in ipairs(src.epochs) do
      for k, v in pairs(r) do
        cols[k] = cols[k] or {}
        cols[k][#cols[k] + 1] = v
      end
    end
  else
    raise("viz.loss_curve(path, src): src must be a CSV path or a train.fit history")
  end
  local xname = opts.x or (cols.global_step and cols.step and "global_step") or "epoch"
  local xs = cols[xname]
  if not xs then raise("viz.loss_curve: no column '" .. xname .. "'") end
  local series = {}
  for _, c in ipairs(opts.columns or {"loss"}) do
    local ys = cols[c]
    if not ys then raise("viz.loss_curve: no column '" .. c .. "'") end
    if opts.smooth and opts.smooth > 1 then
      local sm, acc, q = {}, 0, {}
      for i, v in ipairs(ys) do
        q[#q + 1] = v
        acc = acc + v
        if #q > opts.smooth then acc = acc - table.remove(q, 1) end
        sm[i] = acc / #q
      end
      ys = sm
    end
    series[#series + 1] = {x = xs, y = ys, name = c}
  end
  return viz.plot(path, {series = series, title = opts.title, xlabel = opts.xlabel or xname,
                         ylabel = opts.ylabel or "loss", logy = opts.logy, backend = opts.backend,
                         width = opts.width, height = opts.height})
end

-- A K-selection curve: criterion values against K, the chosen K marked
-- (opts.best, or the argmin, or the argmax with opts.mode = "max").
function viz.k_curve(path, ks, values, opts)
  opts = opts or {}
  ks, values = to_list(ks, "ks"), to_list(values, "values")
  if #ks ~= #values or #ks == 0 then raise("viz.k_curve: ks and values must be non-empty and of the same length") end
  local best = opts.best
  if best == nil then
    local bi = 1
    for i = 2, #values do
      if (opts.mode == "max" and values[i] > values[bi]) or (opts.mode ~= "max" and values[i] < values[bi]) then bi = i end
    end
    best = ks[bi]
  end
  local name = opts.criterion or "criterion"
  return viz.plot(path, {series = {{x = ks, y = values, name = name, points = true}}, title = opts.title,
                         xlabel = opts.xlabel or "K", ylabel = name, integer_x = true,
                         marks = {{x = best, label = "K = " .. tostring(best)}}, backend = opts.backend,
                         width = opts.width, height = opts.height}), best
end

return viz
