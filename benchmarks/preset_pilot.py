"""Training-step time of candidate MNIST architectures: ``python benchmarks/preset_pilot.py``.

One thread, batch 64, channels-last, the Reweight objective on random MNIST-shaped inputs; the
median of 5 timed steps after one warm-up step. Used to choose ``cpu-mnist-deep`` (see
``benchmarks/preset_pilot.md`` for recorded results).
"""

from __future__ import annotations

import argparse
import time

import torch

import flows
from flows.objectives import objective

CANDIDATES = ((4, 4, 32), (4, 8, 32), (4, 6, 48), (4, 8, 64), (3, 8, 64))


def step_seconds(levels: int, steps: int, hidden: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = flows.build_model(
        "cpu-mnist", "reweight", levels=levels, steps=steps, hidden_channels=hidden
    ).to(memory_format=torch.channels_last)
    x = torch.rand(batch, 1, 28, 28) - 0.5
    y = torch.randint(10, (batch,))
    model.initialise(x)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        output = model(x, torch.Generator().manual_seed(i))
        loss = objective(
            "reweighted", output.class_log_likelihoods, output.logits, y, model.num_dims
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for levels, steps, hidden in CANDIDATES:
        seconds = step_seconds(levels, steps, hidden, args.batch_size, args.repeats)
        epoch_minutes = seconds * (60000 // args.batch_size) / 60
        print(
            f"{levels} x {steps} x {hidden}: {1000 * seconds:.0f} ms/step, "
            f"{args.batch_size / seconds:.0f} images/s, {epoch_minutes:.1f} min/epoch",
            flush=True,
        )


if __name__ == "__main__":
    main()
