"""Issue 18 on a lent GPU, as one prepared command: ``paper-mnist`` Split and Reweight training.

    PYTHONPATH=. python benchmarks/gpu_paper_mnist.py --mnist-gz DIR --out OUT --seconds S

Decompresses the four MNIST ``*.gz`` files of ``DIR`` (gzipped copies of ``MNIST/raw``, made by
``gzip -k``: the raw files do not fit the device tool's 64 MiB tree) into a temporary data root,
then trains ``--variants`` (default Split and Reweight) with ``python -m flows.train --preset
paper-mnist --amp --device cuda`` *concurrently* on the one GPU, for ``S`` seconds of wall time.
At the deadline each training gets SIGINT; its run folder then holds the checkpoint of its last
``--checkpoint-every`` step (the training saves atomically) and every end-of-epoch evaluation in
``metrics.jsonl``. Alongside, ``benchmarks/gpu_check.py`` runs for at most ``--check-seconds``.

What comes back under ``OUT`` (the device tool returns at most 8 files of 16 MiB, 2 folders deep):
per run ``OUT/<variant>.tar`` (the checkpoint without the optimiser state, ``metrics.jsonl``,
``config.json``) and ``OUT/<variant>.optimizer.pt`` (the optimiser state), and ``OUT/log.txt``,
``OUT/gpu_check.json``. The first run (2026-12-04) lost its checkpoints to the size limit. ``python benchmarks/gpu_paper_mnist.py join TAR RUN_DIR`` unpacks a tar
here into a run folder with one ``checkpoint.pt`` that ``python -m flows.train --resume``,
``flows.evaluate`` and ``flows.load`` read.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

RAW = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def unpack_mnist(gz_dir: Path, root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in RAW:
        with gzip.open(gz_dir / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def pack_run(run: Path, tar_path: Path) -> dict:
    """``run``'s checkpoint without the optimiser state + metrics + config as one tar, and the
    optimiser state beside it (``<tar stem>.optimizer.pt``): each under the 16 MiB a returned file
    may have (a ``paper-mnist`` checkpoint is 19 MB: 6 MB of weights, 12 MB of Adam moments)."""
    info: dict = {"run": run.name}
    members: dict[str, bytes] = {}
    checkpoint_path = run / "checkpoint.pt"
    if checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        optimizer = checkpoint.pop("optimizer", None)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        members["model.pt"] = buffer.getvalue()
        torch.save(optimizer, tar_path.with_suffix(".optimizer.pt"))
        info["position"] = checkpoint.get("position")
    for name in ("metrics.jsonl", "config.json"):
        if (run / name).is_file():
            members[name] = (run / name).read_bytes()
    with tarfile.open(tar_path, "w") as tar:
        for name, data in members.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    info["bytes"] = tar_path.stat().st_size
    return info


def join(tar_path: Path, run_dir: Path) -> None:
    """Unpack a tar of :func:`pack_run` (and its optimiser file) into ``run_dir`` with one
    ``checkpoint.pt``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        parts = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    for name in ("metrics.jsonl", "config.json"):
        if name in parts:
            (run_dir / name).write_bytes(parts[name])
    if "model.pt" in parts:
        checkpoint = torch.load(io.BytesIO(parts["model.pt"]), weights_only=True)
        optimizer_path = tar_path.with_suffix(".optimizer.pt")
        optimizer = (
            torch.load(optimizer_path, weights_only=True) if optimizer_path.is_file() else None
        )
        if optimizer is not None:
            checkpoint["optimizer"] = optimizer
        torch.save(checkpoint, run_dir / "checkpoint.pt")


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.txt", "a")

    def say(text: str) -> None:
        print(text, flush=True)
        log.write(text + "\n")
        log.flush()

    started = time.time()
    root = unpack_mnist(Path(args.mnist_gz), Path(args.work) / "data")
    say(f"mnist unpacked in {time.time() - started:.1f} s; torch {torch.__version__}")
    runs = Path(args.work) / "runs"
    processes = {}

    def launch(variant: str, amp: bool) -> subprocess.Popen:
        run = runs / f"{args.preset}-{variant}"
        command = [
            sys.executable, "-m", "flows.train", "--preset", args.preset, "--variant", variant,
            "--out", str(run), "--data-root", str(root), "--device", args.device,
            "--checkpoint-every", str(args.checkpoint_every), "--threads", "4",
        ]  # fmt: skip
        if amp:
            command.append("--amp")
        else:
            command.append("--overwrite")
        if args.epochs is not None:
            command += ["--epochs", str(args.epochs), "--train-limit", "256", "--eval-limit", "64"]
        say(" ".join(command))
        return subprocess.Popen(
            command, stdout=open(runs.parent / f"{variant}.log", "a"), stderr=subprocess.STDOUT
        )

    for variant in args.variants:
        processes[variant] = launch(variant, args.amp)
    check = None
    if args.check_seconds > 0:
        check = subprocess.Popen(
            ["timeout", str(args.check_seconds), sys.executable, "benchmarks/gpu_check.py",
             "--out", str(Path(args.work) / "check"), "--device", args.device],
            stdout=open(runs.parent / "check.log", "w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = started + args.seconds
    retried: set[str] = set()
    while time.time() < deadline and any(p.poll() is None for p in processes.values()):
        time.sleep(5)
        for variant, process in list(processes.items()):
            # a failure of the bfloat16 path: once, the same run in float32
            if process.poll() not in (None, 0) and args.amp and variant not in retried:
                say(f"{variant} failed with --amp (exit {process.returncode}); float32 instead")
                retried.add(variant)
                processes[variant] = launch(variant, False)
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for variant, process in processes.items():
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        say(f"{variant}: exit {process.returncode}")
        tail = (runs.parent / f"{variant}.log").read_text(errors="replace")[-1500:]
        say(tail.replace("\r", "\n").splitlines()[-1] if tail else "(no output)")
        run = runs / f"{args.preset}-{variant}"
        for line in (
            (run / "metrics.jsonl").read_text().splitlines()
            if (run / "metrics.jsonl").is_file()
            else []
        ):
            if '"eval"' in line:
                say(line)
        say(json.dumps(pack_run(run, out / f"{variant}.tar")))
    if check is not None:
        check.wait()
        report = Path(args.work) / "check" / "gpu_check.json"
        if report.is_file():
            shutil.copy(report, out / "gpu_check.json")
        say("gpu_check: " + (runs.parent / "check.log").read_text(errors="replace")[-1500:])
    say(f"total {time.time() - started:.0f} s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "join":
        join(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist-gz", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/paper_mnist")
    parser.add_argument("--seconds", type=float, default=420)
    parser.add_argument("--check-seconds", type=int, default=150)
    parser.add_argument("--preset", default="paper-mnist", help="another for a CPU smoke run")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=["split", "reweight"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--checkpoint-every", type=int, default=300)
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    train(parser.parse_args())


if __name__ == "__main__":
    main()
