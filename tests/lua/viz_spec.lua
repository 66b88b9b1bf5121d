-- tide.viz: image grids round-trip through PNG; plots are PNG files
-- (gnuplot when installed, the built-in plotter always).
local tide = require("tide")
local viz = tide.viz

local files = {}
local function tmp_png()
  local p = os.tmpname()
  os.remove(p)
  p = p .. ".png"
  files[#files + 1] = p
  return p
end

local function cleanup()
  for _, p in ipairs(files) do os.remove(p) end
  files = {}
end

local function is_png(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local magic = f:read(8)
  f:close()
  return magic == "\137PNG\r\n\26\n"
end

-- Images whose values are whole multiples of 1/255 (exact in 8 bits).
local function images(n, c, h, w)
  local vals = {}
  for i = 0, n * c * h * w - 1 do vals[#vals + 1] = ((i * 37 + 11) % 256) / 255 end
  return tide.from_table(vals, {n, c, h, w})
end

describe("tide.viz grids", function()
  after_each(cleanup)

  it("round-trips through td_png_load with the right layout and values", function()
    local x = images(5, 1, 2, 3)
    local path = tmp_png()
    viz.save_grid(path, x, {ncol = 2, padding = 1, pad_value = 0})
    local g = tide.png_load(path)
    -- rows = ceil(5/2) = 3: [1, 3*(2+1)+1, 2*(3+1)+1]
    assert.same({1, 10, 9}, g:shape())
    for i = 0, 4 do
      local r, c = math.floor(i / 2), i % 2
      local top, left = 1 + r * 3, 1 + c * 4
      local tile = g:narrow(2, top + 1, 2):narrow(3, left + 1, 3)
      local want = x[i + 1]
      assert.is_true((tile - want):abs():max():item() < 1e-6, "tile " .. i)
    end
    -- padding and the empty sixth cell hold pad_value
    assert.equal(0, g:narrow(2, 1, 1):abs():max():item())
    assert.equal(0, g:narrow(2, 8, 2):narrow(3, 6, 3):abs():max():item())
  end)

  it("takes [N,H,W], flat [N,H*W], RGB, and lists of rows (gray widened to RGB)", function()
    local gray = images(4, 1, 4, 4)
    local path = tmp_png()
    viz.save_grid(path, gray:reshape(4, 4, 4), {ncol = 4, padding = 0})
    assert.same({1, 4, 16}, tide.png_load(path):shape())
    viz.save_grid(path, gray:reshape(4, 16), {ncol = 2, padding = 0})
    assert.same({1, 8, 8}, tide.png_load(path):shape())
    local rgb = images(4, 3, 4, 4)
    viz.save_grid(path, {gray, rgb}, {padding = 2, pad_value = 1})
    local g = tide.png_load(path)
    assert.same({3, 2 * 6 + 2, 4 * 6 + 2}, g:shape())
    -- row 1, image 1, every channel is the gray image
    local tile = g:narrow(2, 3, 4):narrow(3, 3, 4)
    for ch = 1, 3 do
      assert.is_true((tile:narrow(1, ch, 1) - gray[1]):abs():max():item() < 1e-6)
    end
    assert.is_true((g:narrow(2, 9, 4):narrow(3, 3, 4) - rgb[1]):abs():max():item() < 1e-6)
    assert.has_error(function() viz.save_grid(path, {gray, rgb:narrow(1, 1, 3)}) end)
  end)

  it("zooms by an integer scale", function()
    local path = tmp_png()
    viz.save_grid(path, images(2, 1, 3, 3), {ncol = 2, padding = 1, scale = 3})
    assert.same({1, 15, 27}, tide.png_load(path):shape())
  end)
end)

describe("tide.viz plots", function()
  after_each(cleanup)

  local function check_plot(path, w, h)
    assert.is_true(is_png(path), path .. " is not a PNG")
    local img = tide.png_load(path)
    assert.same({3, h, w}, img:shape())
    -- something is drawn: not a blank page
    assert.is_true(-img:neg():max():item() < 0.5)
  end

  it("draws with the built-in plotter", function()
    local path = tmp_png()
    local p, backend = viz.plot(path, {series = {{y = {3, 1, 2, 0.5}, name = "a"}, {x = {1, 4}, y = {0, 3}, points = true}},
                                       backend = "builtin", width = 320, height = 200})
    assert.equal(path, p)
    assert.equal("builtin", backend)
    check_plot(path, 320, 200)
  end)

  it("falls back to the built-in plotter without gnuplot", function()
    local real = viz.gnuplot_terminal
    viz.gnuplot_terminal = function() return nil end
    local path = tmp_png()
    local ok, p, backend = pcall(viz.plot, path, {y = {1, 2, 3}, width = 200, height = 120})
    viz.gnuplot_terminal = real
    assert.is_true(ok, p)
    assert.equal("builtin", backend)
    check_plot(path, 200, 120)
    assert.has_error(function()
      viz.gnuplot_terminal = function() return nil end
      local ok2, err = pcall(viz.plot, path, {y = {1, 2}, backend = "gnuplot"})
      viz.gnuplot_terminal = real
      if not ok2 then error(err) end
    end)
  end)

  it("draws with gnuplot when it is installed", function()
    local term = viz.gnuplot_terminal()
    if not term then
      pending("gnuplot with a png terminal is not installed (apt-get install gnuplot-nox)")
      return
    end
    local path = tmp_png()
    local _, backend = viz.plot(path, {y = {1, 4, 9, 16}, title = "it's a_test", xlabel = "x", ylabel = "y",
                                       width = 400, height = 300})
    assert.equal("gnuplot", backend)
    check_plot(path, 400, 300)
  end)

  it("K-selection curves mark the best K; loss curves read train logs", function()
    local path = tmp_png()
    local _, best = viz.k_curve(path, {2, 3, 4, 5, 6}, {410, 380, 372, 390, 401}, {criterion = "BIC", width = 300, height = 200})
    assert.equal(4, best)
    check_plot(path, 300, 200)
    local _, best2 = viz.k_curve(path, {2, 3, 4}, tide.from_table{0.1, 0.5, 0.3}, {mode = "max", backend = "builtin",
                                                                               width = 300, height = 200})
    assert.equal(3, best2)
    local csv = os.tmpname()
    local f = io.open(csv, "w")
    f:write("epoch,step,global_step,loss,kl,time\n")
    for i = 1, 20 do f:write(("1,%d,%d,%g,%g,0\n"):format(i, i, 10 / i, 1 + i / 10)) end
    f:close()
    viz.loss_curve(path, csv, {columns = {"loss", "kl"}, smooth = 3, width = 300, height = 200})
    os.remove(csv)
    check_plot(path, 300, 200)
    viz.loss_curve(path, {epochs = {{epoch = 1, loss = 3}, {epoch = 2, loss = 2}}}, {backend = "builtin", width = 300, height = 200})
    check_plot(path, 300, 200)
  end)
end)
