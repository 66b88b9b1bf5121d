-- metrics/frechet.lua - the Fréchet distance between two Gaussians fitted to
-- features (FID's formula, on the penultimate features of a tide-trained
-- classifier instead of Inception's), and the symmetric eigen solver it
-- needs.
--
--   local d = metrics.frechet_distance(feat_real, feat_fake)      -- [N,F], [M,F]
--   local d = metrics.fid(clf, real_images, fake_images)          -- features from tide.classifier
--   local vals, vecs = metrics.sym_eigen(A)                       -- A [n,n] symmetric
--
--   d^2 = |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))
-- with tr (C1 C2)^(1/2) = tr (S C2 S)^(1/2), S = C1^(1/2): S C2 S is
-- symmetric positive semi-definite, so both square roots come from the
-- eigen-decomposition of a symmetric matrix (cyclic Jacobi rotations, in
-- double precision, in Lua: meant for F <= ~128 features, where a solve
-- takes milliseconds). Means and covariances come from engine matmuls.
local M = {}
local ffi = require("ffi")

-- n x n doubles from a tensor or nested Lua tables
local function to_doubles(a, n)
  local out = ffi.new("double[?]", n * n)
  if type(a) == "table" then
    for i = 1, n do for j = 1, n do out[(i - 1) * n + j - 1] = a[i][j] end end
  else
    local c = a:contiguous()
    for i = 0, n * n - 1 do out[i] = c.data[i] end
  end
  return out
end

local function size_of(a)
  if type(a) == "table" then return #a end
  if a.ndim ~= 2 or a:size(1) ~= a:size(2) then
    error("metrics.sym_eigen: expects a square matrix, got [" .. table.concat(a:shape(), ",") .. "]", 3)
  end
  return a:size(1)
end

-- Cyclic Jacobi on a (n x n doubles, symmetric, overwritten): returns the
-- eigenvalues (Lua list) and v (n x n doubles, eigenvectors as columns).
-- Each rotation J(p, q, theta) zeroes a_pq: with
--   theta = (a_qq - a_pp) / (2 a_pq),  t = sign(theta) / (|theta| + sqrt(theta^2 + 1)),
--   c = 1 / sqrt(t^2 + 1),  s = t c,
-- A <- J^T A J and V <- V J.
local function jacobi(a, n)
  local v = ffi.new("double[?]", n * n)
  for i = 0, n - 1 do v[i * n + i] = 1 end
  local scale = 0
  for i = 0, n * n - 1 do scale = scale + a[i] * a[i] end
  for _ = 1, 100 do
    local off = 0
    for p = 0, n - 2 do for q = p + 1, n - 1 do off = off + a[p * n + q] ^ 2 end end
    if off <= 1e-30 * scale or off == 0 then break end
    for p = 0, n - 2 do
      for q = p + 1, n - 1 do
        local apq = a[p * n + q]
        if apq ~= 0 then
          local theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
          local t = 1 / (math.abs(theta) + math.sqrt(theta * theta + 1))
          if theta < 0 then t = -t end
          local c = 1 / math.sqrt(t * t + 1)
          local s = t * c
          for k = 0, n - 1 do              -- columns p, q: A J
            local akp, akq = a[k * n + p], a[k * n + q]
            a[k * n + p] = c * akp - s * akq
            a[k * n + q] = s * akp + c * akq
          end
          for k = 0, n - 1 do              -- rows p, q: J^T (A J)
            local apk, aqk = a[p * n + k], a[q * n + k]
            a[p * n + k] = c * apk - s * aqk
            a[q * n + k] = s * apk + c * aqk
          end
          for k = 0, n - 1 do              -- V J
            local vkp, vkq = v[k * n + p], v[k * n + q]
            v[k * n + p] = c * vkp - s * vkq
            v[k * n + q] = s * vkp + c * vkq
          end
        end
      end
    end
  end
  local vals = {}
  for i = 0, n - 1 do vals[i + 1] = a[i * n + i] end
  return vals, v
end

-- Eigen-decomposition of a symmetric matrix (a tensor [n,n] or Lua rows):
-- -> eigenvalues (a Lua list, in no particular order), eigenvectors [n,n]
-- (a tensor, column i for value i).
function M.sym_eigen(a)
  local tide = require("tide")
  local n = size_of(a)
  local vals, v = jacobi(to_doubles(a, n), n)
  local t = tide.empty(n, n)
  for i = 0, n * n - 1 do t.data[i] = v[i] end
  return vals, t
end

-- sqrt of a symmetric PSD matrix (doubles n x n): V sqrt(max(L, 0)) V^T
local function sqrtm_psd(a, n)
  local vals, v = jacobi(a, n)
  local out = ffi.new("double[?]", n * n)
  for k = 0, n - 1 do
    local r = math.sqrt(math.max(vals[k + 1], 0))
    if r > 0 then
      for i = 0, n - 1 do
        local vik = v[i * n + k] * r
        for j = 0, n - 1 do out[i * n + j] = out[i * n + j] + vik * v[j * n + k] end
      end
    end
  end
  return out
end

-- a b (n x n doubles)
local function matmul(a, b, n)
  local out = ffi.new("double[?]", n * n)
  for i = 0, n - 1 do
    for k = 0, n - 1 do
      local aik = a[i * n + k]
      if aik ~= 0 then
        for j = 0, n - 1 do out[i * n + j] = out[i * n + j] + aik * b[k * n + j] end
      end
    end
  end
  return out
end

local function vec(x, n)
  local out = {}
  if type(x) == "table" then
    for i = 1, n do out[i] = x[i] end
  else
    local c = x:contiguous():reshape(-1)
    for i = 1, n do out[i] = c.data[i - 1] end
  end
  return out
end

-- The Fréchet distance (squared, as FID) between N(mu1, C1) and N(mu2, C2):
-- means as tensors [F] or Lua lists, covariances as tensors [F,F] or rows.
function M.frechet_gaussians(mu1, c1, mu2, c2)
  local n = size_of(c1)
  local m1, m2 = vec(mu1, n), vec(mu2, n)
  local a, b = to_doubles(c1, n), to_doubles(c2, n)
  local d = 0
  for i = 1, n do d = d + (m1[i] - m2[i]) ^ 2 end
  local tr = 0
  for i = 0, n - 1 do tr = tr + a[i * n + i] + b[i * n + i] end
  local s = sqrtm_psd(a, n)                        -- a is overwritten
  local vals = jacobi(matmul(matmul(s, b, n), s, n), n)
  local trsqrt = 0
  for _, l in ipairs(vals) do trsqrt = trsqrt + math.sqrt(math.max(l, 0)) end
  return d + tr - 2 * trsqrt
end

-- features [N,F] -> mean [F], covariance [F,F] (1/(N-1)), engine ops
function M.feature_stats(f)
  local tide = require("tide")
  return tide.no_grad(function()
    local mu = f:mean(1)
    local c = f - mu
    return mu, c:t():matmul(c) / (f:size(1) - 1)
  end)
end

-- The Fréchet distance between the Gaussians fitted to two feature sets.
function M.frechet_distance(f1, f2)
  local mu1, c1 = M.feature_stats(f1)
  local mu2, c2 = M.feature_stats(f2)
  return M.frechet_gaussians(mu1, c1, mu2, c2)
end

-- The Fréchet distance on a classifier's penultimate features (see
-- tide.classifier: clf:features(x), batched): real and fake [N, ...].
function M.fid(clf, real, fake, opts)
  local C = require("tide.classifier")
  return M.frechet_distance(C.features(clf, real, opts), C.features(clf, fake, opts))
end

return M
