-- tide.models.vqvae: nearest-code quantization, the straight-through
-- gradient, codebook and commitment gradients, EMA updates and codebook
-- usage, all on hand-computed cases; and a tiny model that learns.
local tide = require("tide")
local VQVAE = require("tide.models.vqvae")
local fixture = dofile("tests/lua/fixture.lua")

-- a model with a 2-d codebook of 3 codes set by hand
local function model_with(codes, opts)
  opts = opts or {}
  local m = VQVAE{channels = 1, dim = 2, codes = #codes, width = 4, ema = opts.ema, decay = opts.decay,
                  init = "uniform"}
  m:parameters()
  m.codebook:copy_(tide.from_table(codes))
  if opts.ema then m.ema_sum:copy_(m.codebook) end
  return m
end

-- z_e [1,2,1,3] whose three cells are the vectors of `rows` (3 x 2)
local function grid_of(rows)
  return tide.from_table(rows):t():reshape(1, 2, 1, 3):contiguous()
end

describe("VQ-VAE", function()
  local codes = {{0, 0}, {1, 1}, {-2, 0}}
  local rows = {{0.9, 0.8}, {-1.5, 0.2}, {0.1, -0.3}}   -- nearest: 2, 3, 1 (1-based)

  it("quantizes to the nearest code; straight-through passes the gradient to z_e", function()
    local m = model_with(codes)
    m:zero_grad()
    local ze = grid_of(rows):requires_grad(true)
    local zst, ids, cb, commit = m:quantize(ze)
    assert.same({1, 2, 0}, ids:to_table())
    -- the value is z_q
    local zq = {{1, 1}, {-2, 0}, {0, 0}}
    fixture.assert_close(zst, grid_of(zq), 0, 0, "z_q")
    -- straight-through: d(sum g * zst)/d ze = g
    local g = tide.randn(1, 2, 1, 3)
    ;(zst * g):sum():backward()
    fixture.assert_close(ze:grad(), g, 1e-7, 0, "straight-through")
    assert.equal(0, m.codebook:grad():abs():sum():item())     -- z_q's own gradient is cut
  end)

  it("codebook and commitment losses have the hand-computed values and gradients", function()
    local m = model_with(codes)
    local ze = grid_of(rows):requires_grad(true)
    local _, _, cb, commit = m:quantize(ze)
    -- both are mean_{i,d} (z_e - z_q)^2 over N*E = 6 elements
    local zq = {{1, 1}, {-2, 0}, {0, 0}}
    local sq = 0
    for i = 1, 3 do for d = 1, 2 do sq = sq + (rows[i][d] - zq[i][d]) ^ 2 end end
    fixture.assert_near(cb:item(), sq / 6, 1e-6, 1e-6, "codebook loss")
    fixture.assert_near(commit:item(), sq / 6, 1e-6, 1e-6, "commitment")
    m:zero_grad()
    ;(cb + commit * 0.25):backward()
    -- d cb / d e_k = 2/6 sum_{i -> k} (e_k - z_i); d commit / d z_i = 2/6 (z_i - e_k)
    local want_cb = {{2 / 6 * (0 - 0.1), 2 / 6 * (0 + 0.3)},
                     {2 / 6 * (1 - 0.9), 2 / 6 * (1 - 0.8)},
                     {2 / 6 * (-2 + 1.5), 2 / 6 * (0 - 0.2)}}
    fixture.assert_close(m.codebook:grad(), tide.from_table(want_cb), 1e-6, 1e-5, "codebook grad")
    local want_z = {}
    for i = 1, 3 do
      want_z[i] = {}
      for d = 1, 2 do want_z[i][d] = 0.25 * 2 / 6 * (rows[i][d] - zq[i][d]) end
    end
    fixture.assert_close(ze:grad(), grid_of(want_z), 1e-6, 1e-5, "commitment grad")
  end)

  it("EMA moves each used code toward the mean of its vectors", function()
    local m = model_with(codes, {ema = true, decay = 0.5})
    m.ema_count:fill(1)
    local r = tide.from_table(rows)
    m:ema_update(r, tide.from_table{1, 2, 0})
    -- N = 0.5 * 1 + 0.5 * 1 = 1 for each code; m_k = 0.5 e_k + 0.5 z_{i->k}
    local want = {}
    local assigned = {[1] = 3, [2] = 1, [3] = 2}
    for k = 1, 3 do
      local i = assigned[k]
      -- smoothing: (1 + eps)/(3 + 3 eps) * 3 = 1
      want[k] = {0.5 * codes[k][1] + 0.5 * rows[i][1], 0.5 * codes[k][2] + 0.5 * rows[i][2]}
    end
    fixture.assert_close(m.codebook, tide.from_table(want), 1e-5, 1e-5, "EMA codebook")
    fixture.assert_close(m.ema_count, tide.ones(3), 1e-6, 0, "EMA counts")
  end)

  it("usage: perplexity and dead codes", function()
    local u = VQVAE.usage(tide.from_table{0, 1, 2, 3, 0, 1, 2, 3}, 8)
    fixture.assert_near(u.perplexity, 4, 1e-5, 1e-6, "uniform over 4")
    assert.equal(4, u.dead)
    assert.equal(4, u.used)
    local one = VQVAE.usage(tide.zeros(10), 5)
    fixture.assert_near(one.perplexity, 1, 1e-6, 1e-6, "one code")
    assert.equal(4, one.dead)
  end)

  it("data init seeds the codebook from encoder vectors; restarts move unused codes onto the data", function()
    tide.manual_seed(9)
    local m = VQVAE{channels = 1, dim = 2, codes = 4, width = 4, restart = true, restart_every = 2}
    local rows = tide.randn(50, 2) * 10 + 100           -- far from U(-1/4, 1/4)
    m:init_codebook(rows)
    -- every code is one of the rows
    local d = tide.kmeans_assign(m.codebook, rows, nil)
    fixture.assert_close(rows:index_select(1, d), m.codebook, 1e-5, 0, "codes are rows")
    assert.equal(1, m.init_done:item())
    -- codes 3 and 4 are never used over a window of 2 steps: they move
    m.codebook:copy_(tide.from_table{{100, 100}, {90, 110}, {-1e3, 0}, {1e3, 0}})
    local ids = tide.kmeans_assign(rows, m.codebook, nil)
    m:restart_dead(rows, ids)
    assert.equal(-1e3, m.codebook:at(3, 1))                 -- not yet: the window is 2 steps
    m:restart_dead(rows, ids)
    local used = tide.kmeans_assign(m.codebook:narrow(1, 3, 2), rows, nil)
    fixture.assert_close(rows:index_select(1, used), m.codebook:narrow(1, 3, 2), 1e-5, 0, "restarted codes")
    assert.same({100, 100}, {m.codebook:at(1, 1), m.codebook:at(1, 2)})
    assert.equal(0, m.window:sum():item())
  end)

  it("a tiny model trains: the loss falls and the codes cover the data (both codebook modes)", function()
    for _, ema in ipairs{false, true} do
      tide.manual_seed(2)
      local x = tide.rand(4, 1, 28, 28):gt(0.7)
      local m = VQVAE{channels = 1, dim = 4, codes = 8, width = 4, ema = ema, likelihood = "bernoulli"}
      local opt = tide.optim.Adam(m, {lr = 3e-3})
      local first, last
      for _ = 1, 12 do
        opt:zero_grad()
        local loss = m:loss(x)
        loss:backward()
        opt:step()
        first = first or loss:item()
        last = loss:item()
      end
      assert.is_true(last < first)
      m:eval()
      local ids = m:codes(x)
      assert.same({4, 7, 7}, ids:shape())
      assert.same({4, 1, 28, 28}, m:reconstruct(x):shape())
      local u = VQVAE.usage(ids, 8)
      assert.is_true(u.perplexity >= 1 and u.perplexity <= 8)
      assert.equal(8, u.used + u.dead)
    end
  end)
end)
