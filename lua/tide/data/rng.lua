-- tide.data.rng - the loaders' own random numbers: splitmix64 (Steele,
-- Lea, Flood, "Fast splittable pseudorandom number generators", OOPSLA
-- 2014) on 64-bit FFI integers. A stream is keyed by a seed and a few
-- numbers (epoch, purpose, batch), so any batch of any epoch can be
-- recomputed alone: shuffles and masks depend on (seed, epoch, batch) only,
-- never on tide.manual_seed or on how many numbers were drawn before.
local ffi = require("ffi")
local bit = require("bit")

local bxor, rshift = bit.bxor, bit.rshift
local u64 = ffi.typeof("uint64_t")
local i64 = ffi.typeof("int64_t")
local GOLDEN = 0x9E3779B97F4A7C15ULL
local M1, M2 = 0xBF58476D1CE4E5B9ULL, 0x94D049BB133111EBULL
local TWO_M53 = 2 ^ -53

local function mix64(z)
  z = (bxor(z, rshift(z, 30))) * M1
  z = (bxor(z, rshift(z, 27))) * M2
  return bxor(z, rshift(z, 31))
end

local function to_u64(x)
  if type(x) == "number" then
    if x ~= math.floor(x) then error("rng: keys must be whole numbers, got " .. x, 3) end
    return ffi.cast(u64, ffi.cast(i64, x))
  end
  return ffi.cast(u64, x)
end

local Rng = {}
Rng.__index = Rng

-- Rng(seed, k1, k2, ...): an independent stream per key tuple.
local function new(seed, ...)
  local h = mix64(to_u64(seed) + GOLDEN)
  for i = 1, select("#", ...) do
    h = mix64(bxor(h, mix64(to_u64(select(i, ...)) + GOLDEN * (i + 1))))
  end
  return setmetatable({s = h}, Rng)
end

function Rng:u64()
  local s = self.s + GOLDEN
  self.s = s
  return mix64(s)
end

-- Uniform in [0, 1) with 53 random bits.
function Rng:uniform()
  local s = self.s + GOLDEN
  self.s = s
  return tonumber(rshift(mix64(s), 11)) * TWO_M53
end

-- Uniform whole number in [0, n) (bias below n / 2^53).
function Rng:below(n)
  return math.floor(self:uniform() * n)
end

-- Fisher-Yates into a float buffer: buf[0 .. n-1] becomes a permutation
-- of 0 .. n-1.
function Rng:permutation_into(buf, n)
  for i = 0, n - 1 do buf[i] = i end
  local s = self.s
  for i = n - 1, 1, -1 do
    s = s + GOLDEN
    local j = math.floor(tonumber(rshift(mix64(s), 11)) * TWO_M53 * (i + 1))
    buf[i], buf[j] = buf[j], buf[i]
  end
  self.s = s
end

return {new = new, Rng = Rng}
