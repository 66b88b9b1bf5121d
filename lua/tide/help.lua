-- help.lua - one-line docs: tide.help(fn_or_name). Names without an entry
-- here fall back to their C declaration in tide.h.
local B = require("tide_ffi")

local M = {}

-- name -> "usage -- what it does". Axes are 1-based, negative from the end.
local DOCS = {
  -- making tensors
  from_table = "tide.from_table(tbl [, shape]) -> nested tables of numbers as a tensor (a number -> 0-d)",
  tensor = "tide.tensor(tbl) -> same as tide.from_table",
  zeros = "tide.zeros(d1, d2, ...) or tide.zeros{d1, d2} -> tensor of zeros",
  ones = "tide.ones(d1, d2, ...) -> tensor of ones",
  empty = "tide.empty(d1, d2, ...) -> uninitialized tensor",
  full = "tide.full(d1, ..., value) or tide.full({d1, ...}, value) -> tensor filled with value",
  arange = "tide.arange(n) = 0..n-1; tide.arange(start, stop [, step]) -> 1-d tensor without stop",
  rand = "tide.rand(d1, d2, ...) -> uniform [0,1) samples (seeded by tide.manual_seed)",
  randn = "tide.randn(d1, d2, ...) -> standard normal samples",
  manual_seed = "tide.manual_seed(seed) -> seeds the counter-based generator (same numbers for any thread count)",
  zeros_like = "tide.zeros_like(t) -> zeros of t's shape (also ones_like, full_like, rand_like, randn_like)",
  scalar = "tide.scalar(x) -> 0-d tensor",
  cat = "tide.cat({t1, t2, ...}, axis=1) -> tensors joined along an existing axis",
  concat = "tide.concat({t1, t2, ...}, axis=1) -> same as tide.cat",
  stack = "tide.stack({t1, t2, ...}, axis=1) -> tensors joined along a new axis",
  -- grad mode and memory
  no_grad = "tide.no_grad(fn, ...) -> runs fn without recording gradients; the mode is restored on error",
  enable_grad = "tide.enable_grad(fn, ...) -> runs fn with gradients recorded",
  is_grad_enabled = "tide.is_grad_enabled() -> boolean",
  memory = "tide.memory() -> {in_use, peak, cached, live_tensors, gc_runs} of the engine's memory",
  gc_config = "tide.gc_config{min_bytes=, ratio=} -> when the binding runs the Lua GC for C memory",
  help = "tide.help(fn_or_name) -> prints a one-line doc",
  set_printoptions = "tide.set_printoptions{precision=4, threshold=1000, edgeitems=3, linewidth=80}",
  is_tensor = "tide.is_tensor(x) -> true if x is a tide tensor",
  -- geometry
  shape = "t:shape() -> Lua table of sizes; t.ndim and t.numel are fields",
  size = "t:size(i) -> size of axis i (1-based, negative from the end); t:size() = t:shape()",
  stride = "t:stride(i) -> stride of axis i in elements; t:stride() -> table",
  dim = "t:dim() -> number of axes (same as t.ndim)",
  nelement = "t:nelement() -> number of elements (same as t.numel)",
  reshape = "t:reshape(d1, d2, ...) or t:reshape{...} -> view (copy if not contiguous); one size may be -1",
  view = "t:view(...) -> same as t:reshape",
  flatten = "t:flatten() -> 1-d view",
  t = "t:t() -> transpose of a 2-d tensor (a view)",
  transpose = "t:transpose(a, b) -> view with axes a and b swapped",
  permute = "t:permute(a1, a2, ...) -> view with the axes reordered",
  narrow = "t:narrow(axis, start, length) -> view of length entries from 1-based start",
  expand = "t:expand(d1, d2, ...) -> broadcast view (size-1 axes repeated)",
  unsqueeze = "t:unsqueeze(i) -> view with a new axis of size 1 at position i",
  squeeze = "t:squeeze([i]) -> view without axis i (or all axes) of size 1",
  contiguous = "t:contiguous() -> t itself if contiguous, else a contiguous copy",
  clone = "t:clone() -> a copy (differentiable)",
  detach = "t:detach() -> same data, cut from the graph",
  -- elements and tables
  item = "t:item() -> the number held by a one-element tensor",
  at = "t:at(i, j, ...) -> the element at 1-based indices",
  to_table = "t:to_table() -> nested Lua tables (a 0-d tensor -> number)",
  fill = "t:fill(v) -> fills t in place, returns t (not recorded by autograd)",
  copy_ = "t:copy_(src) -> copies src's values into t in place, returns t (not recorded)",
  -- autograd
  requires_grad = "t:requires_grad() -> boolean; t:requires_grad(flag) -> sets it on a leaf, returns t",
  backward = "t:backward([grad]) -> accumulates gradients into the leaves (grad needed unless t has one element)",
  grad = "t:grad() -> the accumulated gradient, or nil",
  zero_grad = "t:zero_grad() -> zeroes the accumulated gradient, returns t",
  set_grad = "t:set_grad(g) -> replaces the gradient (g contiguous, same shape, or nil)",
  -- arithmetic
  add = "a + b, t:add(b) -> elementwise sum with broadcasting (numbers allowed on either side)",
  sub = "a - b, t:sub(b) -> elementwise difference with broadcasting",
  mul = "a * b, t:mul(b) -> elementwise product with broadcasting",
  div = "a / b, t:div(b) -> elementwise quotient with broadcasting",
  pow = "a ^ b, t:pow(b) -> elementwise power with broadcasting",
  neg = "-t, t:neg() -> negation",
  maximum = "t:maximum(b) -> elementwise max with broadcasting",
  minimum = "t:minimum(b) -> elementwise min with broadcasting",
  where = "tide.where(cond, a, b) -> a where cond ~= 0, else b",
  eq = "t:eq(b) -> 1 where equal, 0 elsewhere (also ne, lt, le, gt, ge; no gradient)",
  add_scalar = "t:add_scalar(s) -> t + s",
  mul_scalar = "t:mul_scalar(s) -> t * s",
  pow_scalar = "t:pow_scalar(p) -> t ^ p",
  rpow_scalar = "tide.rpow_scalar(base, t) -> base ^ t",
  clamp = "t:clamp(lo [, hi]) -> values clamped to [lo, hi]",
  -- unary
  exp = "t:exp()", log = "t:log()", log1p = "t:log1p() -> log(1 + t)", expm1 = "t:expm1() -> exp(t) - 1",
  sqrt = "t:sqrt()", rsqrt = "t:rsqrt() -> 1 / sqrt(t)", abs = "t:abs()", square = "t:square()",
  relu = "t:relu()", leaky_relu = "t:leaky_relu(slope=0.01)", sigmoid = "t:sigmoid()", tanh = "t:tanh()",
  softplus = "t:softplus() -> log(1 + exp(t))", silu = "t:silu() -> t * sigmoid(t)", gelu = "t:gelu()",
  -- reductions
  sum = "t:sum([axes [, keepdim]]) -> sum over axes (an axis, a table of axes, or nil for all)",
  mean = "t:mean([axes [, keepdim]]) -> mean over axes",
  var = "t:var([axes [, correction=1 [, keepdim]]]) -> variance over axes",
  logsumexp = "t:logsumexp([axes [, keepdim]]) -> log(sum(exp(t))) over axes, stably",
  max = "t:max([axis [, keepdim]]) -> maximum over an axis, or over all elements",
  argmax = "t:argmax([axis [, keepdim]]) -> 0-based index of the maximum (over all: of the flattened tensor)",
  softmax = "t:softmax(axis=-1)",
  log_softmax = "t:log_softmax(axis=-1)",
  -- linear algebra and networks
  matmul = "a:matmul(b) -> a [..., n, k] @ b [..., k, m], batch dims broadcast",
  linear = "x:linear(w [, b]) -> x [..., in] @ w[out, in]^T + b",
  conv2d = "x:conv2d(w [, b [, stride=1 [, pad=0]]]) -> NCHW convolution",
  group_norm = "x:group_norm(groups [, w [, b [, eps=1e-5]]])",
}

-- The name of a function in the tide namespace or among the Tensor methods.
local function name_of(fn)
  local tide = package.loaded["tide"]
  if type(tide) == "table" then
    for k, v in pairs(tide) do if v == fn then return k end end
    if type(tide.Tensor) == "table" then
      for k, v in pairs(tide.Tensor) do if v == fn then return k end end
    end
  end
  for k, v in pairs(B.wrappers) do if v == fn then return k end end
  return nil
end

-- The one-line doc of a function or name, or nil.
function M.doc(x)
  local name = x
  if type(x) == "function" then name = name_of(x) end
  if type(name) ~= "string" then return nil end
  name = name:gsub("^tide%.", ""):gsub("^Tensor[:.]", ""):gsub("^t:", "")
  if DOCS[name] then return DOCS[name] end
  local sig = B.signature(name)
  if sig then
    local f = B.info[name]
    return (f.method and "t:" or "tide.") .. name .. "(...) -> generated from the C declaration: " .. sig
  end
  return nil
end

-- Prints the one-line doc of a function or name (or the list of names).
function M.help(x)
  if x == nil then
    local names = {}
    for k in pairs(DOCS) do names[#names + 1] = k end
    table.sort(names)
    print("tide.help(fn_or_name) for one of: " .. table.concat(names, " ") ..
          "\nAxes are 1-based (negative counts from the end). See docs/lua.md.")
    return
  end
  print(M.doc(x) or ("no help for " .. tostring(x)))
end

M.DOCS = DOCS
return M
