"""The GPU checks of issue 3, as one prepared run for a session that is lent a device.

    python benchmarks/gpu_check.py --out DIR [--device cuda] [--quick]

A lent GPU comes for minutes, so everything that needs one runs here in one command, which writes
``DIR/gpu_check.json`` after every check (it has not yet run on a GPU: no session of issue 3 has
been lent one, so give the first run a generous timeout). Run it from the repository
root with ``PYTHONPATH=.`` (the device image has torch, torchvision, matplotlib and tqdm; nothing
needs installing). ``--quick --device cpu`` runs the same code on tiny settings, which is what the
test suite does, so that the script still works when a device comes.

1. *Exactness on the device* (float64, perturbed parameters): ``decode(encode(x)) = x`` and the
   class log-likelihoods equal the CPU's for the same weights and noise draw.
2. *Float32 round trip with and without TF32*: cuDNN runs float32 convolutions in TF32 by default
   (``torch.backends.cudnn.allow_tf32``), the invertible 1×1 convolutions included, so the float32
   inverse is only as exact as TF32's 10-bit mantissa. Reported: the relative round-trip error
   with TF32 on and off, and the training step time of both.
3. *Training throughput* of the ``paper-*`` presets at their batch size (64), float32 and with
   bfloat16 coupling networks (``--amp``), channels-last: images/s, peak GPU memory, and the
   projected wall time of one epoch and of the paper's 150 epochs.
4. *The CLI on the device*: ``flows.train`` on synthetic data with ``--amp`` (pinned host memory on
   CUDA), one epoch, then ``--resume`` for a second, then ``flows.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

import flows

TRAIN_IMAGES = {"paper-mnist": 60_000, "paper-cifar": 50_000}


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "capability": list(torch.cuda.get_device_capability(device)),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32,
        }
    return info


#: Standard deviation of the Gaussian moves of every parameter in :func:`_perturbed_model`. The first
#: GPU run (2026-12-04) used 0.05: at the paper presets' depth that makes the flow explode (on the
#: CPU too: max |z| ≈ 1e126 for ``paper-cifar`` in float64, float32 round-trip error 0.39 for
#: ``paper-mnist``), so the exactness checks reported NaN and large errors that said nothing about
#: the device. 0.01 keeps |z| of the order of a trained model's (≤ 21) with every weight moved.
PERTURBATION = 0.01


def _perturbed_model(preset: str, prior: str, dtype: torch.dtype, **architecture):
    """A model with actnorm initialised and every parameter moved off its initial value."""
    torch.manual_seed(0)
    model = flows.build_model(preset, prior, **architecture).to(dtype)
    x = torch.rand(16, *model.config.data_shape, dtype=dtype) - 0.5
    model.initialise(x, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(PERTURBATION * torch.randn_like(parameter))
    return model


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@torch.no_grad()
def exactness(device: torch.device, preset: str, architecture: dict) -> dict:
    """Float64 on the device: the round trip, and the same log-likelihoods as on the CPU."""
    model = _perturbed_model(preset, "split", torch.float64, **architecture)
    x = torch.rand(8, *model.config.data_shape, dtype=torch.float64) - 0.5
    on_cpu = model.class_log_likelihoods(x, torch.Generator().manual_seed(2), shared_noise=True)
    model.to(device)
    x_device = x.to(device)
    z, _ = model.encode(x_device, torch.Generator(device=device).manual_seed(3))
    on_device = _class_log_likelihoods_with_cpu_noise(model, x, device, seed=2)
    return {
        "float64_round_trip_relative_error": _relative_error(model.decode(z), x_device),
        "float64_device_vs_cpu_log_likelihood_relative_error": _relative_error(
            on_device.cpu(), on_cpu
        ),
    }


def _class_log_likelihoods_with_cpu_noise(model, x, device, seed: int) -> torch.Tensor:
    """``class_log_likelihoods`` on ``device`` with the padding and noise that a CPU generator
    draws, so that the device and the CPU evaluate the same padded input."""
    from flows.preprocess import add_noise_channels, pad_image

    generator = torch.Generator().manual_seed(seed)
    padded = pad_image(x, model.config.padded_size, generator, shared=True)
    padded, log_q = add_noise_channels(padded, generator, shared=True)
    z, logdet = model.flow(padded.to(device))
    return model.prior.log_prob(z) + (logdet - log_q.to(device))[:, None]


@torch.no_grad()
def float32_round_trip(device: torch.device, preset: str, architecture: dict) -> dict:
    """Float32 round-trip error with cuDNN's TF32 on and off (the same weights and input)."""
    model = _perturbed_model(preset, "split", torch.float32, **architecture).to(device)
    x = (torch.rand(8, *model.config.data_shape) - 0.5).to(device)
    errors = {}
    default = torch.backends.cudnn.allow_tf32
    try:
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            z, _ = model.encode(x, torch.Generator(device=device).manual_seed(3))
            errors[f"tf32_{'on' if tf32 else 'off'}"] = _relative_error(model.decode(z), x)
    finally:
        torch.backends.cudnn.allow_tf32 = default
    return errors


def throughput(
    device: torch.device, preset: str, precision: str, steps: int, tf32: bool, architecture: dict
) -> dict:
    """Training images/s at the preset's batch size (Adam, the preset's objective)."""
    from flows.objectives import objective

    torch.manual_seed(0)
    batch = flows.get_preset(preset).batch_size
    model = flows.build_model(preset, "split", coupling_precision=precision, **architecture)
    model = model.to(device).to(memory_format=torch.channels_last)
    x = (torch.rand(batch, *model.config.data_shape) - 0.5).to(device)
    y = torch.randint(0, model.num_classes, (batch,)).to(device)
    model.initialise(x)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        output = model(x)
        loss = objective(
            model.config.objective,
            output.class_log_likelihoods,
            output.logits,
            y,
            model.num_dims,
            model.config.split_weight,
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    default = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        for _ in range(3):
            step()
        _synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = []
        for _ in range(steps):
            started = time.perf_counter()
            step()
            _synchronize(device)
            seconds.append(time.perf_counter() - started)
    finally:
        torch.backends.cudnn.allow_tf32 = default
    images_per_s = batch / statistics.median(seconds)
    epoch_s = TRAIN_IMAGES.get(preset, 60_000) / images_per_s
    result = {
        "preset": preset,
        "coupling_precision": precision,
        "tf32": tf32,
        "batch_size": batch,
        "train_images_per_s": images_per_s,
        "step_seconds": seconds,
        "projected_epoch_minutes": epoch_s / 60,
        "projected_150_epochs_hours": 150 * epoch_s / 3600,
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cli_run(device: torch.device, out: Path, quick: bool) -> dict:
    """``flows.train`` (one epoch, then ``--resume`` for a second) and ``flows.evaluate``."""
    run = out / "run"
    preset = "tiny" if quick else "paper-mnist"
    common = [sys.executable, "-m", "flows.train", "--preset", preset, "--prior", "split"]
    common += ["--dataset", "synthetic", "--synthetic-size", "256", "--eval-limit", "64"]
    common += ["--device", str(device), "--amp", "--out", str(run)]
    started = time.perf_counter()
    steps = [
        common + ["--epochs", "1"],
        common + ["--epochs", "2", "--resume"],
        [sys.executable, "-m", "flows.evaluate", str(run), "--device", str(device)]
        + ["--limit", "64"],
    ]
    for command in steps:
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    from flows.checkpoint import load_checkpoint

    results = json.loads((run / "evaluation.json").read_text())["results"]
    return {
        "seconds": time.perf_counter() - started,
        "position_after_resume": load_checkpoint(run)["position"],
        "evaluation": {k: v for k, v in results.items() if not isinstance(v, (list, dict))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and the CLI run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per case")
    parser.add_argument(
        "--quick", action="store_true", help="tiny models and few steps (a CPU smoke run)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU (torch.cuda.is_available() is False)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # --quick: the paper presets' code paths at a size a CPU runs in seconds
    architecture = {"levels": 2, "steps": 2, "hidden_channels": 8} if args.quick else {}
    steps = 2 if args.quick else args.steps
    report: dict = {"environment": environment(device)}

    def attempt(name: str, fn, *fn_args) -> dict:
        """Run one check; a failure is recorded (with its traceback's end) and the rest go on, so
        that one broken check does not waste the device's minutes. Saves after every check."""
        print(name, flush=True)
        try:
            result = fn(*fn_args)
        except Exception:  # reported in the JSON; the other checks still run
            result = {"error": traceback.format_exc()[-3000:]}
        report[name] = result
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        return result

    for preset in ("paper-mnist", "paper-cifar"):
        attempt(f"exactness {preset}", exactness, device, preset, architecture)
        attempt(f"float32 round trip {preset}", float32_round_trip, device, preset, architecture)
    for preset in ("paper-mnist", "paper-cifar"):
        for precision, tf32 in (("float32", True), ("float32", False), ("bfloat16", True)):
            name = f"throughput {preset} {precision} tf32={'on' if tf32 else 'off'}"
            attempt(name, throughput, device, preset, precision, steps, tf32, architecture)
    attempt("cli train, resume, evaluate", cli_run, device, out, args.quick)
    print(json.dumps(report, indent=2))
    failed = [name for name, result in report.items() if "error" in result]
    if failed:
        sys.exit(f"failed checks: {', '.join(failed)} (see gpu_check.json)")


if __name__ == "__main__":
    main()
