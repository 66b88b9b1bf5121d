"""The PyTorch side of the cmvae benchmarks: one CMVAE training step
(forward, backward, Adam with amsgrad) on PolyMNIST-shaped inputs, 5
modalities, batch 128, 40 clusters, z and w of 32 dims, ELBO with one
sample, the same architectures and objective as lua/tide/models/cmvae.lua:

  light  per modality an MLP encoder 2352-256-256 -> heads (z and w) and an
         MLP decoder 64-256-256-2352, all modalities in one batched matmul
         per layer (torch.baddbmm)
  light_conv  light with a conv front end per modality (conv4x4/2 3->32,
         conv4x4/2 32->64, leaky ReLU, then 3136-256 -> heads): the main job's
  paper  the authors' PolyMNIST architecture (see polymnist_nets.lua):
         per modality two residual conv encoder branches and a residual
         conv decoder, leaky ReLU 0.2, 0.1-scaled residuals

Objective (written vectorized, as tide computes it): Laplace posteriors and
priors, the mixture prior's log p(z) = logsumexp_c [log pi_c + log p(z|c)],
q(z|X) the mixture of the M unimodal posteriors, cross-modal decodes with
w~_n ~ r_n, Laplace likelihood of scale 0.75, beta = 2.5.

Prints ref_ms=<median> ref_fwd_ms= ref_bwd_ms= ref_opt_ms= ref_params=
ref_peak_mb= (bench/run starts it with the OpenMP OpenBLAS on
LD_LIBRARY_PATH; 2 threads are set here). Timing as torch_bench.median_ms,
except for steps over 2 s: one warm-up run, then 3 timed runs.

    cmvae_torch.py light|light_conv|paper [steps]   (with steps: print the loss, no timing)
"""
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
M, B, C, ZD, WD, BETA, LIK = 5, 128, 40, 32, 32, 2.5, 0.75
SHAPE = (3, 28, 28)
P = 3 * 28 * 28
EPS = 1e-6


def positive(x):
    return F.softplus(x) + EPS


class Grouped(nn.Module):
    """G Linear layers at once: x [G,N,in] -> [G,N,out] (W [G,in,out])."""

    def __init__(self, g, nin, nout):
        super().__init__()
        b = 1 / math.sqrt(nin)
        self.weight = nn.Parameter((torch.rand(g, nin, nout) * 2 - 1) * b)
        self.bias = nn.Parameter((torch.rand(g, 1, nout) * 2 - 1) * b)

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


class LightEncoder(nn.Module):
    def __init__(self, h=256):
        super().__init__()
        self.l1, self.l2, self.head = Grouped(M, P, h), Grouped(M, h, h), Grouped(M, h, 2 * (ZD + WD))

    def forward(self, x):
        h = F.leaky_relu(self.l1(x.reshape(M, -1, P)), 0.2)
        o = self.head(F.leaky_relu(self.l2(h), 0.2))
        return (o[..., :ZD], positive(o[..., ZD:2 * ZD]), o[..., 2 * ZD:2 * ZD + WD], positive(o[..., 2 * ZD + WD:]))


class LightConvEncoder(nn.Module):
    """light_conv: per modality conv4x4/2 3->32, conv4x4/2 32->64 (leaky ReLU), then the grouped trunk."""

    def __init__(self, h=256):
        super().__init__()
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.LeakyReLU(0.2),
                                                 nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2)) for _ in range(M))
        self.l1, self.head = Grouped(M, 64 * 7 * 7, h), Grouped(M, h, 2 * (ZD + WD))

    def forward(self, x):
        hs = torch.stack([conv(x[m].reshape(-1, *SHAPE)).reshape(x.shape[1], -1) for m, conv in enumerate(self.convs)])
        o = self.head(F.leaky_relu(self.l1(hs), 0.2))
        return (o[..., :ZD], positive(o[..., ZD:2 * ZD]), o[..., 2 * ZD:2 * ZD + WD], positive(o[..., 2 * ZD + WD:]))


class LightDecoder(nn.Module):
    def __init__(self, h=256):
        super().__init__()
        self.l1, self.l2, self.out = Grouped(M, ZD + WD, h), Grouped(M, h, h), Grouped(M, h, P)

    def forward(self, zw):
        h = F.leaky_relu(self.l1(zw), 0.2)
        return self.out(F.leaky_relu(self.l2(h), 0.2))


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        hid = min(cin, cout)
        self.conv_0 = nn.Conv2d(cin, hid, 3, 1, 1)
        self.conv_1 = nn.Conv2d(hid, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1, 1, 0, bias=False) if cin != cout else None

    def forward(self, x):
        dx = self.conv_1(F.leaky_relu(self.conv_0(F.leaky_relu(x, 0.2)), 0.2))
        xs = self.shortcut(x) if self.shortcut is not None else x
        return xs + 0.1 * dx


class Branch(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, 1, 1)
        self.b1, self.b2, self.b3 = Block(64, 64), Block(64, 128), Block(128, 256)
        self.mu, self.scale = nn.Linear(256 * 49, d), nn.Linear(256 * 49, d)

    def forward(self, x):
        h = self.b1(self.conv(x))
        h = self.b2(F.avg_pool2d(h, 3, 2, 1))
        h = self.b3(F.avg_pool2d(h, 3, 2, 1))
        h = F.leaky_relu(h, 0.2).reshape(x.shape[0], -1)
        return self.mu(h), positive(self.scale(h))


class PaperEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.z = nn.ModuleList([Branch(ZD) for _ in range(M)])
        self.w = nn.ModuleList([Branch(WD) for _ in range(M)])

    def forward(self, x):
        out = [(self.z[m](x[m]), self.w[m](x[m])) for m in range(M)]
        return (torch.stack([o[0][0] for o in out]), torch.stack([o[0][1] for o in out]),
                torch.stack([o[1][0] for o in out]), torch.stack([o[1][1] for o in out]))


class Decoder1(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(ZD + WD, 256 * 49)
        self.b1, self.b2, self.b3 = Block(256, 128), Block(128, 64), Block(64, 64)
        self.conv = nn.Conv2d(64, 3, 3, 1, 1)

    def forward(self, zw):
        n = zw.shape[0]
        h = self.fc(zw).reshape(n, 256, 7, 7)
        h = F.interpolate(self.b1(h), scale_factor=2, mode="nearest")
        h = F.interpolate(self.b2(h), scale_factor=2, mode="nearest")
        return self.conv(F.leaky_relu(self.b3(h), 0.2)).reshape(n, -1)


class PaperDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.dec = nn.ModuleList([Decoder1() for _ in range(M)])

    def forward(self, zw):
        return torch.stack([self.dec[m](zw[m]) for m in range(M)])


def laplace_lp(x, loc, scale):
    return -torch.log(2 * scale) - (x - loc).abs() / scale


def std_laplace(shape):
    u = (torch.rand(shape) * 2 - 1).clamp(-1 + 1.1920929e-07, 1)
    return -torch.sign(u) * torch.log1p(-u.abs())


class CMVAE(nn.Module):
    def __init__(self, arch):
        super().__init__()
        self.r_rho = nn.Parameter(torch.full((M, 1, WD), math.log(math.e - 1)))
        self.cluster_logits = nn.Parameter(torch.zeros(C))
        self.cluster_locs = nn.Parameter(torch.rand(C, ZD) * 2 - 1)
        self.register_buffer("cluster_log_scales", torch.zeros(C, ZD))
        if arch == "paper":
            self.enc, self.dec = PaperEncoder(), PaperDecoder()
        elif arch == "light_conv":
            self.enc, self.dec = LightConvEncoder(), LightDecoder()
        else:
            self.enc, self.dec = LightEncoder(), LightDecoder()
        self.register_buffer("eye", torch.eye(M).reshape(M, 1, M, 1, 1).bool())

    def log_prior_z(self, z):  # Laplace mixture, [..., D] -> [...]
        lpi = F.log_softmax(self.cluster_logits, -1)
        scale = self.cluster_log_scales.exp()
        lpzc = laplace_lp(z.unsqueeze(-2), self.cluster_locs, scale).sum(-1)  # [..., C]
        return torch.logsumexp(lpi + lpzc, -1)

    def loss(self, x):  # x [M,B,3,28,28]
        K = 1
        mz, sz, mw, sw = self.enc(x)
        z = mz + sz * std_laplace((K, M, B, ZD))
        w = mw + sw * std_laplace((K, M, B, WD))
        wt = std_laplace((M, K, M, B, WD)) * positive(self.r_rho).reshape(M, 1, 1, 1, WD)
        own = w.permute(1, 0, 2, 3).reshape(M, K, 1, B, WD)
        wsel = torch.where(self.eye, own, wt)
        zsel = z.reshape(1, K, M, B, ZD).expand(M, K, M, B, ZD)
        zw = torch.cat([zsel, wsel], -1).reshape(M, K * M * B, ZD + WD)
        mean = self.dec(zw).reshape(M, K, M, B, P)
        xt = x.reshape(M, 1, 1, B, P)
        lpx = ((xt - mean).abs().sum(-1) * (-1 / LIK) - P * math.log(2 * LIK)).sum(0)  # [K,M,B]
        lqz = laplace_lp(z.reshape(K, M, 1, B, ZD), mz.reshape(1, 1, M, B, ZD), sz.reshape(1, 1, M, B, ZD))
        lqz = torch.logsumexp(lqz.sum(-1), 2) - math.log(M)
        lqw = laplace_lp(w, mw, sw).sum(-1)
        lpw = laplace_lp(w, torch.zeros(()), torch.ones(())).sum(-1)
        lpz = self.log_prior_z(z)
        lw = lpx + BETA * (lpz + lpw - lqz - lqw)
        return -lw.mean()


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def timed(fn):
    """Median ms: torch_bench.median_ms's rule, or 1 warm-up + 3 runs for slow steps."""
    s = time.perf_counter()
    fn()
    est = (time.perf_counter() - s) * 1e3
    if est > 2000:
        reps = 3
    else:
        t0, warm = time.perf_counter(), 1
        while warm < 3 or time.perf_counter() - t0 < 0.2:
            s = time.perf_counter()
            fn()
            est = (time.perf_counter() - s) * 1e3
            warm += 1
        reps = min(max(int(1500 / est), 11), 301) | 1
    for _ in range(reps):
        fn(True)
    return reps


def main(argv):
    arch = argv[1] if len(argv) > 1 else "light"
    torch.manual_seed(0)
    model = CMVAE(arch)
    x = torch.rand(M, B, *SHAPE)
    nparams = sum(p.numel() for p in model.parameters())
    if len(argv) > 2:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
        for _ in range(int(argv[2])):
            opt.zero_grad(set_to_none=True)
            loss = model.loss(x)
            loss.backward()
            opt.step()
        print("loss=%.6f" % loss.item())
        return 0
    results = {}
    for name, foreach in (("single", False), ("foreach", True)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True, foreach=foreach)
        ph = {"all": [], "fwd": [], "bwd": [], "opt": []}

        def step(record=False):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = model.loss(x)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if record:
                for k, v in (("all", t3 - t0), ("fwd", t1 - t0), ("bwd", t2 - t1), ("opt", t3 - t2)):
                    ph[k].append(v * 1e3)

        reps = timed(step)
        results[name] = ({k: sorted(v)[len(v) // 2] for k, v in ph.items()}, reps)
        del opt
        if arch == "paper":
            break  # one optimizer variant: a step takes tens of seconds
    best = min(results.values(), key=lambda r: r[0]["all"])
    med, reps = best
    print("ref_ms=%.3f ref_fwd_ms=%.3f ref_bwd_ms=%.3f ref_opt_ms=%.3f ref_params=%d ref_peak_mb=%.1f ref_reps=%d"
          % (med["all"], med["fwd"], med["bwd"], med["opt"], nparams, peak_mb(), reps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
