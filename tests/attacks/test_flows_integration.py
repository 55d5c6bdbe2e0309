"""The attacks on the real (untrained, tiny) GLOW through its public API.

The attacks never import the model; this only checks that the duck-typed adapter fits it.
"""

import pytest
import torch

import flows
from flows.attacks import (
    CarliniWagnerL2,
    LikelihoodDetector,
    Misclassified,
    flows_threat_model,
    verify,
)
from flows.attacks.experiment import AttackConfig, run_experiment


@pytest.fixture(scope="module")
def tiny():
    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", "split", num_classes=10, generator=gen)
    x = torch.rand((6, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(x, torch.Generator().manual_seed(1))
    return model.eval(), x


def test_cw_on_glow_verifies_under_attack_noise(tiny):
    model, x = tiny
    tm = flows_threat_model(model, LikelihoodDetector(12.0, model.num_dims), noise_seed=0)
    y = tm.classify(x)
    result = CarliniWagnerL2(binary_search_steps=2, steps=20)(
        tm.with_detector(None), x, Misclassified(y)
    )
    assert result.success.any()
    assert result.adversarial.min() >= -0.5 and result.adversarial.max() <= 0.5
    verification = verify(tm, x, result, y)
    assert torch.equal(verification.fools_classifier, result.success)


def test_boundary_experiment_on_glow(tiny):
    model, x = tiny
    labels = flows_threat_model(model, noise_seed=0).classify(x)
    config = AttackConfig(
        attack="boundary", n=3, eps=5.0, threshold=12.0, recall_n=6, batch_size=3, max_queries=60
    )
    report, result, _ = run_experiment(model, x, labels, config, progress=False)
    assert report["detector"]["num_dims"] == model.num_dims
    assert report["attack_noise"]["table2"]["fools_classifier_pct"] == 100.0 * float(
        result.success.double().mean()
    )


def test_deployed_ensemble_on_glow():
    """The adaptive evaluation on the real (untrained) GLOW under the deployed threat model: the
    fresh noise of its padding and noise channels moves the margins (audit), every member runs
    with EOT / voting, every adversarial is verified over fresh draws, and the worst case is
    consistent with the members' verdicts."""
    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", "split", num_classes=2, generator=gen)
    x = torch.rand((16, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(x, torch.Generator().manual_seed(1))
    model.eval()
    deployed = flows_threat_model(model, noise="fresh", noise_seed=5)
    labels = deployed.classify(x, draws=64)  # the deployed decision, as the experiment's
    assert len(set(labels.tolist())) == 2  # both classes: targets and ends exist in the pool
    config = AttackConfig(
        attack="ensemble",
        threat_model="deployed",
        n=2,
        eps=5.0,
        threshold_quantile=1.0,
        recall_n=16,
        batch_size=2,
        eot=2,
        decision_draws=3,
        verify_draws=8,
        binary_search_steps=1,
        cw_steps=10,
        apgd_steps=5,
        max_queries=60,
        match_steps=10,
        segment_grid=8,
        pool_size=12,
    )
    report, result, _ = run_experiment(model, x, labels, config, progress=False)
    assert report["audit"]["summary"]["pooled_margin_std"] > 0
    assert report["deployed"]["draws"] == 8 and report["attack_noise"] is None
    rows = report["ensemble"]["rows"]
    for i, record in enumerate(report["ensemble"]["records"]):
        verified = [rows[n]["deployed"]["records"][i]["success_undetected"] for n in rows]
        assert record["success"] == any(verified)
    assert torch.equal(
        result.success, torch.tensor([r["success"] for r in report["ensemble"]["records"]])
    )
