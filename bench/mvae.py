"""The PyTorch side of the mvae benchmark: one training step (forward,
backward, Adam) of the MVAE (Wu & Goodman 2018) on image + label, batch 128:
    image  encoder 784-512-512 -> 20 (mu, logvar), decoder 20-512-512-784, Bernoulli
    label  encoder 10-64-64 -> 20, decoder 20-64-64-10, categorical
product of Gaussian experts with the prior expert; loss = -(ELBO(x, y) +
ELBO(x) + ELBO(y)) averaged over the batch, one sample per ELBO. Two ways:
"wu" as in Wu & Goodman's code (three PoE calls, each decoder run per term),
"batched" as tide.models.mvae (the three products stacked in one call, each
decoder run once on the samples of the terms that hold its modality); each
with Adam's single-tensor and foreach paths. ref_ms is the fastest of the four.
Prints ref_ms=<median> ref_wu_ms= ref_batched_ms= ref_peak_mb=<VmHWM>.
bench/run starts it with the OpenMP OpenBLAS on LD_LIBRARY_PATH; 2 threads are set here.

    mvae.py [steps]   (with steps: print the loss after that many steps, no timing)
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_bench import median_ms

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
B, Z = 128, 20


class Encoder(nn.Module):
    def __init__(self, nin, hidden):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(nin, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, Z)
        self.logvar = nn.Linear(hidden, Z)

    def forward(self, x):
        h = self.body(x)
        return self.mu(h), self.logvar(h)


def decoder(nout, hidden):
    return nn.Sequential(nn.Linear(Z, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, nout))


def poe(mu, logvar):
    """Experts [E,B,Z] (the prior expert included by the caller): closed form."""
    prec = torch.exp(-logvar)
    var = 1.0 / prec.sum(0)
    return (mu * prec).sum(0) * var, torch.log(var)


def kl(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), -1)


class MVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc_x, self.enc_y = Encoder(784, 512), Encoder(10, 64)
        self.dec_x, self.dec_y = decoder(784, 512), decoder(10, 64)

    def rec_x(self, z, x):
        return -F.binary_cross_entropy_with_logits(self.dec_x(z), x, reduction="none").sum(-1)

    def rec_y(self, z, y):
        return (torch.log_softmax(self.dec_y(z), -1) * y).sum(-1)

    def loss_wu(self, x, y):
        mx, lx = self.enc_x(x)
        my, ly = self.enc_y(y)
        zero = torch.zeros_like(mx)
        total = 0
        for experts, use_x, use_y in (((mx, my), True, True), ((mx,), True, False), ((my,), False, True)):
            lvs = (lx, ly) if len(experts) == 2 else ((lx,) if use_x else (ly,))
            mu, lv = poe(torch.stack((zero,) + experts), torch.stack((zero,) + lvs))
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            elbo = -kl(mu, lv)
            if use_x:
                elbo = elbo + self.rec_x(z, x)
            if use_y:
                elbo = elbo + self.rec_y(z, y)
            total = total + elbo
        return -total.mean()

    def loss_batched(self, x, y):
        mx, lx = self.enc_x(x)
        my, ly = self.enc_y(y)
        # subsets {x,y}, {x}, {y} stacked: experts [3 (prior, x, y), 3B, Z], masked
        zero = torch.zeros(B, Z)
        mu = torch.stack((torch.cat((zero, zero, zero)), torch.cat((mx, mx, mx)), torch.cat((my, my, my))))
        lv = torch.stack((torch.cat((zero, zero, zero)), torch.cat((lx, lx, lx)), torch.cat((ly, ly, ly))))
        mask = self.mask
        prec = torch.exp(-lv) * mask
        var = 1.0 / prec.sum(0)
        qm, qlv = (mu * prec).sum(0) * var, torch.log(var)
        z = qm + torch.exp(0.5 * qlv) * torch.randn_like(qm)
        elbo = -kl(qm, qlv).view(3, B).sum(0)
        elbo = elbo + self.rec_x(z[:2 * B], x.repeat(2, 1)).view(2, B).sum(0)
        zy = torch.cat((z[:B], z[2 * B:]))
        elbo = elbo + self.rec_y(zy, y.repeat(2, 1)).view(2, B).sum(0)
        return -elbo.mean()


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def make_step(model, loss_fn, x, y, foreach):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=foreach)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        return loss
    return step


def main(argv):
    torch.manual_seed(0)
    model = MVAE()
    # masks of the batched products: prior always, x in {x,y} and {x}, y in {x,y} and {y}
    one, nil = torch.ones(B, 1), torch.zeros(B, 1)
    model.mask = torch.stack((torch.cat((one, one, one)), torch.cat((one, one, nil)), torch.cat((one, nil, one))))
    x = torch.rand(B, 784)
    y = F.one_hot(torch.randint(0, 10, (B,)), 10).float()
    if len(argv) > 1:
        step = make_step(model, model.loss_batched, x, y, True)
        for _ in range(int(argv[1])):
            loss = step()
        print("loss=%.6f" % loss.item())
        return 0
    ms = {}
    for name, fn in (("wu", model.loss_wu), ("batched", model.loss_batched)):
        for foreach in (False, True):
            step = make_step(model, fn, x, y, foreach)
            ms[(name, foreach)] = median_ms(step, 750.0)
            del step
    wu = min(ms[("wu", False)], ms[("wu", True)])
    batched = min(ms[("batched", False)], ms[("batched", True)])
    print("ref_ms=%.4f ref_wu_ms=%.4f ref_batched_ms=%.4f ref_peak_mb=%.1f" %
          (min(wu, batched), wu, batched, peak_mb()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
