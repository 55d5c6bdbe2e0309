"""Our CW-L2 and Boundary attacks against foolbox 3, on the same classifier and the same images.

``python benchmarks/attacks_vs_foolbox.py --data-root DIR`` loads a small MNIST CNN from ``--cache``
(committed: ``benchmarks/mnist_cnn.pt``, the network of the README's tables; when the file is
missing it trains one epoch, seeded, and writes it there), takes the first ``--n`` correctly
classified test images and runs, in one process:

- CW-L2: ours with default settings; foolbox ``L2CarliniWagnerAttack`` with its defaults (9 × 10000
  steps) and with the reduced setting (5 × 1000 steps);
- Boundary: ours (defaults, and with low-frequency proposals, ``LOW_FREQUENCY``) and foolbox
  ``BoundaryAttack`` at the same number of model queries per image (``--queries``); foolbox's
  step count is chosen so that its queries, counted by a wrapper around the model, match.

Rows of an earlier run with the same classifier, images and budget are kept in ``--output`` unless
run again (``--skip`` the others), and the file is rewritten after every row, so the long rows can
be measured in runs of their own.

With ``--glow-run RUN_DIR`` the classifier is instead a trained flows model (``flows.load``): its
class log-likelihoods with the padding/noise fixed by a seed (``flows.noise.FixedNoise``, one batched
call per query), given to both libraries as logits (softmax of log-likelihoods = p(y|x)).

It reports the success rate, median L2 (failures count as ∞), wall and CPU time and model queries
per second, and writes ``--output`` (JSON). Needs ``foolbox`` 3 (``pip install foolbox``), which
is not a dependency of the package. Inputs are ``k/256 − 0.5`` in bounds [−0.5, 0.5] as in the flows
package; the CNN sees the 28×28 images. What was measured, when, and with which command:
``benchmarks/attacks.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from flows.attacks import BoundaryAttack, CarliniWagnerL2, DecisionModel, Misclassified, ThreatModel
from flows.noise import FixedNoise

# Our Boundary attack with low-frequency proposals; the two settings were chosen on the first 40
# of the CNN's 100 benchmark images (README).
LOW_FREQUENCY = {"proposal_scale": 2, "adapt_every": 20}
SETTINGS = {
    "cw": "ours, defaults: initial_const='auto', 9 x 300 Adam steps, warm start",
    "fb-cw-reduced": "foolbox L2CarliniWagnerAttack(binary_search_steps=5, steps=1000)",
    "fb-cw-default": "foolbox L2CarliniWagnerAttack() (9 x 10000 steps)",
    "boundary": "ours, defaults (i.i.d. proposals), max_queries = --queries",
    "boundary-lf": f"ours, {LOW_FREQUENCY}, max_queries = --queries",
    "fb-boundary": "foolbox BoundaryAttack(steps) with steps matched to --queries",
}


class CountingModel(nn.Module):
    """Wraps a classifier and counts the rows it evaluates (model queries)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.net(x)


class FixedNoiseClassifier(nn.Module):
    """A flows model's class log-likelihoods under fixed noise, as an ``nn.Module`` for foolbox."""

    def __init__(self, model: nn.Module, seed: int):
        super().__init__()
        self.model = model
        self.scores = FixedNoise(model.class_log_likelihoods, seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.scores(x)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def load_mnist(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    import torchvision

    data = torchvision.datasets.MNIST(str(root), train=train, download=False)
    return data.data[:, None].float() / 256 - 0.5, data.targets.long()


def train_cnn(root: Path, cache: Path, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # before the initialisation: the same seed gives the same CNN
    net = small_cnn()
    if cache.is_file():
        net.load_state_dict(torch.load(cache))
        return net.eval()
    x, y = load_mnist(root, train=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), cache)
    return net.eval()


def weights_sha256(net: nn.Module) -> str:
    """Fingerprint of the classifier's weights: retraining the CNN on another machine (another
    oneDNN kernel choice) gives a slightly different network, whose rows must not be merged."""
    digest = hashlib.sha256()
    for tensor in net.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def summarise(
    name: str,
    x: Tensor,
    adv: Tensor,
    success: Tensor,
    seconds: float,
    cpu_seconds: float,
    queries: float,
    net: nn.Module,
    y: Tensor,
) -> dict:
    """Re-verify (label wrong, in bounds) and summarise one attack run."""
    with torch.no_grad():
        wrong = net(adv).argmax(1) != y
    in_bounds = ((adv >= -0.5) & (adv <= 0.5)).flatten(1).all(1)
    ok = success & wrong & in_bounds
    l2 = torch.where(ok, (adv - x).flatten(1).norm(dim=1), torch.full((len(x),), math.inf))
    row = {
        "attack": name,
        "settings": SETTINGS[name],
        "success_pct": 100.0 * ok.double().mean().item(),
        "median_l2": l2.median().item(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "queries_per_image": queries,
        "queries_per_second": queries * len(x) / seconds,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        # per image, in the order of config["images"]; null where the attack failed
        "l2_per_image": [v if math.isfinite(v) else None for v in l2.tolist()],
    }
    print(json.dumps({k: v for k, v in row.items() if k != "l2_per_image"}))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/mnist_cnn.pt"))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: stable timings on a shared machine)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=list(SETTINGS))
    parser.add_argument(
        "--glow-run",
        type=Path,
        default=None,
        help="attack this trained flows run instead of the CNN",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/attacks_vs_foolbox.json"))
    args = parser.parse_args()

    import foolbox as fb

    torch.set_num_threads(args.threads)
    if args.glow_run is None:
        net = train_cnn(args.data_root, args.cache, args.epochs, args.seed)
    else:
        import flows

        net = FixedNoiseClassifier(flows.load(args.glow_run).eval(), args.seed)
    for p in net.parameters():
        p.requires_grad_(False)
    test_x, test_y = load_mnist(args.data_root, train=False)
    with torch.no_grad():
        correct = torch.cat([net(test_x[s : s + 1000]).argmax(1) for s in range(0, 10000, 1000)])
    accuracy = (correct == test_y).double().mean().item()
    chosen = torch.nonzero(correct == test_y).flatten()[: args.n]
    x, y = test_x[chosen], test_y[chosen]
    counted = CountingModel(net).eval()
    fmodel = fb.PyTorchModel(counted, bounds=(-0.5, 0.5))
    results = []

    def run(name, fn):
        if name in args.skip:
            return
        counted.rows = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        adv, success, queries = fn()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        queries = counted.rows / len(x) if queries is None else queries
        results.append(summarise(name, x, adv, success, seconds, cpu, queries, net, y))

    def ours_cw():
        r = CarliniWagnerL2()(ThreatModel(counted, num_classes=10), x, Misclassified(y))
        return r.adversarial, r.success, r.queries.double().mean().item()

    def foolbox_cw(**kwargs):
        def go():
            attack = fb.attacks.L2CarliniWagnerAttack(**kwargs)
            raw, _, success = attack(fmodel, x, y, epsilons=None)
            return raw, success, None

        return go

    def ours_boundary(**options):
        def go():
            attack = BoundaryAttack(
                max_queries=args.queries, steps=10 * args.queries, seed=args.seed, **options
            )
            decision = DecisionModel(lambda z: counted(z).argmax(1), num_classes=10)
            r = attack(decision, x, Misclassified(y))
            return r.adversarial, r.success, r.queries.double().mean().item()

        return go

    def foolbox_boundary():
        # foolbox: ~50 init queries, then 1 query per step plus 1 every 10th step
        steps = int((args.queries - 60) / 1.1)
        attack = fb.attacks.BoundaryAttack(steps=steps)
        raw, _, success = attack(fmodel, x, y, epsilons=None)
        return raw, success, None

    config = {
        **{k: str(v) for k, v in vars(args).items() if k not in ("skip", "output")},
        "classifier_test_accuracy": accuracy,
        "threads": torch.get_num_threads(),
        "classifier_sha256": weights_sha256(net),
        "foolbox": fb.__version__,
        "torch": torch.__version__,
        "images": chosen.tolist(),
    }
    # Rows of an earlier run on the same classifier and images are kept unless re-run here, so a
    # long row (foolbox's default CW) can be measured in a run of its own.
    kept = []
    if args.output.is_file():
        earlier = json.loads(args.output.read_text())
        same = all(
            earlier.get("config", {}).get(k) == config[k]
            for k in (
                "n",
                "queries",
                "glow_run",
                "seed",
                "epochs",
                "images",
                "classifier_test_accuracy",
            )
        )
        recorded = earlier.get("config", {}).get("classifier_sha256")
        same = same and recorded in (None, config["classifier_sha256"])
        if same:
            kept = earlier["results"]

    def save():
        fresh = {row["attack"] for row in results}
        rows = [row for row in kept if row["attack"] not in fresh] + results
        order = list(SETTINGS)
        rows.sort(key=lambda row: order.index(row["attack"]))
        args.output.write_text(json.dumps({"config": config, "results": rows}, indent=2))

    for name, fn in [
        ("cw", ours_cw),
        ("fb-cw-reduced", foolbox_cw(binary_search_steps=5, steps=1000)),
        ("fb-cw-default", foolbox_cw()),
        ("boundary", ours_boundary()),
        ("boundary-lf", ours_boundary(**LOW_FREQUENCY)),
        ("fb-boundary", foolbox_boundary),
    ]:
        run(name, fn)
        save()  # after every row: a killed run keeps what it measured


if __name__ == "__main__":
    main()
