"""torchcfm's 2D training loop in the setting of `ferroflow bench train`, for a side-by-side measurement.

8gaussians -> moons, batch 256, MLP 3 x 64 SELU (torchcfm.models.MLP), Adam lr 1e-3, sigma 0.1, CPU.
Prints `icfm <steps/s>`, `otcfm <steps/s>` and `sbcfm <steps/s>` (SB-CFM with POT's Sinkhorn at
reg = 2 sigma^2, torchcfm's 2D example setting), each the median of 3 repetitions of STEPS steps.
"""
import statistics
import sys
import time

import torch

torch.set_num_threads(1)  # the same single intra-op thread ferroflow uses for small MLPs
from torchcfm.conditional_flow_matching import (
    ConditionalFlowMatcher,
    ExactOptimalTransportConditionalFlowMatcher,
    SchrodingerBridgeConditionalFlowMatcher,
)
from torchcfm.models.models import MLP
from torchcfm.utils import sample_8gaussians, sample_moons


def rate(matcher, steps):
    torch.manual_seed(0)
    model = MLP(dim=2, time_varying=True, w=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        x0 = sample_8gaussians(256)
        x1 = sample_moons(256)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for name, matcher in [
        ("icfm", ConditionalFlowMatcher(sigma=0.1)),
        ("otcfm", ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)),
        ("sbcfm", SchrodingerBridgeConditionalFlowMatcher(sigma=0.1, ot_method="sinkhorn")),
    ]:
        print(name, statistics.median(rate(matcher, steps) for _ in range(3)), flush=True)


if __name__ == "__main__":
    main()
