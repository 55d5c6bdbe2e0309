"""``python -m flows.attack``: bad arguments, run folders, data roots and output paths fail with one
line on stderr and exit status 2, before any work; the default output rule."""

import json
import os
import pickle

import pytest
import torch

import flows
import flows.cli.attack as cli
from flows import arguments
from flows.attacks import experiment

BASE = ["--attack", "cw", "--dataset", "synthetic", "--eps", "1.0", "--threshold", "6.2"]


def fails(capsys, argv, *needles):
    """Run the CLI, expect exit status 2 and one error line holding every needle, last on stderr
    (after progress bars, for errors found while running)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"{cli.PROG}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--n", "0"], "--n"),
        (["--n", "-3"], "--n"),
        (["--n", "2.5"], "--n"),
        (["--recall-n", "0"], "--recall-n"),
        (["--batch-size", "0"], "--batch-size"),
        (["--binary-search-steps", "0"], "--binary-search-steps"),
        (["--cw-steps", "0"], "--cw-steps"),
        (["--boundary-steps", "0"], "--boundary-steps"),
        (["--max-queries", "0"], "--max-queries"),
        (["--proposal-scale", "0"], "--proposal-scale"),
        (["--pool-size", "0"], "--pool-size"),
        (["--example-images", "-1"], "--example-images"),
        (["--eps", "-1"], "--eps"),
        (["--eps", "nan"], "--eps"),
        (["--eps", "inf"], "--eps"),
        (["--threshold", "nan"], "--threshold"),
        (["--threshold", "-inf"], "--threshold"),
        (["--threshold-quantile", "0"], "--threshold-quantile"),
        (["--threshold-quantile", "1.5"], "--threshold-quantile"),
        (["--stepsize", "0"], "--stepsize"),
        (["--stepsize", "inf"], "--stepsize"),
        (["--confidence", "-0.5"], "--confidence"),
        (["--confidence", "nan"], "--confidence"),
        (["--seed", "-1"], "--seed"),
        (["--noise-seed", "-1"], "--noise-seed"),
        (["--fresh-noise-seed", "-1"], "--fresh-noise-seed"),
        (["--order-seed", "-1"], "--order-seed"),
        (["--initial-const", "0"], "--initial-const"),
        (["--initial-const", "inf"], "--initial-const"),
        (["--order-seed", "3", "--stored-order"], "--stored-order"),
        (["--device", "nonsense"], "--device"),
        (["--threat-model", "foo"], "--threat-model"),
        (["--attack", "fgsm"], "--attack"),
        (["--eot", "0"], "--eot"),
        (["--eot", "1.5"], "--eot"),
        (["--decision-draws", "0"], "--decision-draws"),
        (["--decision-quorum", "1"], "--decision-quorum"),
        (["--decision-quorum", "0.3"], "--decision-quorum"),
        (["--verify-draws", "0"], "--verify-draws"),
        (["--cw-space", "pixel"], "--cw-space"),
        (["--apgd-steps", "0"], "--apgd-steps"),
        (["--apgd-restarts", "0"], "--apgd-restarts"),
        (["--apgd-detector-mode", "max"], "--apgd-detector-mode"),
        (["--segment-grid", "0"], "--segment-grid"),
        (["--match-steps", "0"], "--match-steps"),
        (["--sanity-n", "0"], "--sanity-n"),
        (["--threads", "0"], "--threads"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_out_of_range_arguments_exit_2_with_one_line(tmp_path, capsys, extra, needle):
    # the threshold of BASE is dropped where the case sets the detector itself
    base = BASE[:-2] if any(a.startswith("--threshold") for a in extra) else BASE
    fails(capsys, [str(tmp_path), *base, *extra], f"argument {needle}")


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--eot", "4"], ("--eot 4 needs --threat-model deployed",)),
        (["--decision-draws", "3"], ("--decision-draws 3 needs --threat-model deployed",)),
        (["--verify-draws", "1"], ("--verify-draws", "--no-audit")),
    ],
    ids=lambda value: " ".join(value),
)
def test_options_that_contradict_each_other_exit_2_with_one_line(tmp_path, capsys, extra, needles):
    fails(capsys, [str(tmp_path), *BASE, *extra], *needles)


def test_threshold_and_quantile_are_exclusive(tmp_path, capsys):
    fails(capsys, [str(tmp_path), *BASE, "--threshold-quantile", "0.5"], "--threshold")


def test_range_messages_say_the_valid_range(tmp_path, capsys):
    assert ">= 1" in fails(capsys, [str(tmp_path), *BASE, "--n", "0"], "--n")
    assert "(0, 1]" in fails(
        capsys, [str(tmp_path), *BASE[:-2], "--threshold-quantile", "2"], "--threshold-quantile"
    )


def test_run_dir_must_be_an_existing_folder(tmp_path, capsys):
    fails(capsys, [str(tmp_path / "missing"), *BASE], "argument run_dir", "does not exist")
    (tmp_path / "file").write_text("x")
    fails(capsys, [str(tmp_path / "file"), *BASE], "argument run_dir", "not a folder")


def test_run_folder_without_checkpoint(tmp_path, capsys, make_run):
    run = make_run(tmp_path / "run", model=False)
    fails(capsys, [str(run), *BASE], "no trained model", "checkpoint")


def test_malicious_and_non_checkpoint_files_are_refused(tmp_path, capsys, make_run):
    run = make_run(tmp_path / "run", model=False)

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file when unpickled

    torch.save({"model": Payload()}, run / "checkpoint.pt")
    fails(capsys, [str(run), *BASE], "refused to load")
    assert not marker.exists()
    (run / "checkpoint.pt").write_bytes(b"not a torch file\n" * 10)
    fails(capsys, [str(run), *BASE], "not a torch checkpoint")
    torch.save({"weights": torch.ones(2)}, run / "checkpoint.pt")
    fails(capsys, [str(run), *BASE], "lacks model")
    (run / "checkpoint.pt").write_bytes(pickle.dumps([1, 2], protocol=2))
    fails(capsys, [str(run), *BASE], str(run / "checkpoint.pt"))


def test_unreadable_config_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    fails(capsys, [str(tmp_path), *BASE], "argument run_dir", "config.json")


def test_missing_dataset_is_one_line_without_download_hint(tmp_path, capsys, make_run, monkeypatch):
    monkeypatch.delenv("CGM_DATA_ROOT", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    run = make_run(tmp_path / "run", train={"dataset": "mnist", "data_root": str(empty)})
    argv = [str(run), "--attack", "cw", "--output", str(tmp_path / "out.json")]
    line = fails(
        capsys,
        argv,
        "mnist test set is not under data root",
        str(empty),
        "recorded in RUN_DIR/config.json",
    )
    assert "download" not in line
    # $CGM_DATA_ROOT beats the recorded root, --data-root beats both
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("CGM_DATA_ROOT", str(other))
    fails(capsys, argv, str(other), "$CGM_DATA_ROOT")
    fails(capsys, [*argv, "--data-root", str(empty)], str(empty), "from --data-root")
    fails(capsys, [*argv, "--data-root", str(tmp_path / "nowhere")], "argument --data-root")


def test_dataset_without_data_root(tmp_path, capsys, make_run, monkeypatch):
    monkeypatch.delenv("CGM_DATA_ROOT", raising=False)
    run = make_run(tmp_path / "run", model=False, train={"dataset": "mnist"})
    fails(
        capsys,
        [str(run), "--attack", "cw", "--output", str(tmp_path / "o.json")],
        "argument --data-root",
        "CGM_DATA_ROOT",
    )


def test_no_paper_defaults_for_other_datasets(tmp_path, capsys):
    argv = [str(tmp_path), "--attack", "cw", "--dataset", "synthetic"]
    fails(capsys, [*argv, "--threshold", "6.2"], "argument --eps")
    fails(capsys, [*argv, "--eps", "1"], "argument --threshold", "--threshold-quantile")
    fails(capsys, [str(tmp_path), "--attack", "cw"], "argument --dataset")


def test_committed_runs_need_output(capsys):
    run = arguments.ARTIFACTS_ROOT / "runs" / "cpu-mnist-split"
    if not run.is_dir():
        pytest.skip("committed run cpu-mnist-split is not in this checkout")
    before = sorted(p.name for p in run.iterdir())
    fails(capsys, [str(run), "--attack", "cw"], "--output is required", "artifacts")
    assert sorted(p.name for p in run.iterdir()) == before  # nothing created (no attacks/)


def test_default_output_rule(tmp_path, capsys, monkeypatch, model_classes):
    """Runs inside the artifacts folder need --output (and get none beside them); other runs write
    RUN_DIR/attacks/<attack>.json."""
    monkeypatch.setattr(arguments, "ARTIFACTS_ROOT", tmp_path / "artifacts")
    inside = tmp_path / "artifacts" / "runs" / "mine"
    inside.mkdir(parents=True)
    fails(capsys, [str(inside), *BASE], "--output is required", "artifacts")
    fails(capsys, [str(inside / ".." / "mine"), *BASE], "--output is required")
    assert not (inside / "attacks").exists()

    TwoGaussian, _ = model_classes
    model = TwoGaussian(shape=(1, 2, 4))
    x = torch.cat([model.point(-0.25), model.point(0.25)] * 3).reshape(6, 1, 2, 4)
    y = torch.tensor([0, 1] * 3)
    monkeypatch.setattr(flows, "load", lambda path, map_location="cpu": model)
    monkeypatch.setattr(experiment, "load_test_set", lambda *args, **kwargs: (x, y))
    fast = [
        "--n",
        "2",
        "--recall-n",
        "6",
        "--binary-search-steps",
        "1",
        "--cw-steps",
        "2",
        "--example-images",
        "0",
    ]
    elsewhere = tmp_path / "results" / "mine.json"
    cli.main([str(inside), *BASE, *fast, "--output", str(elsewhere)])
    assert elsewhere.is_file() and not (inside / "attacks").exists()
    outside = tmp_path / "run"
    outside.mkdir()
    cli.main([str(outside), *BASE, *fast])
    assert json.loads((outside / "attacks" / "cw.json").read_text())["config"]["attack"] == "cw"


def test_output_must_be_a_writable_json_file(tiny_run, tmp_path, capsys):
    checkpoint = tiny_run / "checkpoint.pt"
    before = checkpoint.read_bytes()
    fails(capsys, [str(tiny_run), *BASE, "--output", str(checkpoint)], "--output must be a .json")
    assert checkpoint.read_bytes() == before
    folder = tmp_path / "folder.json"
    folder.mkdir()
    fails(capsys, [str(tiny_run), *BASE, "--output", str(folder)], "--output", "is a folder")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    fails(
        capsys,
        [str(tiny_run), *BASE, "--output", str(blocker / "out.json")],
        "--output: ",
        "blocker",
    )
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            fails(
                capsys,
                [str(tiny_run), *BASE, "--output", str(locked / "out.json")],
                "--output: ",
                "not writable",
            )
        finally:
            locked.chmod(0o700)


def test_too_few_correct_images_is_one_line(tiny_run, capsys):
    fails(
        capsys,
        [str(tiny_run), *BASE, "--n", "100", "--recall-n", "8", "--batch-size", "64"],
        "correctly classified",
        "--n 100",
    )


def test_end_to_end_on_a_tiny_synthetic_run(tiny_run, capsys, monkeypatch):
    """A real run folder (checkpoint + config.json): flows.load, the synthetic test split of the
    run's size, the attack, the JSON and the PNG beside the run."""
    monkeypatch.delenv("CGM_DATA_ROOT", raising=False)  # the run's recorded root applies
    report = cli.main(
        [
            str(tiny_run),
            "--attack",
            "cw",
            "--n",
            "2",
            "--eps",
            "5",
            "--threshold-quantile",
            "0.9",
            "--recall-n",
            "16",
            "--batch-size",
            "8",
            "--binary-search-steps",
            "1",
            "--cw-steps",
            "3",
            "--example-images",
            "2",
        ]
    )
    saved = json.loads((tiny_run / "attacks" / "cw.json").read_text())
    assert saved["attacked_indices"] == report["attacked_indices"]
    assert all(0 <= i < 64 for i in saved["attacked_indices"])  # synthetic_size of the run
    assert saved["data"] == {"dataset": "synthetic", "data_root": None}
    assert saved["detector"]["rule"] == "quantile" and saved["detector"]["recall_n"] == 16
    assert (tiny_run / "attacks" / "cw_examples.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(capsys.readouterr().out)["output"] == str(tiny_run / "attacks" / "cw.json")
