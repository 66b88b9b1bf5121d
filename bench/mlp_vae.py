"""The PyTorch side of the mlp_vae benchmark: one training step (forward,
backward, Adam) of an MLP VAE on a batch of 128 784-d inputs in [0, 1]:
encoder 784-512-512 -> (mu, logvar) of a 20-d Gaussian, decoder
20-512-512-784 with Bernoulli logits; loss = (sum BCE-with-logits + KL) / 128.
Prints ref_ms=<median> and ref_peak_mb=<VmHWM at the end>. bench/run starts
it with the OpenMP OpenBLAS on LD_LIBRARY_PATH; 2 threads are set here
($BENCH_THREADS overrides).

    mlp_vae.py [steps]   (with steps: print the loss after that many steps, no timing)
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_bench import median_ms

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
B, D, H, Z = 128, 784, 512, 20


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU())
        self.mu = nn.Linear(H, Z)
        self.logvar = nn.Linear(H, Z)
        self.dec = nn.Sequential(nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, D))

    def loss(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu * mu - logvar.exp())
        return (rec + kl) / x.shape[0]


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def make_step(model, x, foreach):
    # grads set to None (no memset, no accumulation pass): torch's fastest
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=foreach)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        return loss
    return step


def main(argv):
    torch.manual_seed(0)
    model = VAE()
    x = torch.rand(B, D)
    if len(argv) > 1:
        step = make_step(model, x, False)
        for _ in range(int(argv[1])):
            loss = step()
        print("loss=%.6f" % loss.item())
        return 0
    # Adam's single-tensor and foreach paths, one after the other (one
    # optimizer state alive at a time): the faster one is the reference
    ms = {}
    for name, foreach in (("single", False), ("foreach", True)):
        step = make_step(model, x, foreach)
        ms[name] = median_ms(step, 1000.0)
        del step
    print("ref_ms=%.4f ref_single_ms=%.4f ref_foreach_ms=%.4f ref_peak_mb=%.1f" %
          (min(ms.values()), ms["single"], ms["foreach"], peak_mb()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
