"""The PyTorch side of the benchmarks: prints ref_ms=<median> (and extras)
for one case. bench/run starts it in PyTorch's fastest configuration
(OpenMP OpenBLAS on LD_LIBRARY_PATH); threads are set here.

    torch_bench.py conv N C H W COUT K S P XGRAD   F.conv2d with bias, forward + backward
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
BUDGET_MS = 1500.0


def median_ms(fn, budget_ms=BUDGET_MS):
    """Median time of fn() in ms: warm-up for ~0.2 s (at least 3 runs), then as
    many timed runs as fit in budget_ms (11 to 301, odd), like bench/bench.h."""
    t0, warm, est = time.perf_counter(), 0, 0.0
    while warm < 3 or time.perf_counter() - t0 < 0.2:
        s = time.perf_counter()
        fn()
        est = (time.perf_counter() - s) * 1e3
        warm += 1
    reps = int(budget_ms / est) if est > 0 else 301
    reps = min(max(reps, 11), 301) | 1
    times = []
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        times.append((time.perf_counter() - s) * 1e3)
    times.sort()
    return times[reps // 2]


def rnd(*shape, grad=False):
    return (torch.rand(*shape) * 2 - 1).requires_grad_(grad)


def conv(n, c, h, w, cout, k, s, p, xgrad):
    x, wt, b = rnd(n, c, h, w, grad=bool(xgrad)), rnd(cout, c, k, k, grad=True), rnd(cout, grad=True)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    g = rnd(n, cout, oh, ow)

    def fwd():
        with torch.no_grad():
            F.conv2d(x, wt, b, stride=s, padding=p)

    def step():
        F.conv2d(x, wt, b, stride=s, padding=p).backward(g)

    fwd_ms = median_ms(fwd, BUDGET_MS / 3)
    ms = median_ms(step)
    print("ref_ms=%.4f ref_fwd_ms=%.4f mkldnn=%d" % (ms, fwd_ms, torch.backends.mkldnn.is_available()))


def main(argv):
    if len(argv) >= 11 and argv[1] == "conv":
        conv(*(int(a) for a in argv[2:11]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
