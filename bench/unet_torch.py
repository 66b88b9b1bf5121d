"""The PyTorch side of the UNet kernel benchmarks (bench/unet.c is tide's):
prints ref_ms=<median> for forward + backward and ref_fwd_ms=<median> for the
forward alone. bench/run starts it in PyTorch's fastest configuration (OpenMP
OpenBLAS on LD_LIBRARY_PATH); threads are set here.

    unet_torch.py gns N C H W G          F.silu(F.group_norm(x, G, w, b))
    unet_torch.py gns_temb N C H W G     the same of x + temb[:, :, None, None]
    unet_torch.py attention B H L D      softmax(q k^T / sqrt(D)) v (1.13 has no F.scaled_dot_product_attention)
    unet_torch.py upconv N C H W COUT    F.conv2d(F.interpolate(x, scale_factor=2), w, b, padding=1)

x, weight, bias (temb, q, k, v) all take gradients, as on tide's side.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import BUDGET_MS, median_ms, rnd  # noqa: E402  (sets 2 threads)

if os.environ.get("OMP_NUM_THREADS"):  # to compare at one thread: OMP_NUM_THREADS=1 on both sides
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def report(step, fwd):
    fwd_ms = median_ms(fwd, BUDGET_MS / 3)
    ms = median_ms(step)
    print("ref_ms=%.4f ref_fwd_ms=%.4f" % (ms, fwd_ms))


def gns(n, c, h, w, groups, temb=False):
    x = (rnd(n, c, h, w) * 2 + 0.5).requires_grad_(True)
    wt, b = (rnd(c) * 0.2 + 1).requires_grad_(True), (rnd(c) * 0.2).requires_grad_(True)
    t = rnd(n, c, grad=True) if temb else None
    g = rnd(n, c, h, w)

    def f():
        u = x + t[:, :, None, None] if temb else x
        return F.silu(F.group_norm(u, groups, wt, b, 1e-5))

    def fwd():
        with torch.no_grad():
            f()

    report(lambda: f().backward(g), fwd)


def attention(b, h, length, d):
    q, k, v = (rnd(b, h, length, d, grad=True) for _ in range(3))
    g = rnd(b, h, length, d)

    def f():
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v

    def fwd():
        with torch.no_grad():
            f()

    report(lambda: f().backward(g), fwd)


def upconv(n, c, h, w, cout):
    x, wt, b = rnd(n, c, h, w, grad=True), (rnd(cout, c, 3, 3) * 0.1).requires_grad_(True), rnd(cout, grad=True)
    g = rnd(n, cout, 2 * h, 2 * w)

    def f():
        return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), wt, b, padding=1)

    def fwd():
        with torch.no_grad():
            f()

    report(lambda: f().backward(g), fwd)


def main(argv):
    if len(argv) == 7 and argv[1] in ("gns", "gns_temb"):
        gns(*(int(a) for a in argv[2:7]), temb=argv[1] == "gns_temb")
        return 0
    if len(argv) == 7 and argv[1] == "upconv":
        upconv(*(int(a) for a in argv[2:7]))
        return 0
    if len(argv) == 6 and argv[1] == "attention":
        attention(*(int(a) for a in argv[2:6]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
