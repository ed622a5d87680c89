"""Meta's flow_matching 1.0.10 Riemannian flow matching, side by side with `ferroflow bench riemannian`.

The bench writes the data (so both programs train on the same law and are measured by the same code):
  DIR/settings.json  {"manifold": "sphere"|"torus", "width", "depth", "lr", "steps", "batch_size", "seed",
                      "coupling": "independent"|"exact_ot", "ode_steps", "threads" (0: torch's default)}
  DIR/x0_pool.npy    steps * batch_size source points (uniform on the manifold), float32
  DIR/x1_pool.npy    steps * batch_size target points, float32
  DIR/x0_eval.npy    the source points ferroflow's `eval` integrates from, float32
Coordinates are ferroflow's: unit vectors on the sphere, angles in [-pi, pi) on the torus (flow_matching's
FlatTorus lives on [0, 2 pi); the script maps in and out).

The peer is used as its documentation shows: `GeodesicProbPath(CondOTScheduler(), manifold)`, an MLP on
[x, t] with `depth` hidden layers of `width` and SELU (ferroflow's network), its output projected onto the
tangent space (`manifold.proju`), the loss |v - dx_t|^2, Adam at `lr`, and `RiemannianODESolver` with RK4 and
step 1 / ode_steps. flow_matching has no coupling on manifolds: for "exact_ot" the script pairs each batch
with scipy's `linear_sum_assignment` on the squared geodesic distance (what a user would write).

Writes DIR/samples.npy (ferroflow's coordinates) and DIR/peer.json {"train_s", "sample_s", "threads",
"final_loss"}.

Usage: python flow_matching_riemannian.py DIR
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
from flow_matching.path import GeodesicProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import RiemannianODESolver
from flow_matching.utils import ModelWrapper
from flow_matching.utils.manifolds import FlatTorus, Sphere
from scipy.optimize import linear_sum_assignment

folder = sys.argv[1]
with open(os.path.join(folder, "settings.json")) as f:
    settings = json.load(f)
if settings["threads"] > 0:
    torch.set_num_threads(settings["threads"])
torch.manual_seed(settings["seed"])
sphere = settings["manifold"] == "sphere"
manifold = Sphere() if sphere else FlatTorus()


def load(name):
    x = np.load(os.path.join(folder, name)).astype(np.float32)
    if not sphere:
        x = np.mod(x, 2 * math.pi)
    return torch.from_numpy(x)


x0_pool, x1_pool, x0_eval = load("x0_pool.npy"), load("x1_pool.npy"), load("x0_eval.npy")
dim = x0_pool.shape[1]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layers, width_in = [], dim + 1
        for _ in range(settings["depth"]):
            layers += [torch.nn.Linear(width_in, settings["width"]), torch.nn.SELU()]
            width_in = settings["width"]
        layers.append(torch.nn.Linear(width_in, dim))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x, t):
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        return manifold.proju(x, self.net(torch.cat([x, t], dim=1)))


class Wrapped(ModelWrapper):
    def forward(self, x, t, **extras):
        return self.model(x, t)


net = Net()
path = GeodesicProbPath(CondOTScheduler(), manifold)
optimizer = torch.optim.Adam(net.parameters(), lr=settings["lr"])
batch = settings["batch_size"]
started = time.perf_counter()
loss = torch.tensor(float("nan"))
for step in range(settings["steps"]):
    x0 = x0_pool[step * batch:(step + 1) * batch]
    x1 = x1_pool[step * batch:(step + 1) * batch]
    if settings["coupling"] == "exact_ot":
        with torch.no_grad():
            cost = manifold.dist(x0[:, None, :], x1[None, :, :]) if sphere else \
                manifold.logmap(x0[:, None, :], x1[None, :, :]).norm(dim=-1)
        rows, cols = linear_sum_assignment((cost ** 2).numpy())
        x0, x1 = x0[rows], x1[cols]
    t = torch.rand(batch)
    sample = path.sample(x_0=x0, x_1=x1, t=t)
    loss = (net(sample.x_t, sample.t) - sample.dx_t).pow(2).sum(dim=-1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
train_s = time.perf_counter() - started

solver = RiemannianODESolver(manifold=manifold, velocity_model=Wrapped(net))
started = time.perf_counter()
with torch.no_grad():
    samples = solver.sample(x_init=x0_eval, step_size=1.0 / settings["ode_steps"], method="rk4",
                            projx=True, proju=True)
sample_s = time.perf_counter() - started
samples = samples.numpy().astype(np.float64)
if not sphere:
    samples = np.mod(samples + math.pi, 2 * math.pi) - math.pi
np.save(os.path.join(folder, "samples.npy"), samples)
with open(os.path.join(folder, "peer.json"), "w") as f:
    json.dump({"train_s": train_s, "sample_s": sample_s, "threads": torch.get_num_threads(),
               "final_loss": float(loss.detach())}, f)
