"""flow_matching's likelihood and sampling in the setting of `ferroflow bench likelihood`, side by side.

2D MLP 3 x 64 SELU (torchcfm's layout: Linear(3, 64), SELU, Linear(64, 64), SELU, Linear(64, 64), SELU,
Linear(64, 2), time concatenated), N POINTS points, CPU:
- `ODESolver.compute_likelihood`, 100 midpoint steps (step 0.01 from t = 1 to 0), exact divergence;
- the same with Hutchinson's estimator (flow_matching draws one Rademacher probe per solve);
- `ODESolver.sample`, 100 Euler steps.
The solves take a fixed number of steps, so their cost does not depend on the weights: the network keeps its
random initialisation.

Usage: flow_matching_likelihood.py N_POINTS REPEATS THREADS, where THREADS is `default` (torch's own choice,
what a user gets) or a number passed to `torch.set_num_threads`. Prints `threads <n>`, then `exact <points/s>`,
`hutchinson <points/s>` and `sample <points/s>`, each the median of REPEATS timed runs after one warm-up run.
"""
import math
import statistics
import sys
import time

import torch
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper


class Mlp(ModelWrapper):
    def __init__(self, dim=2, width=64):
        net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, width),
            torch.nn.SELU(),
            torch.nn.Linear(width, width),
            torch.nn.SELU(),
            torch.nn.Linear(width, width),
            torch.nn.SELU(),
            torch.nn.Linear(width, dim),
        )
        super().__init__(net)

    def forward(self, x, t, **extras):
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        return self.model(torch.cat([x, t], dim=-1))


def log_p0(x):
    return -0.5 * (x**2).sum(dim=1) - x.shape[1] * 0.5 * math.log(2 * math.pi)


def median_rate(job, n_points, repeats):
    job()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return n_points / statistics.median(times)


def main():
    n_points, repeats, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if threads != "default":
        torch.set_num_threads(int(threads))
    print("threads", torch.get_num_threads(), flush=True)
    torch.manual_seed(0)
    solver = ODESolver(velocity_model=Mlp())
    data = torch.randn(n_points, 2) * 2.0
    x0 = torch.randn(n_points, 2)
    backward = torch.tensor([1.0, 0.0])
    for name, exact in [("exact", True), ("hutchinson", False)]:

        def job():
            solver.compute_likelihood(
                x_1=data,
                log_p0=log_p0,
                step_size=0.01,
                method="midpoint",
                exact_divergence=exact,
                time_grid=backward,
            )

        print(name, median_rate(job, n_points, repeats), flush=True)

    def sample():
        solver.sample(x_init=x0, step_size=0.01, method="euler", time_grid=torch.tensor([0.0, 1.0]))

    print("sample", median_rate(sample, n_points, repeats), flush=True)


if __name__ == "__main__":
    main()
