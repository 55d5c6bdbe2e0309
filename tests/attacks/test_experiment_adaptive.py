"""The adaptive evaluation of ``flows.attacks.experiment`` (issue 19) on a randomised toy model.

The toy is the two-Gaussian class-conditional model of ``conftest.py`` with uniform input noise
of width 0.01 drawn from the generator it is given: under ``FixedNoise`` a deterministic function,
under ``FreshNoise`` (the deployed threat model) a fresh draw per row and call. Every attack name
runs under both threat models; the report's statistics are recomputed here from its per-example
records (verified-only medians, Wilson intervals, the success rule); an interrupted run resumes to
the same report; the sanity checks and the randomness audit are wired to the run.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from flows.attacks import (
    AttackResult,
    CarliniWagnerL2,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
    experiment,
    flows_threat_model,
    verify,
    verify_over_noise,
    wilson_interval,
)
from flows.attacks.experiment import (
    ATTACKS,
    ENSEMBLE,
    AttackConfig,
    ExperimentError,
    at_eps,
    round_to_8bit,
    run_experiment,
)
from flows.attacks.verification import Verification
from flows.preprocess import to_model_range

TOY = {
    "n": 4,
    "eps": 1.0,
    "threshold": 6.2,
    "recall_n": 30,
    "batch_size": 2,
    "verify_draws": 16,
    "binary_search_steps": 3,
    "cw_steps": 40,
    "stepsize": 1e-2,  # 40 steps over distances of order 0.3 (the default 1e-3 is for images)
    "apgd_steps": 20,
    "boundary_steps": 300,
    "max_queries": 300,
    "match_steps": 40,
    "segment_grid": 16,
    "pool_size": 20,
    "example_images": 0,
}
#: cheaper draws than the deployed defaults (8 and 15)
DEPLOYED = {"threat_model": "deployed", "eot": 4, "decision_draws": 5}
SECTIONS = ("attack_noise", "fresh_noise", "deployed")


@pytest.fixture
def toy(model_classes):
    """The noisy two-Gaussian model and 30 test images near the class means (labels 0, 1)."""
    TwoGaussian, _ = model_classes
    model = TwoGaussian(noise=0.01, shape=(1, 2, 4))
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(30) % 2
    centres = torch.where(y[:, None] == 1, model.means[1], model.means[0])
    x = (centres + 0.04 * torch.randn(30, 8, generator=gen, dtype=torch.float64)).clamp(-0.5, 0.5)
    return model, x.reshape(30, 1, 2, 4), y


def config(attack: str, threat_model: str = "fixed", **changes) -> AttackConfig:
    draws = DEPLOYED if threat_model == "deployed" else {}
    return AttackConfig(attack=attack, **{**TOY, **draws, **changes})


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def check_statistics_rules(report: dict) -> None:
    """Recompute every section's Table 2 statistics from its per-example records."""
    n = report["config"]["n"]
    eps = report["config"]["eps"]
    for block in (report, report["rounded_8bit"]):
        for key in SECTIONS:
            section = block[key]
            if section is None:
                assert key != "deployed" and report["threat_model"]["name"] == "deployed"
                continue
            records, stats = section["records"], section["table2"]
            assert stats["n"] == len(records) == n
            for name in ("success_undetected", "fools_classifier"):
                verified = [r for r in records if r[name]]
                cell = stats[name]
                assert cell["successes"] == len(verified)
                assert cell["pct"] == pytest.approx(100 * len(verified) / n)
                low, high = wilson_interval(len(verified), n)
                assert cell["low_pct"] == pytest.approx(100 * low)
                assert cell["high_pct"] == pytest.approx(100 * high)
                assert 0 <= cell["low_pct"] <= cell["pct"] <= cell["high_pct"] <= 100
                # medians from verified adversarials only
                expected = median([r["l2"] for r in verified])
                assert stats[f"median_l2_{name}"] == pytest.approx(expected)
            for r in records:
                assert r["within_eps"] == (r["l2"] <= eps)
                assert not r["success_undetected"] or r["fools_classifier"]
                if key == "deployed":  # the rule: claimed, in the box, within ε, p >= 1/2
                    eligible = r["claimed"] and r["in_bounds"] and r["within_eps"]
                    need = math.ceil(0.5 * r["draws"])
                    assert r["fools_classifier"] == (eligible and r["fooled_draws"] >= need)
                    assert r["success_undetected"] == (
                        eligible and r["fooled_undetected_draws"] >= need
                    )
                    assert r["draws"] == report["config"]["verify_draws"]
                else:
                    assert not r["fools_classifier"] or r["claimed"] and r["within_eps"]
    deployed = report["deployed"]["records"]
    for row, record in zip(report["records"], deployed, strict=True):
        for name in ("p_fool", "p_fool_undetected", "p_detected", "success_undetected"):
            assert row[name] == record[name]
        assert row["l2"] == pytest.approx(record["l2"])
    assert "median_l2" not in report["attack"] and "median_l2_claimed" in report["attack"]


@pytest.mark.parametrize("threat_model", ["fixed", "deployed"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_runs_under_both_threat_models(toy, attack, threat_model):
    model, x, y = toy
    report, result, attacked = run_experiment(
        model, x, y, config(attack, threat_model), progress=False
    )
    assert report["config"]["attack"] == attack and report["threat_model"]["name"] == threat_model
    expected_draws = (4, 5) if threat_model == "deployed" else (1, 1)
    assert (report["config"]["eot"], report["config"]["decision_draws"]) == expected_draws
    assert len(result.success) == len(attacked) == len(report["records"]) == 4
    check_statistics_rules(report)
    fixed_sections = [report[k] is not None for k in ("attack_noise", "fresh_noise")]
    assert fixed_sections == [threat_model == "fixed"] * 2
    assert report["threat_model"]["primary"] == (
        "deployed" if threat_model == "deployed" else "attack_noise"
    )
    assert (report["ensemble"] is not None) == (attack == "ensemble")
    assert report["sanity"] is None and report["audit"]["summary"]["n"] == 4
    json.dumps(report, allow_nan=False)  # strict JSON


def test_claims_that_do_not_survive_fresh_noise_do_not_count(toy):
    """CW-det under the attack's fixed noise stops on the boundary (κ = 0): some claimed
    adversarials fool fewer than half of the fresh draws; those are not successes of the deployed
    verification and do not enter its medians. κ = 4 nats moves them past the noise."""
    model, x, y = toy
    report, result, _ = run_experiment(model, x, y, config("cw-det", n=8), progress=False)
    rows = report["records"]
    assert all(r["claimed"] for r in rows)
    assert all(r["attack_noise"]["success_undetected"] for r in rows)  # under the attack noise
    failing = [r for r in rows if r["p_fool_undetected"] < 0.5]
    assert failing and not any(r["success_undetected"] for r in failing)
    assert len(failing) < len(rows)
    verified = [r["l2"] for r in rows if r["success_undetected"]]
    stats = report["deployed"]["table2"]
    assert stats["median_l2_success_undetected"] == pytest.approx(statistics.median(verified))
    assert report["attack"]["median_l2_claimed"] == pytest.approx(
        statistics.median([r["l2"] for r in rows])
    )
    confident, _, _ = run_experiment(
        model, x, y, config("cw-det", n=8, confidence=4.0), progress=False
    )
    assert all(r["success_undetected"] for r in confident["records"])


def test_confidence_from_the_audit_is_the_factor_times_the_median_margin_spread(toy):
    """``confidence="audit"``: deployed, κ = kappa_factor × the median over the attacked images of
    their margin's spread across the audit's draws (recomputed from the reported audit), the
    attacks run at that κ (the same report as an explicit κ), and CW's adversarials then fool
    fresh draws more often than at κ = 0; fixed threat model: κ = 0 and no extra audit."""
    model, x, y = toy
    deployed = config("cw", "deployed", n=6, confidence="audit", kappa_factor=2.0)
    report, _, _ = run_experiment(model, x, y, deployed, progress=False)
    spreads = [r["margin_std"] for r in report["audit"]["records"]]
    kappa = 2.0 * statistics.median(spreads)
    rule = report["confidence_rule"]
    assert kappa > 0 and rule["value"] == pytest.approx(kappa)
    assert rule["median_margin_std"] == pytest.approx(statistics.median(spreads))
    assert report["config"]["confidence"] == pytest.approx(kappa)
    explicit = config("cw", "deployed", n=6, confidence=rule["value"], kappa_factor=2.0)
    same, _, _ = run_experiment(model, x, y, explicit, progress=False)
    assert [r["l2"] for r in same["records"]] == [r["l2"] for r in report["records"]]
    plain, _, _ = run_experiment(model, x, y, config("cw", "deployed", n=6), progress=False)

    def fooled(made):
        return [r["p_fool"] for r in made["records"]]

    assert min(fooled(report)) > min(fooled(plain)) and min(fooled(plain)) < 0.5
    assert statistics.mean(fooled(report)) > statistics.mean(fooled(plain))
    fixed, _, _ = run_experiment(
        model, x, y, config("cw", n=6, confidence="audit", audit=False), progress=False
    )
    assert fixed["confidence_rule"]["value"] == 0.0 and fixed["config"]["confidence"] == 0.0
    assert fixed["audit"] is None
    with pytest.raises(ValueError, match="confidence"):
        config("cw", confidence="margin")


def test_at_eps_equals_a_verification_made_at_eps(toy):
    """One verification without a budget serves every ε (the sanity checks' grid)."""
    model, x, y = toy
    x, y = x[:6], y[:6]
    detector = LikelihoodDetector(6.2, 8)
    fixed = flows_threat_model(model, detector, noise_seed=0)
    result = CarliniWagnerL2(binary_search_steps=2, steps=40)(
        fixed, x, Misclassified(y) & NotDetected(detector)
    )
    distances = sorted(result.l2[result.success].tolist())
    assert len(distances) >= 3
    for eps in (0.0, distances[1], (distances[1] + distances[2]) / 2, math.inf):
        made = verify(fixed, x, result, y, eps=eps)
        cut = at_eps(verify(fixed, x, result, y, eps=math.inf), eps)
        for name in ("within_eps", "fools_classifier", "success_undetected", "detected"):
            assert torch.equal(getattr(made, name), getattr(cut, name)), (eps, name)

        def deployed():
            return flows_threat_model(model, detector, noise="fresh", noise_seed=3)

        noisy = verify_over_noise(deployed(), x, result, y, draws=8, eps=eps)
        noisy_cut = at_eps(verify_over_noise(deployed(), x, result, y, draws=8), eps)
        for name in ("within_eps", "fools_classifier", "success_undetected", "fooled_draws"):
            assert torch.equal(getattr(noisy, name), getattr(noisy_cut, name)), (eps, name)


def test_rounding_to_8_bits():
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    clean = to_model_range(pixels).double()
    assert torch.equal(round_to_8bit(clean), clean)  # valid images are fixed points
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(50, 1, 4, 4, generator=gen, dtype=torch.float64) - 0.5
    rounded = round_to_8bit(x)
    levels = (rounded + 0.5) * 256
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 255
    inside = x <= 255 / 256 - 0.5  # above the last level, rounding clamps to it
    assert ((rounded - x).abs()[inside] <= 0.5 / 256 + 1e-12).all()
    assert torch.equal(round_to_8bit(rounded), rounded)


def test_rounded_adversarials_are_verified_at_their_own_distance(toy):
    model, x, y = toy
    report, result, attacked = run_experiment(model, x, y, config("cw-det"), progress=False)
    rounded = round_to_8bit(result.adversarial)
    distances = (rounded - attacked).flatten(1).norm(dim=1)
    for row, l2 in zip(report["records"], distances.tolist(), strict=True):
        assert row["rounded_8bit"]["l2"] == pytest.approx(l2)
        assert set(row["rounded_8bit"]) >= {"p_fool", "p_fool_undetected", "attack_noise"}


@pytest.mark.parametrize("attack", ["cw-det", "ensemble"])
def test_an_interrupted_run_resumes_to_the_same_report(toy, tmp_path, monkeypatch, attack):
    model, x, y = toy
    setting = config(attack, "deployed", n=6)  # three batches of two
    uninterrupted, _, _ = run_experiment(
        model, x, y, setting, progress=False, cache=tmp_path / "whole"
    )
    original = experiment._attack_batch
    computed = []

    def failing(setup, names, index, part, prepared):
        if index == 1:
            raise RuntimeError("killed in batch 1")
        computed.append(index)
        return original(setup, names, index, part, prepared)

    cache = tmp_path / "run.partial"
    monkeypatch.setattr(experiment, "_attack_batch", failing)
    with pytest.raises(RuntimeError, match="killed in batch 1"):
        run_experiment(model, x, y, setting, progress=False, cache=cache)
    assert sorted(p.name for p in cache.iterdir()) == [
        "batch_00000.pt",
        "cache.json",
        experiment.TIMING_FILE,
    ]
    saved = torch.load(cache / "batch_00000.pt", weights_only=True)
    assert set(saved) == ({attack} if attack != "ensemble" else set(ENSEMBLE))
    before_resume = experiment.cached_batch_seconds(cache)  # what the killed run finished
    assert before_resume["batches"] == 1 and before_resume["untimed"] == 0
    assert before_resume["seconds"] > 0

    def counting(setup, names, index, part, prepared):
        computed.append(index)
        return original(setup, names, index, part, prepared)

    monkeypatch.setattr(experiment, "_attack_batch", counting)
    resumed, _, _ = run_experiment(model, x, y, setting, progress=False, cache=cache)
    assert computed == [0, 1, 2]  # batch 0 before the kill, then only the unfinished ones
    assert json.dumps(resumed) == json.dumps(uninterrupted)
    after = experiment.cached_batch_seconds(cache)
    assert after["batches"] == 3 and after["untimed"] == 0
    timing = json.loads((cache / experiment.TIMING_FILE).read_text())
    assert timing["0"] == before_resume["seconds"]  # batch 0's time kept, not re-measured
    (cache / experiment.TIMING_FILE).unlink()  # a cache saved before times were recorded
    assert experiment.cached_batch_seconds(cache) == {"batches": 3, "seconds": 0, "untimed": 3}
    assert experiment.cached_batch_seconds(tmp_path / "absent") == {
        "batches": 0,
        "seconds": 0,
        "untimed": 0,
    }


def test_a_cache_of_another_configuration_is_refused(toy, tmp_path, monkeypatch):
    model, x, y = toy
    setting = config("cw-det", "deployed")
    cache = tmp_path / "run.partial"
    run_experiment(model, x, y, setting, progress=False, cache=cache)
    other = config("cw-det", "deployed", cw_steps=41)
    with pytest.raises(ExperimentError, match=r"^--cw-steps: the cache .* was made with 40, "):
        run_experiment(model, x, y, other, progress=False, cache=cache)
    with pytest.raises(ExperimentError, match="--restart"):
        run_experiment(model, x, y, other, progress=False, cache=cache)
    moved = x.clone()
    moved[:, 0, 0, 0] += 1e-3
    with pytest.raises(ExperimentError, match="other attacked images"):
        run_experiment(model, moved, y, setting, progress=False, cache=cache)
    # deployed, the verification draws also select the attacked images: refused
    with pytest.raises(ExperimentError, match="^--verify-draws: the cache"):
        run_experiment(
            model, x, y, config("cw-det", "deployed", verify_draws=20), progress=False, cache=cache
        )
    # report-only options may change: the attacks are read back, only the verification differs
    other_seed = config("cw-det", "deployed", fresh_noise_seed=7, audit=False)
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "_attack_batch", None)  # would fail if a batch were attacked
        report, _, _ = run_experiment(model, x, y, other_seed, progress=False, cache=cache)
    assert report["deployed"]["noise_seed"] == 7 and report["audit"] is None
    restarted, _, _ = run_experiment(model, x, y, other, progress=False, cache=cache, restart=True)
    assert restarted["config"]["cw_steps"] == 41
    assert json.loads((cache / "cache.json").read_text())["config"]["cw_steps"] == 41


def test_sanity_checks_report_a_flag_per_check(toy):
    model, x, y = toy
    report, _, _ = run_experiment(
        model, x, y, config("cw-det", n=6, sanity=True, sanity_n=4), progress=False
    )
    sanity = report["sanity"]
    assert sanity["n"] == 4 and sanity["verification"] == "attack_noise"
    assert sanity["eps_grid"] == [0.25, 0.5, 1.0, 2.0]
    entry = sanity["attacks"]["cw-det"]
    names = [
        "unbounded_success",
        "monotone_in_eps",
        "budget_converged",
        "gradient_vs_gradient_free",
        "non_finite_gradients",
    ]
    assert list(entry["flags"]) == names and all(
        isinstance(v, bool) for v in entry["flags"].values()
    )
    assert sanity["passed"] == all(entry["flags"].values())
    checks = {c["name"]: c for c in entry["checks"]}
    # the main run's own verdicts (fixed noise: deterministic) at each ε of the grid
    rows = report["attack_noise"]["records"][:4]
    rates = [  # up to the evaluated ε = 1, where the records' verdicts are within the budget
        sum(r["success_undetected"] and r["l2"] <= e for r in rows) / 4
        for e in sanity["eps_grid"][:3]
    ]
    assert checks["monotone_in_eps"]["values"]["success_rates"][:3] == rates
    assert checks["unbounded_success"]["values"]["n"] == 4


def test_sanity_checks_of_the_ensemble_and_of_a_gradient_free_attack(toy):
    model, x, y = toy
    report, _, _ = run_experiment(
        model, x, y, config("ensemble", sanity=True, sanity_n=2), progress=False
    )
    assert list(report["sanity"]["attacks"]) == ["cw-det", "apgd-det", "match"]
    # APGD's "unbounded" run is at the largest distance to a sanity image's segment end (an
    # adversarial exists within it); the minimum-norm attacks run without a budget
    entries = report["sanity"]["attacks"]
    assert entries["cw-det"]["unbounded_eps"] is None
    ends = [r["l2"] for r in report["ensemble"]["rows"]["segment"]["attack_noise"]["records"][:2]]
    assert entries["apgd-det"]["unbounded_eps"] >= max(ends)
    unbounded = {c["name"]: c for c in entries["apgd-det"]["checks"]}["unbounded_success"]
    assert unbounded["passed"] is True and "admits an adversarial" in unbounded["detail"]
    segment, _, _ = run_experiment(
        model, x, y, config("segment", sanity=True, sanity_n=2), progress=False
    )
    flags = segment["sanity"]["attacks"]["segment"]["flags"]
    assert flags["gradient_vs_gradient_free"] is None  # not run: no gradients to compare
    assert flags["unbounded_success"] is not None


def test_randomness_audit(toy, model_classes):
    """The audit counts decisions over verify_draws draws per clean image; on a model without
    noise every decision is unanimous and one EOT draw is recommended."""
    model, x, y = toy
    report, _, _ = run_experiment(model, x, y, config("segment", "deployed"), progress=False)
    audit = report["audit"]
    assert audit["draws"] == 16 and audit["summary"]["n"] == 4
    assert all(sum(r["counts"]) == 16 and len(r["counts"]) == 3 for r in audit["records"])
    assert audit["used"] == {"eot": 4, "decision_draws": 5, "verify_draws": 16}
    assert audit["recommendation"]["verification_draws"] == 93  # Wilson half-width 0.1
    assert audit["summary"]["pooled_margin_std"] > 0  # the toy's noise moves the margins

    TwoGaussian, _ = model_classes
    quiet = TwoGaussian(noise=0.0, shape=(1, 2, 4))
    report, _, _ = run_experiment(quiet, x, y, config("segment", "deployed"), progress=False)
    assert report["audit"]["summary"]["fraction_not_unanimous"] == 0.0
    assert report["audit"]["recommendation"]["eot_draws"] == 1
    off, _, _ = run_experiment(model, x, y, config("segment", audit=False), progress=False)
    assert off["audit"] is None


def test_ensemble_takes_the_worst_case_and_flags_attacks_beyond_the_segment_bound(toy):
    model, x, y = toy
    report, result, _ = run_experiment(model, x, y, config("ensemble", "deployed"), progress=False)
    ensemble = report["ensemble"]
    assert ensemble["attacks"] == list(ENSEMBLE) and ensemble["selection"] == "deployed"
    rows = {name: ensemble["rows"][name]["deployed"]["records"] for name in ENSEMBLE}
    for i, record in enumerate(ensemble["records"]):
        verified = {n: rows[n][i]["l2"] for n in ENSEMBLE if rows[n][i]["success_undetected"]}
        if verified:
            best = min(verified.values())
            assert record["success"] and record["l2"] == pytest.approx(best)
            assert record["source"] == next(n for n in ENSEMBLE if verified.get(n) == best)
        else:
            assert not record["success"] and record["source"] is None

        # flagged: worse than the segment bound, both verified without ε (p >= 1/2)
        def bound(r):
            need = math.ceil(0.5 * r["draws"])
            ok = r["claimed"] and r["in_bounds"] and r["fooled_undetected_draws"] >= need
            return r["l2"] if ok else math.inf

        segment = bound(rows["segment"][i])
        flagged = [
            n for n in ENSEMBLE[:-1] if math.isfinite(segment) and bound(rows[n][i]) > segment
        ]
        assert record["segment_flags"] == flagged
        assert report["records"][i]["segment_flags"] == flagged
    worst = ensemble["worst_case"]["deployed"]
    assert sum(worst["by_source"].values()) == worst["success"]["successes"]
    assert worst["success"]["successes"] == sum(r["success"] for r in ensemble["records"])
    # the selected adversarials are re-verified under independent draws at the top level
    assert torch.equal(result.success, torch.tensor([r["success"] for r in ensemble["records"]]))
    assert [r["claimed"] for r in report["records"]] == result.success.tolist()
    # every member's own result comes back with the worst case, and the selected example is the
    # chosen member's adversarial
    assert set(result.members) == set(ENSEMBLE)
    for i, record in enumerate(ensemble["records"]):
        member = result.members[record["source"]] if record["success"] else None
        if member is not None:
            assert torch.equal(result.adversarial[i], member.adversarial[i])
            assert bool(member.success[i])
    for name in ENSEMBLE:
        claims = [r["claimed"] for r in ensemble["rows"][name]["deployed"]["records"]]
        assert result.members[name].success.tolist() == claims


def test_fixed_threat_model_refuses_more_draws_and_the_audit_needs_two():
    with pytest.raises(ValueError, match="^--eot 4 needs --threat-model deployed"):
        AttackConfig(attack="cw", eot=4)
    with pytest.raises(ValueError, match="^--decision-draws 3 needs --threat-model deployed"):
        AttackConfig(attack="boundary", decision_draws=3)
    assert AttackConfig(attack="cw", eot=1).eot_draws == 1
    deployed = AttackConfig(attack="cw", threat_model="deployed")
    assert (deployed.eot_draws, deployed.decision_votes) == (8, 15)
    with pytest.raises(ValueError, match="--no-audit"):
        AttackConfig(attack="cw", verify_draws=1)
    assert AttackConfig(attack="cw", verify_draws=1, audit=False).verify_draws == 1
    for changes, name in (
        ({"threat_model": "foo"}, "threat_model"),
        ({"cw_space": "pixel"}, "cw_space"),
        ({"decision_quorum": 1.0}, "decision_quorum"),
        ({"decision_quorum": 0.4}, "decision_quorum"),
        ({"verify_draws": 0}, "verify_draws"),
        ({"eot": 0}, "eot"),
        ({"apgd_detector_mode": "max"}, "apgd_detector_mode"),
    ):
        with pytest.raises(ValueError, match=f"^{name} must"):
            AttackConfig(attack="cw", **changes)


def test_apgd_needs_a_positive_eps(toy):
    model, x, y = toy
    with pytest.raises(ExperimentError, match="--eps > 0"):
        run_experiment(model, x, y, config("apgd", eps=0.0), progress=False)


def test_deployed_examples_figure_shows_the_fractions_of_draws(toy):
    model, x, y = toy
    report, result, attacked = run_experiment(
        model, x, y, config("cw-det", "deployed"), progress=False
    )
    fig, axes = experiment.example_figure(attacked, result, report, 2)
    assert "fresh draws of the deployed model" in fig.get_suptitle()
    for i in range(2):
        record = report["deployed"]["records"][i]
        title = axes[i][1].get_title()
        assert f"fooled {100 * record['p_fool']:.0f}%" in title
        assert title.endswith("success" if record["success_undetected"] else "fails")


def test_seeds_of_stages_are_independent_and_reproducible():
    seeds = {experiment.derive_seed(0, "batch", b, "cw") for b in range(50)}
    assert len(seeds) == 50
    assert experiment.derive_seed(0, "batch", 3, "cw") == experiment.derive_seed(
        0, "batch", 3, "cw"
    )
    assert experiment.derive_seed(0, "x") != experiment.derive_seed(1, "x")


def test_attack_results_survive_the_cache_round_trip(tmp_path):
    result = AttackResult(
        adversarial=torch.rand(3, 1, 2, 2, dtype=torch.float64),
        success=torch.tensor([True, False, True]),
        l2=torch.tensor([0.5, math.inf, 0.25], dtype=torch.float64),
        queries=torch.tensor([3, 4, 5]),
        status=("success", "no adversarial", "success"),
        targets=torch.tensor([1, 0, 1]),
    )
    torch.save(experiment._to_saved(result), tmp_path / "b.pt")
    back = experiment._from_saved(torch.load(tmp_path / "b.pt", weights_only=True), "cpu")
    for name in ("adversarial", "success", "l2", "queries", "targets"):
        assert torch.equal(getattr(back, name), getattr(result, name))
    assert back.status == result.status


def test_the_unbounded_run_of_apgd_is_an_eps_doubling_search(toy):
    """At a budget too small for any adversarial, APGD's "unbounded" sanity run doubles ε from
    the evaluated one until every image is broken, never past the sufficient ε; each image keeps
    its first breaking run."""
    model, x, y = toy
    report, _, _ = run_experiment(
        model, x, y, config("apgd-det", n=4, eps=0.02, sanity=True, sanity_n=4), progress=False
    )
    assert report["attack_noise"]["table2"]["success_undetected"]["successes"] == 0
    entry = report["sanity"]["attacks"]["apgd-det"]
    unbounded = {c["name"]: c for c in entry["checks"]}["unbounded_success"]
    searched = unbounded["values"]["searched_eps"]
    assert searched[0] == 0.02 and len(searched) >= 3  # nothing breaks at 0.02 or 0.04
    assert all(
        b == pytest.approx(min(2 * a, entry["unbounded_eps"]))
        for a, b in zip(searched, searched[1:], strict=False)
    )
    assert searched[-1] <= entry["unbounded_eps"]
    assert unbounded["passed"] is True and unbounded["values"]["successes"] == 4
    assert "eps-doubling search" in unbounded["detail"]


def test_take_rows_selects_whole_examples():
    def make(value: bool, l2: float) -> Verification:
        flags = torch.full((3,), value)
        return Verification(
            l2=torch.full((3,), l2),
            claimed=flags,
            in_bounds=flags,
            within_eps=flags,
            fools_classifier=flags,
            detected=~flags,
            success_undetected=flags,
            predicted=torch.full((3,), int(value)),
        )

    merged = experiment._take_rows(
        make(False, 1.0), make(True, 2.0), torch.tensor([True, False, True])
    )
    assert merged.l2.tolist() == [2.0, 1.0, 2.0]
    assert merged.success_undetected.tolist() == [True, False, True]
    assert merged.detected.tolist() == [False, True, False]
    assert merged.predicted.tolist() == [1, 0, 1]


def test_the_pool_grows_until_every_class_has_a_usable_image(toy):
    """A one-image pool holds a single class: the pool-based attacks double it (within the test
    images not attacked) until the other class has a usable image too; a test set whose other
    images are all of one class cannot be helped, and the error says so."""
    model, x, y = toy
    report, _, _ = run_experiment(model, x, y, config("segment", pool_size=1), progress=False)
    assert report["pool"]["pool_size"] == 1 and report["pool"]["used"] >= 2
    assert report["attack"]["success_rate"] == 1.0  # every example found its segment's end
    plain, _, _ = run_experiment(model, x, y, config("cw-det"), progress=False)
    assert plain["pool"]["used"] is None  # no pool-based attack ran
    one_class = torch.cat([torch.arange(4), torch.nonzero(y[4:] == 0).flatten() + 4])
    with pytest.raises(ExperimentError, match="every test image not attacked"):
        run_experiment(
            model, x[one_class], y[one_class], config("segment", order_seed=None), progress=False
        )


def test_an_option_added_later_keeps_older_caches_at_its_neutral_value(toy, tmp_path, monkeypatch):
    """A cache made before ``apgd_run_to_end`` existed (its config does not record it) resumes
    at the value that reproduces the old behaviour, and is refused at the other value."""
    model, x, y = toy
    setting = config("apgd-det", "deployed")
    cache = tmp_path / "run.partial"
    run_experiment(model, x, y, setting, progress=False, cache=cache)
    meta = cache / "cache.json"
    saved = json.loads(meta.read_text())
    del saved["config"]["apgd_run_to_end"]  # as written before the option existed
    meta.write_text(json.dumps(saved))
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "_attack_batch", None)  # would fail if a batch were attacked
        run_experiment(model, x, y, setting, progress=False, cache=cache)
    to_end = config("apgd-det", "deployed", apgd_run_to_end=True)
    with pytest.raises(
        ExperimentError,
        match=r"^--apgd-run-to-end: .* made with False \(before the option existed\)",
    ):
        run_experiment(model, x, y, to_end, progress=False, cache=cache)
    attack = experiment.make_attack(to_end, "apgd-det", eps=1.0, scale=1, seed=0)
    assert attack.stop_at_success is False
    assert experiment.make_attack(setting, "apgd", eps=1.0, scale=1, seed=0).stop_at_success


def test_model_batch_is_a_speed_setting_same_results_and_caches_resume(toy, tmp_path, monkeypatch):
    """``model_batch`` splits model calls only: a fixed-noise CW-det run with one row per call
    finds the same adversarials as with whole batches, and a deployed cache made at one value
    resumes at another (it is not in the fingerprint, :data:`PERFORMANCE_ONLY`)."""
    model, x, y = toy
    whole, result_whole, _ = run_experiment(model, x, y, config("cw-det"), progress=False)
    rows, result_rows, _ = run_experiment(
        model, x, y, config("cw-det", model_batch=1), progress=False
    )
    assert rows["config"]["model_batch"] == 1 and whole["config"]["model_batch"] == 64
    torch.testing.assert_close(result_rows.adversarial, result_whole.adversarial)
    assert [r["success_undetected"] for r in rows["records"]] == [
        r["success_undetected"] for r in whole["records"]
    ]
    assert "model_batch" in experiment.PERFORMANCE_ONLY
    cache = tmp_path / "run.partial"
    run_experiment(model, x, y, config("apgd-det", "deployed"), progress=False, cache=cache)
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "_attack_batch", None)  # would fail if a batch were attacked
        run_experiment(
            model, x, y, config("apgd-det", "deployed", model_batch=3), progress=False, cache=cache
        )
