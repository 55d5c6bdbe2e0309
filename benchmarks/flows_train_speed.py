"""Training speed of our class-conditional GLOW against the same architecture built with normflows.

    python benchmarks/flows_train_speed.py [--threads 1] [--batch-size 32] [--steps 5] [--rounds 3]
                                           [--out FILE]

Each case runs in its own subprocess (so peak memory is per model): a few Adam steps on random
inputs, each timed on its own after one warm-up step. The whole list of cases runs ``--rounds``
times, ours and normflows alternating, because this (virtual) machine's speed drifts by up to
±20% over minutes: a ratio is taken within each round (same minute) and its median over rounds
is reported with its range. Images/s is the batch over the median step time of all rounds.
Reported per case: training images/s, peak resident memory,
FLOPs per image (forward + backward, counted by ``torch.utils.flop_counter``), and the fraction of
this machine's measured conv/matmul FLOP rate that training reaches. Also the *convolution bound*:
every convolution of one forward pass timed alone, forward and backward, and summed
(``convolutions_alone_seconds``). It is the step time if everything else were free, so its FLOP
rate is the best that oneDNN's kernels allow at the model's shapes; training's share of it
(``train_over_convolution_bound``) is what the rest of the library costs. For our model, also the
cost of evaluating all C class log-likelihoods relative to one unconditional pass (flow + one
standard normal), which should be close to 1.

Shapes (issue 3): *small* — 2 input channels at 32×32 (padded MNIST: data + noise channel),
3 levels, 8 steps, 64 hidden; *wide* — 6 channels (padded CIFAR-10), 3 levels, 8 steps, 128
hidden; plus the ``cpu-mnist`` / ``cpu-cifar`` presets (ours only). The two comparison shapes run
with NCHW and with channels-last weights, for both libraries; the ``channels-last+bf16`` rows are
ours with bfloat16 coupling networks (``ConditionalGlow.set_coupling_precision``; the flow stays
float32), paired with normflows' float32 channels-last run of the same round, and their FLOP rate
is also given as a fraction of the bfloat16 conv ceiling. Both libraries get the same
padded tensor, a per-class diagonal Gaussian prior and the NLL objective. normflows is built with
its squeeze *last* in each level (data → latent) and its split after the squeeze, which gives the
same tensor shapes at every step as our split-then-squeeze.

normflows is an optional dependency of this benchmark only (``pip install normflows``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

SHAPES = {
    "small": {"channels": 2, "levels": 3, "steps": 8, "hidden": 64},
    "wide": {"channels": 6, "levels": 3, "steps": 8, "hidden": 128},
}
BF16 = "+bf16"
"""Layout suffix: our coupling networks in bfloat16 (``set_coupling_precision``); paired with
normflows in float32 at the same memory format."""
CASES: list[tuple[str, str, str]] = []
for _shape in ("small", "wide"):
    # ours with bfloat16 couplings right after normflows, so that its ratio is of the same minute
    CASES += [
        ("ours", _shape, "nchw"),
        ("normflows", _shape, "nchw"),
        ("ours", _shape, "channels-last"),
        ("normflows", _shape, "channels-last"),
        ("ours", _shape, "channels-last" + BF16),
    ]
CASES += [
    ("ours", preset, layout)
    for preset in ("cpu-mnist", "cpu-cifar")
    for layout in ("channels-last", "channels-last" + BF16)
]


def _ours(shape: str, num_classes: int = 10):
    import flows

    if shape in SHAPES:
        spec = SHAPES[shape]
        preset = flows.get_preset("paper-mnist").replace(
            name=f"bench-{shape}", data_shape=(spec["channels"] // 2, 32, 32)
        )
        model = flows.build_model(
            preset,
            "base",
            num_classes,
            levels=spec["levels"],
            steps=spec["steps"],
            hidden_channels=spec["hidden"],
        )
    else:
        model = flows.build_model(shape, "base", num_classes)
    data_shape = model.config.data_shape

    def make_batch(batch: int):
        return torch.rand(batch, *data_shape) - 0.5, torch.randint(0, num_classes, (batch,))

    def loss_fn(x, y):
        output = model(x)
        from flows.objectives import nll_loss

        return nll_loss(output.class_log_likelihoods, y, model.num_dims)

    model.initialise(make_batch(64)[0])
    return model, make_batch, loss_fn


def _normflows(shape: str, num_classes: int = 10):
    import normflows as nf

    spec = SHAPES[shape]
    channels, levels, size = spec["channels"], spec["levels"], 32
    q0, merges, flow_levels = [], [], []
    # normflows lists levels coarsest first; its flows run latent → data, so index 0 of a
    # level's list is applied last when going data → latent.
    for i in range(levels):
        depth = levels - 1 - i  # 0 for the data-resolution level
        level_channels = channels * 2**depth
        level_size = size // 2**depth
        blocks = [
            nf.flows.GlowBlock(level_channels, spec["hidden"], split_mode="channel", scale=True)
            for _ in range(spec["steps"])
        ]
        if i > 0:
            blocks = [nf.flows.Squeeze(), *blocks]
            merges.append(nf.flows.Merge())
            latent = (2 * level_channels, level_size // 2, level_size // 2)
        else:
            latent = (level_channels, level_size, level_size)
        flow_levels.append(blocks)
        q0.append(nf.distributions.ClassCondDiagGaussian(latent, num_classes))
    model = nf.MultiscaleFlow(q0, flow_levels, merges, class_cond=True)

    def make_batch(batch: int):
        data = torch.rand(batch, channels // 2, size, size) - 0.5
        noise = torch.rand(batch, channels // 2, size, size) * (2 / 256)
        return torch.cat([data, noise], 1), torch.randint(0, num_classes, (batch,))

    def loss_fn(x, y):
        return -model.log_prob(x, y).mean() / x[0].numel()

    with torch.no_grad():
        model.log_prob(*make_batch(64))  # actnorm data-dependent initialisation
    return model, make_batch, loss_fn


def _prepared(library: str, shape: str, layout: str):
    """(model, make_batch, loss_fn) of a case, the model in the case's layout and precision."""
    model, make_batch, loss_fn = (_ours if library == "ours" else _normflows)(shape)
    if layout.startswith("channels-last"):
        model = model.to(memory_format=torch.channels_last)
    if layout.endswith(BF16):
        model.set_coupling_precision("bfloat16")
    return model, make_batch, loss_fn


def run_case(library: str, shape: str, layout: str, batch: int, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model, make_batch, loss_fn = _prepared(library, shape, layout)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = make_batch(batch)

    def step():
        loss = loss_fn(x, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step()  # warm-up
    step_seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        step_seconds.append(time.perf_counter() - started)
    seconds = statistics.median(step_seconds)
    with FlopCounterMode(display=False) as counter:
        loss_fn(x, y).backward()
    flops = counter.get_total_flops() / batch
    result = {
        "library": library,
        "shape": shape,
        "layout": layout,
        "batch_size": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds": step_seconds,
        "train_images_per_s": batch / seconds,
        "flops_per_image": flops,
        "train_flop_rate": flops * batch / seconds,
    }
    result["convolutions_alone_seconds"] = convolutions_alone_seconds(loss_fn, x, y, steps)
    if library == "ours":
        result["all_classes_over_unconditional"] = _conditional_overhead(model, x, steps)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


@dataclass(frozen=True)
class RecordedConvolution:
    """One distinct ``aten.convolution`` call of a forward pass and how often it occurred."""

    data: tuple  # (shape, dtype, channels_last, requires_grad)
    weight: tuple  # the same for the weight
    has_bias: bool
    settings: tuple  # stride, padding, dilation, transposed, output_padding, groups
    count: int

    def flops(self) -> float:
        """Forward plus backward FLOPs of one call (2 per multiply-add; a gradient per operand)."""
        (batch, _, *_), (out_channels, in_per_group, *kernel) = self.data[0], self.weight[0]
        stride, padding, dilation = self.settings[:3]
        spatial = 1
        for size, k, s, p, d in zip(
            self.data[0][2:], kernel, stride, padding, dilation, strict=True
        ):
            spatial *= (size + 2 * p - d * (k - 1) - 1) // s + 1
        forward = 2 * batch * spatial * out_channels * in_per_group * kernel[0] * kernel[1]
        return forward * (1 + self.data[3] + self.weight[3])

    def seconds(self, repeats: int) -> tuple[float, float]:
        """Median forward and median backward time of one call alone, on random tensors."""
        operands = [_random_like_spec(*self.data), _random_like_spec(*self.weight)]
        bias = None
        if self.has_bias:
            bias = torch.randn(self.weight[0][0], dtype=self.weight[1], requires_grad=True)
        wanted = [t for t in [*operands, bias] if t is not None and t.requires_grad]

        def forward():
            return torch.ops.aten.convolution(*operands, bias, *self.settings)

        output = forward()
        grad = torch.randn_like(output)
        backward_seconds = _median_seconds(
            lambda: torch.autograd.grad(output, wanted, grad, retain_graph=True), repeats
        )
        return _median_seconds(forward, repeats), backward_seconds


def record_convolutions(loss_fn, x: torch.Tensor, y: torch.Tensor) -> list[RecordedConvolution]:
    """Every distinct ``aten.convolution`` call of one forward pass (shapes, dtype, memory
    formats, which operands need gradients), with its multiplicity."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: dict[tuple, int] = {}

    class RecordConvolutions(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default:
                data, weight, bias = args[:3]
                spec = [
                    (tuple(t.shape), t.dtype, _channels_last(t), t.requires_grad)
                    for t in (data, weight)
                ]
                key = (
                    *spec,
                    bias is not None,
                    tuple(tuple(a) if isinstance(a, list) else a for a in args[3:]),
                )
                counts[key] = counts.get(key, 0) + 1
            return func(*args, **(kwargs or {}))

    with RecordConvolutions():
        loss_fn(x, y)
    return [RecordedConvolution(*key, count) for key, count in counts.items()]


def convolutions_alone_seconds(loss_fn, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """The time a training step would take if everything but its convolutions were free.

    Times each distinct convolution of one forward pass alone (``record_convolutions``), forward
    plus backward, as the median of ``repeats`` runs, and sums the times with their
    multiplicities. Repeating one call on the same tensors is as cache-friendly as it gets, so
    this is an optimistic bound: FLOPs per step over this time is the best FLOP rate that oneDNN's
    convolution kernels allow at the model's shapes, whatever the rest of the library does.
    """
    return sum(
        conv.count * sum(conv.seconds(repeats)) for conv in record_convolutions(loss_fn, x, y)
    )


def convolution_breakdown(library: str, shape: str, layout: str, batch: int, repeats: int) -> None:
    """Print each distinct convolution of a case: its share of the conv time and FLOP rate."""
    torch.manual_seed(0)
    model, make_batch, loss_fn = _prepared(library, shape, layout)
    x, y = make_batch(batch)
    rows = []
    for conv in record_convolutions(loss_fn, x, y):
        forward, backward = conv.seconds(repeats)
        rows.append((conv, forward, backward))
    total = sum(conv.count * (f + b) for conv, f, b in rows)
    flops = sum(conv.count * conv.flops() for conv, _, _ in rows)
    print(
        f"{library} {shape} {layout}, batch {batch}: convolutions alone {total * 1e3:.0f} ms "
        f"per step, {flops / total / 1e9:.1f} GFLOP/s"
    )
    print("   input  ->  weight (out, in, kh, kw)   calls  fwd ms  bwd ms  GFLOP/s  % of time")
    for conv, forward, backward in sorted(rows, key=lambda r: -r[0].count * (r[1] + r[2])):
        share = conv.count * (forward + backward) / total
        rate = conv.flops() / (forward + backward) / 1e9
        print(
            f"{str(conv.data[0]):>18} -> {str(conv.weight[0]):<18} {conv.count:5d} "
            f"{forward * 1e3:7.2f} {backward * 1e3:7.2f} {rate:8.1f} {100 * share:9.1f}"
        )


def _channels_last(tensor: torch.Tensor) -> bool:
    return tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)


def _random_like_spec(shape, dtype, channels_last: bool, requires_grad: bool) -> torch.Tensor:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    tensor = torch.randn(shape).to(dtype=dtype, memory_format=layout)
    return tensor.requires_grad_(requires_grad)


def _median_seconds(fn, repeats: int) -> float:
    fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


@torch.no_grad()
def _conditional_overhead(model, x: torch.Tensor, repeats: int) -> float:
    """Time of ``class_log_likelihoods`` (all C classes) over one unconditional pass."""
    from flows.preprocess import add_noise_channels, pad_image

    def unconditional():
        padded, log_q = add_noise_channels(pad_image(x, model.config.padded_size))
        z, logdet = model.flow(padded)
        return -0.5 * (z * z).sum(1) + logdet - log_q

    def conditional():
        return model.class_log_likelihoods(x)

    timings = {}
    for name, fn in (
        ("u", unconditional),
        ("c", conditional),
        ("u2", unconditional),
        ("c2", conditional),
    ):
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        timings[name] = time.perf_counter() - started
    return (timings["c"] + timings["c2"]) / (timings["u"] + timings["u2"])


def flop_ceiling() -> dict:
    """This machine's matmul and conv FLOP rates (best of 3; the conv also in bfloat16): the ceilings."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    x, w = torch.randn(32, 128, 16, 16), torch.randn(128, 128, 3, 3)
    x16, w16 = x.bfloat16(), w.bfloat16()
    conv_flops = 2 * 32 * 128 * 128 * 9 * 256
    rates = {}
    for name, fn, flops in (
        ("matmul", lambda: a @ b, 2 * 1024**3),
        ("conv3x3", lambda: torch.nn.functional.conv2d(x, w, padding=1), conv_flops),
        ("conv3x3_bf16", lambda: torch.nn.functional.conv2d(x16, w16, padding=1), conv_flops),
    ):
        fn()
        best = min(_timed(fn) for _ in range(3))
        rates[name] = flops / best
    return rates


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _run_in_subprocess(case: tuple[str, str, str], args: argparse.Namespace) -> dict:
    library, shape, layout = case
    command = [sys.executable, __file__, "--case", library, shape, layout]
    command += ["--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    command += ["--steps", str(args.steps)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode:
        return {"error": completed.stderr.strip().splitlines()[-1]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def summarise(case: tuple[str, str, str], rounds: list[dict], ceiling: dict) -> dict:
    """One case over all rounds: images/s from the median step, memory and overhead at their worst."""
    library, shape, layout = case
    good = [r for r in rounds if "error" not in r]
    if not good:
        return {"library": library, "shape": shape, "layout": layout, "error": rounds[0]["error"]}
    steps = [t for r in good for t in r["step_seconds"]]
    batch = good[0]["batch_size"]
    kept = ("library", "shape", "layout", "batch_size", "parameters", "flops_per_image")
    summary = {key: good[0][key] for key in kept}
    summary["train_images_per_s"] = batch / statistics.median(steps)
    summary["train_images_per_s_by_round"] = [r["train_images_per_s"] for r in good]
    summary["train_flop_rate"] = summary["flops_per_image"] * summary["train_images_per_s"]
    summary["fraction_of_conv_ceiling"] = summary["train_flop_rate"] / ceiling["conv3x3"]
    if layout.endswith(BF16):
        summary["fraction_of_bf16_conv_ceiling"] = (
            summary["train_flop_rate"] / ceiling["conv3x3_bf16"]
        )
    # the convolutions alone, timed in the same round as the steps
    alone = statistics.median(r["convolutions_alone_seconds"] for r in good)
    bound_rate = summary["flops_per_image"] * batch / alone
    summary["convolutions_alone_seconds"] = alone
    summary["convolution_bound_fraction_of_conv_ceiling"] = bound_rate / ceiling["conv3x3"]
    if layout.endswith(BF16):
        summary["convolution_bound_fraction_of_bf16_conv_ceiling"] = (
            bound_rate / ceiling["conv3x3_bf16"]
        )
    summary["train_over_convolution_bound_by_round"] = [
        r["convolutions_alone_seconds"] / statistics.median(r["step_seconds"]) for r in good
    ]
    summary["train_over_convolution_bound"] = statistics.median(
        summary["train_over_convolution_bound_by_round"]
    )
    summary["peak_rss_mib"] = max(r["peak_rss_mib"] for r in good)
    if library == "ours":
        overheads = [r["all_classes_over_unconditional"] for r in good]
        summary["all_classes_over_unconditional"] = statistics.median(overheads)
        summary["all_classes_over_unconditional_by_round"] = overheads
    return summary


def paired_ratios(cases: list, by_case: dict) -> list[dict]:
    """ours / normflows images/s within each round, for every (shape, layout) both ran."""
    ratios = []
    for library, shape, layout in cases:
        theirs = by_case.get(("normflows", shape, layout.removesuffix(BF16)))
        if library != "ours" or theirs is None:
            continue
        per_round = [
            a["train_images_per_s"] / b["train_images_per_s"]
            for a, b in zip(by_case[(library, shape, layout)], theirs, strict=True)
            if "error" not in a and "error" not in b
        ]
        if per_round:
            ratios.append(
                {
                    "shape": shape,
                    "layout": layout,
                    "median": statistics.median(per_round),
                    "min": min(per_round),
                    "max": max(per_round),
                    "by_round": per_round,
                }
            )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over all cases")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument(
        "--breakdown",
        nargs=3,
        metavar=("LIBRARY", "SHAPE", "LAYOUT"),
        help="only print each convolution's time and FLOP rate for one case, e.g. ours wide "
        "channels-last",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.breakdown:
        convolution_breakdown(*args.breakdown, args.batch_size, args.steps)
        return
    if args.case:
        print(json.dumps(run_case(*args.case, args.batch_size, args.steps)))
        return
    ceiling = flop_ceiling()
    by_case: dict = {case: [] for case in CASES}
    for round_index in range(args.rounds):
        for case in CASES:
            by_case[case].append(_run_in_subprocess(case, args))
            print(f"round {round_index + 1}/{args.rounds} {' '.join(case)} done", file=sys.stderr)
    report = {
        "threads": args.threads,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "ceiling_flop_rate": ceiling,
        "results": [summarise(case, by_case[case], ceiling) for case in CASES],
        "ours_over_normflows": paired_ratios(CASES, by_case),
        "raw": [{"case": list(case), "rounds": by_case[case]} for case in CASES],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}, indent=2))
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
