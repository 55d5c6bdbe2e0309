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
