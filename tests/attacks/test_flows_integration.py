"""The attacks on the real (untrained, tiny) GLOW through its public API.

The attacks never import the model; this only checks that the duck-typed adapter fits it.
"""

import copy
import dataclasses
import sys

import pytest
import torch

import flows
from flows.attacks import (
    CarliniWagnerL2,
    LikelihoodDetector,
    Misclassified,
    experiment,
    flows_threat_model,
    verify,
)
from flows.attacks.experiment import AttackConfig, ExperimentError, run_experiment


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


def test_attack_network_is_a_reduced_precision_copy_and_leaves_the_model(tiny):
    model, x = tiny
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # as after training: the zero-initialised last layers are not zero
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=gen))
    assert experiment.attack_network(model, "float32") is None  # the model itself
    network = experiment.attack_network(model, "bfloat16")
    assert network is not model and network.config.coupling_precision == "bfloat16"
    assert model.config.coupling_precision == "float32"
    for (name, a), (_, b) in zip(
        model.state_dict().items(), network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    gen = torch.Generator
    with torch.no_grad():
        ll = model.class_log_likelihoods(x, generator=gen().manual_seed(0))
        ll16 = network.class_log_likelihoods(x, generator=gen().manual_seed(0))
        again = model.class_log_likelihoods(x, generator=gen().manual_seed(0))
    assert not torch.equal(ll, ll16)  # the networks' function is rounded ...
    torch.testing.assert_close(ll16, ll, rtol=1e-2, atol=0.0)  # ... by bfloat16's precision
    assert torch.equal(again, ll)  # and the model is untouched


def test_attack_precision_bfloat16_attacks_the_copy_and_verifies_in_float32(tiny, monkeypatch):
    """Every threat model an attack stage faces (``_Setup.attack_model``) wraps the bfloat16
    copy; the image selection, the detector and the verifications wrap the float32 model; the
    report's verdicts are the float32 model's."""
    model, x = tiny
    labels = flows_threat_model(model, noise_seed=0).classify(x)
    seen = []
    original = experiment.flows_threat_model

    def spy(network, *args, **kwargs):
        caller = sys._getframe(2).f_code.co_name  # flows_threat_model <- threat_model <- ...
        seen.append((caller, network.config.coupling_precision))
        return original(network, *args, **kwargs)

    monkeypatch.setattr(experiment, "flows_threat_model", spy)
    config = AttackConfig(
        attack="cw-det",
        n=3,
        eps=5.0,
        threshold=12.0,
        recall_n=6,
        batch_size=3,
        binary_search_steps=2,
        cw_steps=10,
        verify_draws=4,
        attack_precision="bfloat16",
    )
    report, result, attacked = run_experiment(model, x, labels, config, progress=False)
    assert report["config"]["attack_precision"] == "bfloat16"
    assert model.config.coupling_precision == "float32"
    assert {p for c, p in seen if c == "attack_model"} == {"bfloat16"}
    assert {p for c, p in seen if c != "attack_model"} == {"float32"}
    monkeypatch.undo()
    detector = LikelihoodDetector(12.0, model.num_dims)
    fixed = flows_threat_model(model, detector, noise_seed=config.noise_seed, eps=5.0)
    y = torch.as_tensor(report["attacked_labels"])
    check = verify(fixed, attacked, result, y)
    assert [r["attack_noise"]["fools_classifier"] for r in report["records"]] == (
        check.fools_classifier.tolist()
    )


def test_attack_precision_is_in_the_cache_fingerprint_and_needs_the_method(tiny, tmp_path):
    """Unlike ``model_batch``, the attack's precision changes the adversarials: a cache made in
    float32 is refused in bfloat16; a model without ``set_coupling_precision`` is refused."""
    model, x = tiny
    labels = flows_threat_model(model, noise_seed=0).classify(x)
    setting = AttackConfig(
        attack="apgd", n=2, eps=5.0, threshold=12.0, recall_n=6, batch_size=2, apgd_steps=3
    )
    cache = tmp_path / "run.partial"
    run_experiment(model, x, labels, setting, progress=False, cache=cache)
    bf16 = dataclasses.replace(setting, attack_precision="bfloat16")
    with pytest.raises(ExperimentError, match=r"^--attack-precision: .* made with 'float32'"):
        run_experiment(model, x, labels, bf16, progress=False, cache=cache)

    class NoPrecision:
        num_classes = model.num_classes
        num_dims = model.num_dims

        def class_log_likelihoods(self, images, generator=None):
            return model.class_log_likelihoods(images, generator=generator)

        def bits_per_dim(self, images, generator=None):
            return model.bits_per_dim(images, generator=generator)

    with pytest.raises(ExperimentError, match=r"^--attack-precision bfloat16 needs a model"):
        run_experiment(NoPrecision(), x, labels, bf16, progress=False)
