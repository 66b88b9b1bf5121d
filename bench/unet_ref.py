"""The PyTorch side of the unet_train / unet_sample benchmarks: the UNet of
lua/tide/models/unet.lua (base 32, mults 1,2, 8 groups: 583,713 parameters
for one channel), module for module, so that tide's state_dict names map
one to one (ModuleLists count from 0 here, from 1 in tide).

    unet_ref.py train    one DDPM training step, batch 64 at 28x28: q_sample at
                         random steps, eps-MSE, backward, Adam (grads set to None)
    unet_ref.py sample   one DDIM step (eta 0), batch 64: UNet forward without
                         gradients, x0 estimate clipped, the update
Prints ref_ms=<median> ref_peak_mb=<VmHWM>. bench/run starts it with the
OpenMP OpenBLAS on LD_LIBRARY_PATH; 2 threads ($BENCH_THREADS overrides).
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000.0):
    """[sin | cos] of t * max_period^(-i/(half-1)), as td_timestep_embedding."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * i / max(half - 1, 1))
    a = t.float()[:, None] * freqs[None]
    e = torch.cat([torch.sin(a), torch.cos(a)], dim=1)
    if dim % 2:
        e = F.pad(e, (0, 1))
    return e


class GNS(nn.Module):
    def __init__(self, groups, c):
        super().__init__()
        g = min(groups, c)
        while c % g:
            g -= 1
        self.groups = g
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x, temb=None):
        if temb is not None:
            x = x + temb[:, :, None, None]
        return F.silu(F.group_norm(x, self.groups, self.weight, self.bias, 1e-5))


class Res(nn.Module):
    def __init__(self, cin, cout, tdim, groups):
        super().__init__()
        self.norm1 = GNS(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = GNS(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, st):
        h = self.conv1(self.norm1(x))
        h = self.conv2(self.norm2(h, self.temb(st)))
        return (self.skip(x) if self.skip is not None else x) + h


class Attn(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, c), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).permute(1, 0, 3, 2)
        q, k, v = qkv[0], qkv[1], qkv[2]
        p = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)
        a = (p @ v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj(a)


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.empty(cout))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(cin * 9)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), self.weight, self.bias, padding=1)


class UNet(nn.Module):
    def __init__(self, in_channels=1, cond_channels=0, base=32, mults=(1, 2), groups=8, temb=None):
        super().__init__()
        C, Cc, b, g = in_channels, cond_channels, base, groups
        td = temb or 4 * b
        self.temb_in = b
        self.time1 = nn.Linear(b, td)
        self.time2 = nn.Linear(td, td)
        self.inc = nn.Conv2d(C + Cc, b, 3, 1, 1)
        self.downs, self.downconv = nn.ModuleList(), nn.ModuleList()
        chans, c = [], b
        for m in mults:
            self.downs.append(Res(c, b * m, td, g))
            c = b * m
            chans.append(c)
            self.downconv.append(nn.Conv2d(c, c, 3, 2, 1))
        self.mid1 = Res(c, c, td, g)
        self.attn = Attn(c, g)
        self.mid2 = Res(c, c, td, g)
        self.ups, self.upconv = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(mults))):
            self.upconv.append(Up(c, c))
            cout = b * mults[i]
            self.ups.append(Res(c + chans[i], cout, td, g))
            c = cout
        self.outnorm = GNS(g, c)
        self.outc = nn.Conv2d(c, C, 3, 1, 1)

    def forward(self, x, t, cond=None):
        if cond is not None:
            x = torch.cat([x, cond], 1)
        st = F.silu(self.time2(F.silu(self.time1(timestep_embedding(t, self.temb_in)))))
        h = self.inc(x)
        skips = []
        for res, down in zip(self.downs, self.downconv):
            h = res(h, st)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.attn(self.mid1(h, st)), st)
        for up, res in zip(self.upconv, self.ups):
            h = res(torch.cat([up(h), skips.pop()], 1), st)
        return self.outc(self.outnorm(h))


def tide_name(name):
    """PyTorch state_dict name -> tide's (ModuleList indices from 1)."""
    parts = name.split(".")
    return ".".join(str(int(p) + 1) if p.isdigit() else p for p in parts)


def linear_abar(T=1000):
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv):
    from torch_bench import median_ms

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    B, T = 64, 1000
    net = UNet()
    abar = linear_abar(T)
    x0 = torch.rand(B, 1, 28, 28) * 2 - 1
    mode = argv[1] if len(argv) > 1 else "train"
    if mode == "train":
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            t = torch.randint(0, T, (B,))
            eps = torch.randn_like(x0)
            a = abar[t].view(B, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
            loss = F.mse_loss(net(xt, t.float()), eps)
            loss.backward()
            opt.step()
    elif mode == "sample":
        x = torch.randn(B, 1, 28, 28)
        t, s = 500, 480
        ab, abs_ = float(abar[t]), float(abar[s])
        tt = torch.full((B,), float(t))

        def step():
            with torch.no_grad():
                eps = net(x, tt)
                x0h = ((x - eps * math.sqrt(1 - ab)) / math.sqrt(ab)).clamp(-1, 1)
                e = (x - x0h * math.sqrt(ab)) / math.sqrt(1 - ab)
                return x0h * math.sqrt(abs_) + e * math.sqrt(1 - abs_)
    else:
        raise SystemExit("unet_ref.py train|sample")
    ms = median_ms(step)
    print("ref_ms=%.4f ref_peak_mb=%.1f" % (ms, peak_mb()))


if __name__ == "__main__":
    main(sys.argv)
