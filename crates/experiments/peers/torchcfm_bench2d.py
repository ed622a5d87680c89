"""torchcfm's OT-CFM in the published 2D setting, for a like-with-like comparison with `ferroflow bench2d`.

The data sets are generated with the definitions of reference.md (the same laws as ferroflow's samplers), the
setting is the published one (torchcfm.models.MLP(dim=2, w=64, time_varying=True): 3 hidden SELU layers of 64;
AdamW lr 1e-3 with PyTorch's defaults; batch 512; sigma 0.1; ExactOptimalTransportConditionalFlowMatcher), and
an exponential moving average of the weights (decay 0.999) is kept beside the last weights. Sampling uses 100
Euler steps from 10,000 fresh source points, summing the path energy per step as `ferroflow bench2d` does.

Usage: python3 torchcfm_bench2d.py TASK SEED STEPS OUT_DIR
  TASK: gaussian-8gaussians, moons-8gaussians, gaussian-moons or gaussian-scurve.
Writes OUT_DIR/{x0,target,last_x1,ema_x1}.npy and OUT_DIR/energy.json ({"last": E, "ema": E, "train_s": s}).
Measure with ferroflow: `ferroflow w2 --a last_x1.npy --b target.npy` (W2 of the samples),
`ferroflow w2 --a x0.npy --b last_x1.npy` (the straight optimal paths' energy to the flow's own samples, for the
excess), and the NPE against the task's W2(source, target)^2 from the bench2d report.
"""
import copy
import json
import os
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher
from torchcfm.models.models import MLP

task, seed, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(seed)
rng = np.random.default_rng(1000 + seed)


def as_tensor(x):
    return torch.tensor(x, dtype=torch.float32)


def gaussian(n):
    return as_tensor(rng.standard_normal((n, 2)))


def eight_gaussians(n):
    k = rng.integers(0, 8, n)
    centres = 5 * np.stack([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)], 1)
    return as_tensor(centres + 0.1**0.25 * rng.standard_normal((n, 2)))


def moons(n):
    a = rng.uniform(0, np.pi, n)
    upper = (rng.uniform(size=n) < 0.5)[:, None]
    x = np.where(upper, np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(a), 0.5 - np.sin(a)], 1))
    return as_tensor(3 * (x + 0.1 * rng.standard_normal((n, 2))) - 1)


def scurve(n):
    a = rng.uniform(-1.5 * np.pi, 1.5 * np.pi, n)
    x = np.stack([np.sin(a), np.sign(a) * (np.cos(a) - 1)], 1) + 0.05 * rng.standard_normal((n, 2))
    return as_tensor(1.5 * x)


source, target = {
    "gaussian-8gaussians": (gaussian, eight_gaussians),
    "moons-8gaussians": (moons, eight_gaussians),
    "gaussian-moons": (gaussian, moons),
    "gaussian-scurve": (gaussian, scurve),
}[task]

model = MLP(dim=2, w=64, time_varying=True)
ema = copy.deepcopy(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)
started = time.time()
for _ in range(steps):
    optimizer.zero_grad()
    t, xt, ut = matcher.sample_location_and_conditional_flow(source(512), target(512))
    loss = ((model(torch.cat([xt, t[:, None]], -1)) - ut) ** 2).mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for averaged, current in zip(ema.parameters(), model.parameters()):
            averaged.mul_(0.999).add_(current, alpha=0.001)
train_s = time.time() - started

os.makedirs(out, exist_ok=True)
x0 = source(10000)
energies = {"train_s": train_s}
for name, net in [("last", model), ("ema", ema)]:
    x, energy = x0.clone(), 0.0
    with torch.no_grad():
        for k in range(100):
            v = net(torch.cat([x, torch.full((len(x), 1), k / 100)], -1))
            energy += (v**2).sum(1).mean().item() / 100
            x = x + v / 100
    np.save(os.path.join(out, f"{name}_x1.npy"), x.numpy())
    energies[name] = energy
np.save(os.path.join(out, "x0.npy"), x0.numpy())
np.save(os.path.join(out, "target.npy"), target(10000).numpy())
with open(os.path.join(out, "energy.json"), "w") as f:
    json.dump(energies, f)
print(json.dumps(energies))
