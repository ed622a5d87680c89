"""Meta's flow_matching 1.0.10 discrete flow matching, side by side with `ferroflow bench discrete`.

flow_matching is CC BY-NC: this script only calls its API; none of its code is copied into ferroflow.

The bench writes (so both programs train on the same law and are measured by the same code):
  DIR/settings.json  {"bins", "half_width", "length" (2), "source": "masked"|"uniform",
                      "loss": "cross_entropy"|"generalized_kl", "kappa_exponent" (kappa_t = t^n),
                      "time_sampling": {"kind": "uniform"} | {"kind": "logit_normal", "mean", "std"},
                      "embedding_dim", "width", "depth", "activation", "time_embedding" ({"kind": "fourier",
                      "n_freq"} | {"kind": "concat"}), "parameters" (ferroflow's count), "optimizer": "adam"|"adamw",
                      "lr", "beta1", "beta2", "eps", "weight_decay", "ema_decay" (0: none), "steps", "batch_size",
                      "seed", "log_every", "sample_steps", "n_samples", "temperature", "repeats",
                      "threads" (0: torch's default)}
  DIR/x1_pool.npy    steps * batch_size continuous 2D target points, float32 (one fresh batch per step)

The script discretises the points with ferroflow's grid formula (bin floor((x + half_width) / (2 half_width /
bins)), clamped to the window), builds ferroflow's token MLP in PyTorch (an embedding table over the states, the
mask included, the concatenated embeddings and time features, `depth` hidden layers of `width` with the
activation, a linear layer to length x bins logits) and refuses to run when its parameter count differs from
ferroflow's. It trains with `MixtureDiscreteProbPath(PolynomialConvexScheduler(n))`, PyTorch's cross-entropy on
the logits (every position) or `MixturePathGeneralizedKL`, Adam(W) and an EMA of the weights (lerp by 1 - decay
after every step, as ferroflow), then samples `n_samples` sequences with `MixtureDiscreteEulerSolver` over
`sample_steps` uniform steps from the EMA weights (when there is an EMA), the posterior a softmax at
`temperature` with a zero column for the mask.

Writes DIR/samples.npy ([n_samples, 2] token ids as float32, like ferroflow's samples.npy) and DIR/peer.json
{"train_s", "sample_s" (median of `repeats` runs), "threads", "parameters", "final_loss" (the mean loss of the
last window of `log_every` steps, as ferroflow's loss curve ends: windows end at multiples of `log_every` and
the last one at the last step)}; timings are taken in-process and leave out start-up and data loading.

Usage: python flow_matching_discrete.py DIR
"""
import copy
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
from flow_matching.loss import MixturePathGeneralizedKL
from flow_matching.path import MixtureDiscreteProbPath
from flow_matching.path.scheduler import PolynomialConvexScheduler
from flow_matching.solver import MixtureDiscreteEulerSolver
from flow_matching.utils import ModelWrapper

folder = sys.argv[1]
with open(os.path.join(folder, "settings.json")) as f:
    settings = json.load(f)
if settings["threads"] > 0:
    torch.set_num_threads(settings["threads"])
torch.manual_seed(settings["seed"])

bins, length = settings["bins"], settings["length"]
masked = settings["source"] == "masked"
mask = bins  # the mask is the state after the data tokens
n_states = bins + 1 if masked else bins

# The data: ferroflow's grid formula, in float64 like ferroflow's encoder.
points = np.load(os.path.join(folder, "x1_pool.npy")).astype(np.float64)
half_width = settings["half_width"]
bin_width = 2.0 * half_width / bins
x1_pool = torch.from_numpy(np.clip(np.floor((points + half_width) / bin_width), 0, bins - 1).astype(np.int64))
batch = settings["batch_size"]
if x1_pool.shape != (settings["steps"] * batch, length):
    sys.exit(f"x1_pool.npy holds {tuple(x1_pool.shape)} points, expected ({settings['steps'] * batch}, {length})")

ACTIVATIONS = {"selu": torch.nn.SELU, "relu": torch.nn.ReLU, "silu": torch.nn.SiLU, "gelu": torch.nn.GELU,
               "tanh": torch.nn.Tanh, "elu": torch.nn.ELU}


class TokenMlp(torch.nn.Module):
    """ferroflow's token MLP (crates/models/src/discrete/mlp.rs), with its parameter names."""

    def __init__(self):
        super().__init__()
        embedding_dim, width = settings["embedding_dim"], settings["width"]
        self.time_embedding = settings["time_embedding"]
        if self.time_embedding["kind"] == "fourier":
            n_freq = self.time_embedding["n_freq"]
            self.register_buffer("freqs", (2.0 * math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32)),
                                 persistent=False)
            time_width = 2 * n_freq
        else:
            time_width = 1
        self.token_embed = torch.nn.Embedding(n_states, embedding_dim)
        layers, width_in = [], length * embedding_dim + time_width
        for _ in range(settings["depth"]):
            layers += [torch.nn.Linear(width_in, width), ACTIVATIONS[settings["activation"]]()]
            width_in = width
        layers.append(torch.nn.Linear(width_in, length * bins))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x_t, t):
        n = x_t.shape[0]
        t = t.reshape(-1, 1).to(torch.float32).expand(n, 1)
        if self.time_embedding["kind"] == "fourier":
            angles = t * self.freqs.reshape(1, -1)
            time_features = torch.cat([angles.sin(), angles.cos()], dim=1)
        else:
            time_features = t
        h = torch.cat([self.token_embed(x_t).reshape(n, -1), time_features], dim=1)
        return self.net(h).reshape(n, length, bins)


net = TokenMlp()
parameters = sum(p.numel() for p in net.parameters())
print(f"flow_matching peer: token MLP of {parameters} parameters (ferroflow's: {settings['parameters']})")
if parameters != settings["parameters"]:
    sys.exit(f"the peer's token MLP has {parameters} parameters, ferroflow's {settings['parameters']}: "
             "not the same network")

path = MixtureDiscreteProbPath(scheduler=PolynomialConvexScheduler(n=settings["kappa_exponent"]))
generalized_kl = MixturePathGeneralizedKL(path=path) if settings["loss"] == "generalized_kl" else None
optimizer_class = torch.optim.AdamW if settings["optimizer"] == "adamw" else torch.optim.Adam
optimizer = optimizer_class(net.parameters(), lr=settings["lr"], betas=(settings["beta1"], settings["beta2"]),
                            eps=settings["eps"], weight_decay=settings["weight_decay"])
ema_decay = settings["ema_decay"]
ema = [p.detach().clone() for p in net.parameters()] if ema_decay > 0 else None


def source(n):
    if masked:
        return torch.full((n, length), mask, dtype=torch.int64)
    return torch.randint(0, bins, (n, length))


def draw_times(n):
    sampling = settings["time_sampling"]
    if sampling["kind"] == "logit_normal":
        return torch.sigmoid(sampling["mean"] + sampling["std"] * torch.randn(n))
    return torch.rand(n)


steps, log_every = settings["steps"], settings["log_every"]
last_window = steps - ((steps - 1) // log_every) * log_every
window_losses = []
started = time.perf_counter()
for step in range(steps):
    x1 = x1_pool[step * batch:(step + 1) * batch]
    t = draw_times(batch)
    x_t = path.sample(x_0=source(batch), x_1=x1, t=t).x_t
    logits = net(x_t, t)
    if generalized_kl is None:
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, bins), x1.reshape(-1))
    else:
        # The loss reads the posterior at x_t, which may be the mask: give the mask a zero probability.
        if masked:
            logits = torch.cat([logits, torch.full_like(logits[..., :1], -math.inf)], dim=-1)
        loss = generalized_kl(logits, x1, x_t, t)
    optimizer.zero_grad()
    loss.backward()
    loss_value = loss.item()
    if step >= steps - last_window:
        window_losses.append(loss_value)
    # As ferroflow: a non-finite loss never reaches the weights.
    if math.isfinite(loss_value):
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for average, p in zip(ema, net.parameters()):
                    average.lerp_(p, 1.0 - ema_decay)
train_s = time.perf_counter() - started

sampler_net = copy.deepcopy(net)
if ema is not None:
    with torch.no_grad():
        for p, average in zip(sampler_net.parameters(), ema):
            p.copy_(average)
sampler_net.eval()


class Posterior(ModelWrapper):
    def forward(self, x, t, **extras):
        probs = torch.softmax(self.model(x, t) / settings["temperature"], dim=-1)
        if masked:
            probs = torch.cat([probs, torch.zeros_like(probs[..., :1])], dim=-1)
        return probs


solver = MixtureDiscreteEulerSolver(model=Posterior(sampler_net), path=path, vocabulary_size=n_states)
time_grid = torch.linspace(0.0, 1.0, settings["sample_steps"] + 1)
timings = []
for _ in range(settings["repeats"]):
    torch.manual_seed(settings["seed"] + 1)
    x_init = source(settings["n_samples"])
    started = time.perf_counter()
    samples = solver.sample(x_init=x_init, step_size=None, time_grid=time_grid)
    timings.append(time.perf_counter() - started)
np.save(os.path.join(folder, "samples.npy"), samples.numpy().astype(np.float32))
with open(os.path.join(folder, "peer.json"), "w") as f:
    json.dump({"train_s": train_s, "sample_s": statistics.median(timings), "threads": torch.get_num_threads(),
               "parameters": parameters, "final_loss": statistics.fmean(window_losses)}, f)
