r"""Our APGD-L2 with EOT against torchattacks' APGD on the randomised (deployed) flow classifier.

``python benchmarks/apgd_vs_torchattacks.py --data-root DIR`` loads the committed runs
``artifacts/runs/cpu-mnist-split`` and ``artifacts/runs/cpu-cifar-split`` (``flows.load``), takes
the first ``--n`` test images of :func:`flows.data.fixed_order` that the *deployed* classifier
gets right (majority over ``--verify-draws`` fresh draws, as ``python -m flows.attack
--threat-model deployed`` chooses them) and attacks them, in one process, with:

- ``ours-k<κ>``: :class:`flows.attacks.APGDL2` ``(eps=ε, steps=S, eot_draws=K, rho=0.75,
  confidence=κ, seed)`` on ``flows_threat_model(model, noise="fresh")``: every query draws fresh
  noise, each step averages the margin loss over ``K`` draws in one batched pass of ``K·B`` rows
  (split into model calls of at most ``--model-batch`` rows, default 64; 0: one call),
  and an example stops at the first point that holds, with margin κ, in a strict majority of its
  ``K`` draws; one row per κ of ``--confidences`` (default 0, 0.5 and 1 nats);
- ``torchattacks-<loss>``: ``torchattacks.APGD(wrapper, norm="L2", eps=ε, steps=S, n_restarts=1,
  seed, loss, eot_iter=K, rho=0.75)``, a port of AutoAttack's ``APGDAttack``. The wrapper
  (:class:`DeployedClassifier`) takes ``x`` in [0, 1], returns ``model.class_scores(x − 0.5)``
  under fresh noise at every call (:class:`flows.noise.FreshNoise`) and counts the rows it
  evaluates. Its EOT is a Python loop of ``K`` passes of ``B`` rows; it runs all ``S`` steps for
  every example and returns the last iterate misclassified in *one* draw (AutoAttack's any-iterate
  rule). ``loss="ce"``: the cross-entropy of the class scores, which is fine on these models
  (softmax is shift-invariant; the Split prior's scores are of order −10 to −10², top-two margins
  of a few nats, so the posteriors do not saturate); ``loss="dlr"``: the difference-of-logits
  ratio, invariant to shift and scale (needs at least 3 classes; 10 here). Both by default.

The class scores are the model's own rule, ``model.class_scores`` (the Split prior's ``z_s``
logits), as ``flows_threat_model`` uses. No detector: the classification-only comparison, as
torchattacks knows no detector.

Equal footing: the same images, ε (L2 in the same units: the [0, 1] range is a shift of the
model's [−0.5, 0.5]), ``K``, ``S``, ``rho``, one restart, batches of ``--batch-size`` images, one
torch thread by default. Budget: torchattacks spends ``1 + K (S + 1)`` model evaluations per
example (its clean check, the start, ``S`` steps, each ``K`` draws), counted by the wrapper; ours
at most ``K (S + 1)`` (it stops an example at its first success), reported from
``AttackResult.queries``. torchattacks' points are projected back onto the ε-ball
(:func:`flows.attacks.apgd.project_to_ball_and_box`) where the float32 rounding of the shift to
[0, 1] and back (up to 3e-8 per pixel below 0.25) left them above ε (the count and the largest
move are recorded: about 2e-6 in L2); examples it reports as misclassified at its clean check
(one draw) are returned unattacked, as AutoAttack does, and counted.

Judged alike: :func:`flows.attacks.verify_over_noise` on a fresh deployed threat model (noise seed
``--verify-seed``, rebuilt for every row so that all rows see the same sequence of draws), ``N =
--verify-draws`` draws per adversarial, success when it fools in at least half of them
(``p ≥ 1/2``), percentages with Wilson 95 % intervals (:func:`flows.attacks.noise_statistics`), and
the per-image agreement of the two attacks.

Time: wall and CPU seconds of each attack (verification excluded), model evaluations per second.
EOT overhead: model evaluations per second of our EOT step (``APGDL2._evaluate``: one pass of
``K·B`` rows with the loss, its gradient and the majority verdict) against one plain batched
forward+backward of ``model.class_scores`` on the same ``K·B`` rows, and of torchattacks' step
(``K`` passes of ``B`` rows with cross-entropy), timed alternately over ``--overhead-repeats``
rounds (medians). The goals (issue 19): verified success at least torchattacks', wall time at
most half of it, our EOT step within 10 % of the plain pass.

Needs ``torchattacks`` (``pip install --no-deps torchattacks==3.5.1``: it pins
``requests~=2.25.1``, which conflicts with jupyterlab's, and never imports requests), which is not
a dependency of the package. What was measured, when, and with which command:
``benchmarks/apgd_vs_torchattacks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

import flows
from flows.attacks import (
    APGDL2,
    AttackResult,
    Misclassified,
    flows_threat_model,
    noise_statistics,
    repeat_draws,
    verify_over_noise,
)
from flows.attacks.apgd import project_to_ball_and_box
from flows.attacks.base import batches, flat_l2
from flows.attacks.experiment import derive_seed, first_correct, load_test_set
from flows.data import fixed_order
from flows.noise import FreshNoise

#: the benchmark's models: dataset key → (committed run, dataset name for ``load_test_set``,
#: sub-folder of ``--data-root`` holding it). CIFAR-10 is the JPEG q75 copy the run was trained on.
RUNS: dict[str, tuple[Path, str, str]] = {
    "mnist": (Path("artifacts/runs/cpu-mnist-split"), "mnist", ""),
    "cifar10": (Path("artifacts/runs/cpu-cifar-split"), "imagefolder", "cifar10-jpeg"),
}
#: default ε per dataset (L2, model units), where neither attack reaches 100 %: chosen on pilots of
#: 10 images, 20 steps (benchmarks/apgd_vs_torchattacks.md); at 0.05 ours succeeds on every image
#: from its random start on both datasets.
DEFAULT_EPS: dict[str, float] = {"mnist": 0.015, "cifar10": 0.03}
#: default κ of our rows (nats): the library's default 0, and margins that make a majority of K
#: draws more likely to mean a majority of fresh draws (pilot: benchmarks/apgd_vs_torchattacks.md).
DEFAULT_CONFIDENCES = (0.0, 0.5, 1.0)
TORCHATTACKS_LOSSES = ("ce", "dlr")

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Everything that determines a run; saved in the output JSON.

    Attributes:
        n: images per dataset (the first correctly classified ones of the fixed order).
        datasets: keys of :data:`RUNS` to run.
        eps: ε per dataset (L2).
        steps: S, APGD steps (both attacks).
        eot: K, noise draws per step (both attacks).
        losses: torchattacks' losses, one row each (``"ce"``, ``"dlr"``).
        confidences: κ of our rows (nats), one row each.
        ours_modes: ``"first"`` (stop each example at its first success, the default attack)
            and / or ``"to-end"`` (``stop_at_success=False``: every step, the successful point
            of lowest EOT loss): one row per mode and κ.
        verify_draws: N, fresh draws per adversarial in the verification (and the image choice).
        batch_size: images per attack batch (both attacks).
        model_batch: the most rows per model call of ours (:class:`flows.attacks.ThreatModel`;
            its ``K·B`` rows are split into calls of at most this many; None: one call, as
            before 2026-12-05).
        seed: the attacks' seed (random starts).
        noise_seed: the attacks' fresh-noise seed (both attacks: the same sequence of draws).
        verify_seed: the verification's fresh-noise seed.
        threads: torch intra-op threads.
        overhead_repeats: timed rounds of the EOT-overhead measurement.
    """

    n: int
    datasets: tuple[str, ...]
    eps: dict[str, float]
    steps: int
    eot: int
    losses: tuple[str, ...]
    confidences: tuple[float, ...]
    ours_modes: tuple[str, ...]
    verify_draws: int
    batch_size: int
    model_batch: int | None
    seed: int
    noise_seed: int
    verify_seed: int
    threads: int
    overhead_repeats: int


class DeployedClassifier(nn.Module):
    """The deployed flow classifier as torchattacks sees it: ``(B, ...)`` inputs in [0, 1] →
    ``(B, C)`` class scores of ``x − 0.5`` under fresh noise at every call, independently per
    row (:class:`flows.noise.FreshNoise` seeded once); counts the rows it evaluates."""

    def __init__(self, model: nn.Module, seed: int):
        super().__init__()
        self.model = model
        self.scores = FreshNoise(model.class_scores, seed)
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.scores(x - 0.5)


def timed(fn: Callable[..., T], *args: object) -> tuple[T, float, float]:
    """``fn(*args)``, its wall and CPU seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def run_ours(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    kappa: float,
    settings: Settings,
    stop_at_success: bool = True,
) -> AttackResult:
    """Our APGD-L2 with EOT on the deployed threat model (module docstring)."""
    threat_model = flows_threat_model(
        model, noise="fresh", noise_seed=settings.noise_seed, model_batch=settings.model_batch
    )
    attack = APGDL2(
        eps=eps,
        steps=settings.steps,
        eot_draws=settings.eot,
        rho=0.75,
        confidence=kappa,
        seed=settings.seed,
        stop_at_success=stop_at_success,
    )
    return attack(threat_model, x, Misclassified(y), batch_size=settings.batch_size)


def run_torchattacks(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, loss: str, settings: Settings
) -> tuple[AttackResult, dict]:
    """torchattacks' APGD on :class:`DeployedClassifier`, as an :class:`AttackResult` in the
    model's range, and what the adaptation did (``projected_back``, ``largest_move``,
    ``skipped_at_clean_check``)."""
    import torchattacks

    wrapper = DeployedClassifier(model, settings.noise_seed)
    attack = torchattacks.APGD(
        wrapper,
        norm="L2",
        eps=eps,
        steps=settings.steps,
        n_restarts=1,
        seed=settings.seed,
        loss=loss,
        eot_iter=settings.eot,
        rho=0.75,
    )
    parts, moved, largest, skipped = [], 0, 0.0, 0
    for part in batches(len(x), settings.batch_size):
        before = wrapper.rows
        # perturb is what attack(x, y) runs (after model.eval() and a copy); it also returns the
        # per-example verdict "still classified correctly" (AutoAttack's robust accuracy)
        robust, adv01 = attack.perturb(x[part] + 0.5, y[part].clone(), cheap=True)
        raw = adv01.detach() - 0.5
        adv = project_to_ball_and_box(raw, x[part], eps, (-0.5, 0.5))
        shift = flat_l2(adv, raw)
        moved += int((shift > 0).sum())
        largest = max(largest, float(shift.max()))
        claimed = ~robust.cpu()
        skipped += int((claimed & (flat_l2(adv, x[part]) == 0)).sum())
        b = part.stop - part.start
        per_example = (wrapper.rows - before) // b
        parts.append(
            AttackResult(
                adversarial=adv,
                success=claimed,
                l2=torch.where(claimed, flat_l2(adv, x[part]), torch.full((b,), math.inf)),
                queries=torch.full((b,), per_example, dtype=torch.int64),
                status=tuple("claimed" if c else "robust" for c in claimed.tolist()),
            )
        )
    notes = {"projected_back": moved, "largest_move": largest, "skipped_at_clean_check": skipped}
    return AttackResult.concatenate(parts), notes


def verified_row(
    name: str,
    settings_text: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    result: AttackResult,
    seconds: float,
    cpu_seconds: float,
    settings: Settings,
) -> dict:
    """Verify ``result`` under fresh noise and summarise the row (JSON-ready)."""
    deployed = flows_threat_model(model, noise="fresh", noise_seed=settings.verify_seed)
    verdicts = verify_over_noise(deployed, x, result, y, draws=settings.verify_draws, eps=eps)
    queries = int(result.queries.sum())
    row = {
        "attack": name,
        "settings": settings_text,
        "verified": noise_statistics(verdicts),
        "claimed": int(result.success.sum()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "queries_per_image": queries / len(x),
        "evaluations_per_second": queries / seconds,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        # per image, in the order of "images": the verified success and p_fool over N draws
        "success_per_image": verdicts.fools_classifier.tolist(),
        "p_fool_per_image": verdicts.p_fool.tolist(),
        # the distance of the returned point (0: the clean image was returned)
        "l2_per_image": verdicts.l2.tolist(),
    }
    summary = {k: row[k] for k in ("attack", "claimed", "seconds", "queries_per_image")}
    summary["verified_pct"] = row["verified"]["fools_classifier"]
    print(json.dumps(summary), flush=True)
    return row


def eot_overhead(model: nn.Module, x: Tensor, y: Tensor, eps: float, settings: Settings) -> dict:
    """Model evaluations per second (medians over ``overhead_repeats`` alternating rounds) of
    our EOT step, one plain forward+backward of the same ``K·B`` rows, and torchattacks' step
    (``K`` passes of ``B`` rows), on the first ``batch_size`` images."""
    b = min(settings.batch_size, len(x))
    k = settings.eot
    xb, yb = x[:b], y[:b]
    threat_model = flows_threat_model(
        model, noise="fresh", noise_seed=settings.noise_seed, model_batch=settings.model_batch
    )
    attack = APGDL2(eps=eps, steps=settings.steps, eot_draws=k)
    criterion = Misclassified(yb)
    plain_scores = FreshNoise(model.class_scores, settings.noise_seed)
    wrapper = DeployedClassifier(model, settings.noise_seed)
    cross_entropy = nn.CrossEntropyLoss(reduction="none")

    def ours() -> None:
        attack._evaluate(threat_model, xb, criterion)

    def plain() -> None:
        z = repeat_draws(xb, k).requires_grad_(True)
        torch.autograd.grad(plain_scores(z).sum(), z)

    def loop() -> None:
        z = (xb + 0.5).requires_grad_(True)
        grad = torch.zeros_like(z)
        for _ in range(k):
            grad += torch.autograd.grad(cross_entropy(wrapper(z), yb).sum(), z)[0]

    steps = {"ours_eot_step": ours, "plain_forward_backward": plain, "torchattacks_eot_step": loop}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        fn()  # warm-up
    for _ in range(settings.overhead_repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rates = {name: k * b / statistics.median(t) for name, t in times.items()}
    return {
        "rows": k * b,
        "images": b,
        "draws": k,
        "evaluations_per_second": rates,
        "seconds": times,
        "ours_over_plain": rates["ours_eot_step"] / rates["plain_forward_backward"],
        "torchattacks_over_plain": rates["torchattacks_eot_step"] / rates["plain_forward_backward"],
    }


def agreement(ours: dict, theirs: dict) -> dict:
    """Per-image counts of verified successes of two rows."""
    a, b = ours["success_per_image"], theirs["success_per_image"]
    pairs = list(zip(a, b, strict=True))
    return {
        "both": sum(p and q for p, q in pairs),
        "only_ours": sum(p and not q for p, q in pairs),
        "only_torchattacks": sum(q and not p for p, q in pairs),
        "neither": sum(not p and not q for p, q in pairs),
    }


def goals(rows: list[dict], overhead: dict) -> dict:
    """The issue's goals for each pair of our row and a torchattacks row."""
    out = {}
    for ours in (r for r in rows if r["attack"].startswith("ours")):
        for theirs in (r for r in rows if r["attack"].startswith("torchattacks")):
            mine, other = (
                ours["verified"]["fools_classifier"],
                theirs["verified"]["fools_classifier"],
            )
            out[f"{ours['attack']} vs {theirs['attack']}"] = {
                "success_at_least_theirs": mine["pct"] >= other["pct"],
                "success_pct": [mine["pct"], other["pct"]],
                "wall_ratio": ours["seconds"] / theirs["seconds"],
                "wall_at_most_half": ours["seconds"] <= 0.5 * theirs["seconds"],
                "agreement": agreement(ours, theirs),
            }
    out["eot_overhead_within_10pct"] = overhead["ours_over_plain"] >= 0.9
    return out


def benchmark_dataset(key: str, data_root: Path, settings: Settings) -> dict:
    """Choose the images of one run, attack them with every row, verify, time."""
    run_dir, dataset, folder = RUNS[key]
    model = flows.load(run_dir).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test_x, test_y = load_test_set(dataset, data_root / folder if folder else data_root, model)
    order = fixed_order(len(test_x))
    chooser = flows_threat_model(
        model, noise="fresh", noise_seed=derive_seed(settings.noise_seed, "select")
    )
    positions, examined = first_correct(
        lambda images: chooser.classify(images, draws=settings.verify_draws),
        test_x[order],
        test_y[order],
        settings.n,
        batch_size=16,
    )
    if len(positions) < settings.n:
        raise SystemExit(f"{key}: only {len(positions)} correctly classified test images")
    chosen = order[positions]
    x, y = test_x[chosen], test_y[chosen].long()
    eps = settings.eps[key]
    rows = []
    for mode in settings.ours_modes:
        for kappa in settings.confidences:
            stop = mode == "first"
            result, seconds, cpu = timed(run_ours, model, x, y, eps, kappa, settings, stop)
            text = f"APGDL2(eps={eps}, steps={settings.steps}, eot_draws={settings.eot}, rho=0.75, "
            text += f"confidence={kappa}, seed={settings.seed}, stop_at_success={stop}), "
            text += "noise='fresh'"
            name = f"ours-k{kappa:g}" + ("" if stop else "-to-end")
            rows.append(verified_row(name, text, model, x, y, eps, result, seconds, cpu, settings))
    for loss in settings.losses:
        (result, notes), seconds, cpu = timed(run_torchattacks, model, x, y, eps, loss, settings)
        text = f"torchattacks.APGD(norm='L2', eps={eps}, steps={settings.steps}, n_restarts=1, "
        text += f"seed={settings.seed}, loss='{loss}', eot_iter={settings.eot}, rho=0.75)"
        row = verified_row(
            f"torchattacks-{loss}", text, model, x, y, eps, result, seconds, cpu, settings
        )
        rows.append(row | notes)
    overhead = eot_overhead(model, x, y, eps, settings)
    print(json.dumps({"eot_overhead": overhead["evaluations_per_second"]}), flush=True)
    return {
        "run": str(run_dir),
        "dataset": dataset,
        "eps": eps,
        "images": chosen.tolist(),
        "classified_to_find_them": examined,
        "results": rows,
        "eot_overhead": overhead,
        "goals": goals(rows, overhead),
    }


def parse_settings(argv: list[str] | None = None) -> tuple[Settings, Path, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-root",
        type=Path,
        required=True,
        help="folder holding MNIST/raw/ (torchvision) and cifar10-jpeg/test/ (ImageFolder)",
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--datasets", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--eps-mnist", type=float, default=DEFAULT_EPS["mnist"])
    parser.add_argument("--eps-cifar10", type=float, default=DEFAULT_EPS["cifar10"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eot", type=int, default=8)
    parser.add_argument(
        "--losses",
        nargs="*",
        default=list(TORCHATTACKS_LOSSES),
        choices=TORCHATTACKS_LOSSES,
        help="torchattacks' rows (none: only ours, e.g. to add rows to an earlier run's images)",
    )
    parser.add_argument(
        "--ours-modes",
        nargs="+",
        default=["first"],
        choices=("first", "to-end"),
        help="our rows: stop at the first success (first) and/or run every step (to-end)",
    )
    parser.add_argument("--confidences", nargs="+", type=float, default=list(DEFAULT_CONFIDENCES))
    parser.add_argument("--verify-draws", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument(
        "--model-batch",
        type=int,
        default=64,
        help="ours: most rows per model call (0: one call of K·B rows, as before 2026-12-05)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--verify-seed", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: stable timings on a shared machine)",
    )
    parser.add_argument("--overhead-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/apgd_vs_torchattacks.json"))
    args = parser.parse_args(argv)
    for name in ("n", "steps", "eot", "verify_draws", "batch_size", "threads", "overhead_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name.replace('_', '-')}: must be >= 1")
    if args.model_batch < 0:
        parser.error("argument --model-batch: must be >= 0 (0: one call)")
    for name in ("eps_mnist", "eps_cifar10"):
        if not 0 < getattr(args, name) < math.inf:
            parser.error(f"argument --{name.replace('_', '-')}: must be a finite number > 0")
    if any(not 0 <= k < math.inf for k in args.confidences):
        parser.error("argument --confidences: must be finite numbers >= 0 (nats)")
    settings = Settings(
        n=args.n,
        datasets=tuple(args.datasets),
        eps={"mnist": args.eps_mnist, "cifar10": args.eps_cifar10},
        steps=args.steps,
        eot=args.eot,
        losses=tuple(args.losses),
        confidences=tuple(args.confidences),
        ours_modes=tuple(dict.fromkeys(args.ours_modes)),
        verify_draws=args.verify_draws,
        batch_size=args.batch_size,
        model_batch=args.model_batch or None,
        seed=args.seed,
        noise_seed=args.noise_seed,
        verify_seed=args.verify_seed,
        threads=args.threads,
        overhead_repeats=args.overhead_repeats,
    )
    return settings, args.data_root, args.out


def main(argv: list[str] | None = None) -> None:
    settings, data_root, out = parse_settings(argv)
    import torchattacks

    torch.set_num_threads(settings.threads)
    report = {
        "config": asdict(settings)
        | {
            "data_root": str(data_root),
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "threads_in_use": torch.get_num_threads(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "datasets": {},
    }
    for key in settings.datasets:
        report["datasets"][key] = benchmark_dataset(key, data_root, settings)
        out.write_text(json.dumps(report, indent=2))  # after every dataset
    report["config"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
