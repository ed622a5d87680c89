"""Peer timings for exact assignment / OT, same sizes and distributions as `examples/bench_ot.rs`.

scipy.optimize.linear_sum_assignment (dense shortest augmenting path, C++) and POT's ot.emd (network
simplex, C++) on squared-Euclidean costs between N(0, I) samples and 8gaussians (D = 2) or a mixture of 10
Gaussian blobs (D = 784); also POT's ot.sinkhorn (log-free, numpy) on max-normalised costs at n = 1024, 4096.

    python3 -m pip install --target /tmp/peers pot scipy numpy
    PYTHONPATH=/tmp/peers python3 crates/coupling/bench/peers_ot.py [--quick] [--no-sinkhorn]

The generators follow the same laws as the Rust example (not the same random streams).
"""
import sys
import time

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

QUICK = "--quick" in sys.argv
SIZES = [64, 256, 1024] if QUICK else [64, 128, 256, 512, 1024, 2048]
rng = np.random.default_rng(7)


def eight_gaussians(n):
    std = 0.1 ** 0.25
    k = rng.integers(0, 8, n) * np.pi / 4
    centres = 5.0 * np.stack([np.cos(k), np.sin(k)], axis=1)
    return centres + std * rng.standard_normal((n, 2))


def blobs(n, dim):
    centres = 2.0 * rng.standard_normal((10, dim))
    return centres[rng.integers(0, 10, n)] + rng.standard_normal((n, dim))


def sqdist(x, y):
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def time_ms(reps, f):
    f()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    return samples[reps // 2], samples[0], samples[-1]


def fmt(t):
    return f"{t[0]:.3f} [{t[1]:.3f}-{t[2]:.3f}]"


for dim in (2, 784):
    target = "8gaussians" if dim == 2 else "10 Gaussian blobs"
    print(f"\n### peers: exact assignment, squared-Euclidean cost, N(0, I) -> {target}, D = {dim}: median ms [min-max]\n")
    print("| n | scipy linear_sum_assignment | POT emd (network simplex) | cost matrix | agree |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        x0 = rng.standard_normal((n, dim))
        x1 = eight_gaussians(n) if dim == 2 else blobs(n, dim)
        reps = 3 if QUICK else min(max(4096 // n, 5), 31)
        tc = time_ms(reps, lambda: sqdist(x0, x1))
        cost = sqdist(x0, x1)
        a = b = np.full(n, 1.0 / n)
        big = 3 if n >= 1024 else reps
        ts = time_ms(big, lambda: linear_sum_assignment(cost))
        te = time_ms(big, lambda: ot.emd(a, b, cost, numItermax=10_000_000))
        r, c = linear_sum_assignment(cost)
        plan = ot.emd(a, b, cost, numItermax=10_000_000)
        agree = abs(cost[r, c].sum() / n - (plan * cost).sum()) < 1e-9 * max(1.0, cost[r, c].sum() / n)
        print(f"| {n} | {fmt(ts)} | {fmt(te)} | {tc[0]:.3f} | {agree} |")

if "--no-sinkhorn" in sys.argv:
    sys.exit(0)

print("\n### peers: POT sinkhorn (numpy), N(0, I) -> 8gaussians, cost / max(cost): median ms\n")
print("| n | reg | sinkhorn ms [min-max] | log-domain sinkhorn_log ms |")
print("|---|---|---|---|")
for n in (1024, 4096):
    x0 = rng.standard_normal((n, 2))
    x1 = eight_gaussians(n)
    cost = sqdist(x0, x1)
    cost /= cost.max()
    a = b = np.full(n, 1.0 / n)
    for reg in (0.05, 0.01, 1e-3):
        reps = 1 if QUICK or n == 4096 else 3
        ts = time_ms(reps, lambda: ot.sinkhorn(a, b, cost, reg, numItermax=2000, stopThr=1e-6))
        if reg >= 0.01 or n <= 1024:
            tl = fmt(time_ms(1, lambda: ot.bregman.sinkhorn_log(a, b, cost, reg, numItermax=2000, stopThr=1e-6)))
        else:
            tl = "-"
        print(f"| {n} | {reg} | {fmt(ts)} | {tl} |")
