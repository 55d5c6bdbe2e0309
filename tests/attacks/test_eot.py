r"""Attacks on a randomised (deployed) classifier: EOT for CW-L2, majority decisions for Boundary.

The toy model has a closed form for everything. Two classes, scores ``±S·(f(x) + σε)`` with
``f(x) = w·x + b`` (``‖w‖ = 1``, so ``f`` is the signed distance to the hyperplane) and a fresh
``ε ~ N(0, 1)`` per row and call. Under one fresh draw a point is class 1 with probability

.. math::  P_{\text{fool}}(x) = \Phi(f(x) / \sigma),

the survival probability of an adversarial of a class-0 input. The log-posterior margin of class 1
is ``2S·(f + σε)``, so a confidence κ (nats) is the distance ``κ / 2S`` beyond the boundary.
"""

import pytest
import torch

import flows
from flows.attacks import (
    BoundaryAttack,
    CarliniWagnerL2,
    Misclassified,
    ThreatModel,
    flows_threat_model,
)
from flows.noise import FixedNoise, FreshNoise

SIGMA = 0.02  # noise scale, in units of distance
SCALE = 1000.0  # S: scores of the order of a flows model's log-likelihoods
DISTANCE = 0.1  # d₀: the clean inputs' distance to the boundary (5σ: clean is robustly class 0)
EOT = {"binary_search_steps": 4, "steps": 200}


class NoisyLinear:
    """Scores ``±S·(w·x + b + σε)``, ``ε`` drawn per row from ``generator`` (4 dimensions)."""

    num_classes = 2

    def __init__(self):
        self.w = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64) / 2
        self.b = 0.05

    def signed_distance(self, x):
        """``(B,)`` f(x) = w·x + b."""
        return x.flatten(1) @ self.w.to(x.dtype) + self.b

    def class_log_likelihoods(self, x, generator=None):
        eps = torch.randn(len(x), generator=generator, dtype=x.dtype)
        s = SCALE * (self.signed_distance(x) + SIGMA * eps)
        return torch.stack([-s, s], dim=1)

    def fooling_probability(self, x):
        """``(B,)`` the closed form Φ(f(x)/σ): class 1 under one fresh draw."""
        return torch.distributions.Normal(0.0, 1.0).cdf(self.signed_distance(x) / SIGMA)

    def clean_points(self, n=4, seed=0):
        """``n`` inputs in the box at distance d₀ on the class-0 side, labels 0."""
        gen = torch.Generator().manual_seed(seed)
        x = 0.2 * (torch.rand(n, 4, generator=gen, dtype=torch.float64) - 0.5)
        x = x - (self.signed_distance(x) + DISTANCE)[:, None] * self.w
        return x, torch.zeros(n, dtype=torch.long)


def fresh(model, seed):
    """The deployed threat model: a fresh draw per row and call."""
    return ThreatModel(
        FreshNoise(model.class_log_likelihoods, seed), num_classes=2, randomised=True
    )


def survival_under_fresh_draws(model, x, draws=4000, seed=12345):
    """``(B,)`` Monte Carlo: the fraction of ``draws`` fresh draws that call ``x`` class 1, and
    its standard error ``sqrt(p(1-p)/draws)`` from the closed form."""
    labels = fresh(model, seed).observe(x, draws=draws).logits.argmax(1)
    measured = labels.reshape(draws, len(x)).double().mean(0)
    p = model.fooling_probability(x)
    return measured, (p * (1 - p) / draws).sqrt()


@pytest.fixture
def noisy():
    return NoisyLinear()


def test_closed_form_survival_matches_fresh_draws(noisy):
    """The oracle: Φ(f/σ) against 4000 fresh draws at points from −2σ to 2σ, within 4 SE."""
    x, _ = noisy.clean_points(5)
    x = x + (DISTANCE + SIGMA * torch.linspace(-2, 2, 5, dtype=torch.float64))[:, None] * noisy.w
    measured, se = survival_under_fresh_draws(noisy, x)
    expected = noisy.fooling_probability(x)
    assert ((measured - expected).abs() <= 4 * se).all()
    assert expected[0] < 0.03 and expected[-1] > 0.97  # the points span the whole transition


def test_fixed_noise_adversarials_sit_on_the_drawn_boundary_and_survive_half_the_time(noisy):
    """The attacker who knows the draw (FixedNoise) lands on *that draw's* boundary,
    f = −σ ε_seed, so a fresh draw fools with probability Φ(−ε_seed): about 1/2 over seeds."""
    x, y = noisy.clean_points()
    survival = []
    for seed in range(8):
        tm = ThreatModel(FixedNoise(noisy.class_log_likelihoods, seed), num_classes=2)
        result = CarliniWagnerL2(**EOT)(tm, x, Misclassified(y))
        assert result.success.all()
        # FixedNoise evaluates every example alone with Generator(seed): its first draw
        eps = torch.randn(1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        beyond = noisy.signed_distance(result.adversarial) / SIGMA + eps  # in σ, from f = −σε
        assert ((beyond >= 0) & (beyond <= 0.05)).all(), beyond  # 0.05σ = 1% of d₀
        measured, se = survival_under_fresh_draws(noisy, result.adversarial)
        expected = noisy.fooling_probability(result.adversarial)
        assert ((measured - expected).abs() <= 4 * se).all()
        survival.append(measured)
    mean = torch.cat(survival).mean().item()
    assert 0.25 <= mean <= 0.75, mean


def test_eot_adversarials_survive_fresh_draws_at_the_predicted_distance(noisy):
    """EOT with K = 32 and κ = 2S·qσ: an iterate counts when more than half of its draws clear
    the margin, i.e. when its median margin f is at least qσ. Prediction: adversarials at
    distance d₀ + qσ, surviving a fresh draw with probability Φ(q) = 0.994. The vote is noisy
    and the closest passing iterate is kept, so the found point may lie short of qσ; allowed:
    one σ short (Φ(q − 1) = 0.93 ≥ 0.9), and σ/4 beyond (Adam's last steps)."""
    x, y = noisy.clean_points()
    k, quantile = 32, 2.5
    kappa = 2 * SCALE * quantile * SIGMA
    eot = CarliniWagnerL2(eot_draws=k, confidence=kappa, **EOT)
    result = eot(fresh(noisy, 0), x, Misclassified(y))
    assert result.success.all()
    predicted = DISTANCE + quantile * SIGMA
    assert ((result.l2 - predicted) >= -SIGMA).all(), result.l2
    assert ((result.l2 - predicted) <= SIGMA / 4).all(), result.l2
    expected = noisy.fooling_probability(result.adversarial)
    measured, se = survival_under_fresh_draws(noisy, result.adversarial)
    assert ((measured - expected).abs() <= 4 * se).all()
    assert (expected >= 0.9).all() and (measured >= 0.9).all(), measured
    assert (result.queries % k == 0).all()  # K queries per example per evaluation

    # the same κ without EOT keeps an iterate that one lucky draw called adversarial
    single = CarliniWagnerL2(confidence=kappa, **EOT)(fresh(noisy, 0), x, Misclassified(y))
    assert single.success.all()
    assert noisy.fooling_probability(single.adversarial).min() < 0.9


def test_eot_is_one_batched_pass_of_k_rows_per_step(noisy):
    """Every model call of the attack evaluates the active examples K times at once, and each
    costs K queries per example (the "auto" constant included)."""
    x, y = noisy.clean_points(3)
    rows = []

    def counting(z, generator=None):
        rows.append(len(z))
        return noisy.class_log_likelihoods(z, generator)

    tm = ThreatModel(FreshNoise(counting, 0), num_classes=2, randomised=True)
    k, steps = 8, 5
    attack = CarliniWagnerL2(binary_search_steps=1, steps=steps, abort_early=False, eot_draws=k)
    result = attack(tm, x, Misclassified(y))
    assert rows == [k * 3] * (1 + steps)  # the linearised constant, then one pass per step
    assert (result.queries == k * (1 + steps)).all()


def test_eot_on_a_deterministic_model_only_repeats_the_evaluation(noisy):
    """With the noise fixed, the K rows of a step are equal: the mean hinge, the majority and
    the gradient are those of one evaluation (K = 4: sums of powers of two are exact), at K×
    the queries."""
    x, y = noisy.clean_points()
    tm = ThreatModel(FixedNoise(noisy.class_log_likelihoods, 3), num_classes=2)
    one = CarliniWagnerL2(**EOT)(tm, x, Misclassified(y))
    four = CarliniWagnerL2(eot_draws=4, **EOT)(tm, x, Misclassified(y))
    assert torch.equal(four.adversarial, one.adversarial)
    assert torch.equal(four.queries, 4 * one.queries)


def test_boundary_majority_decisions_survive_fresh_draws_more_often(noisy):
    """A walk on single draws keeps the lucky ones (it ends where a fresh draw rarely fools);
    majority decisions over M = 15 draws end near the majority boundary, where fresh draws fool
    more often, and a 0.9 quorum over 31 draws more often still."""
    x, y = noisy.clean_points()
    survival = {}
    for draws, quorum in ((1, 0.5), (15, 0.5), (31, 0.9)):
        attack = BoundaryAttack(steps=300, seed=0, decision_draws=draws, decision_quorum=quorum)
        result = attack(fresh(noisy, 0), x, Misclassified(y))
        assert result.success.all()
        measured, se = survival_under_fresh_draws(noisy, result.adversarial)
        expected = noisy.fooling_probability(result.adversarial)
        assert ((measured - expected).abs() <= 4 * se).all()
        survival[draws] = expected.mean().item()
    assert survival[1] < 0.35, survival  # well inside the region where fresh draws fail
    assert survival[15] > survival[1] + 0.05, survival
    assert survival[31] > max(survival[15] + 0.2, 0.7), survival


def test_eot_on_glow_with_fresh_noise():
    """The real (untrained, tiny) GLOW under fresh noise: one batched pass of K·n rows per step
    through the duck-typed adapter, results within the bounds and counted K per step."""
    gen = torch.Generator().manual_seed(0)
    glow = flows.build_model("tiny", "reweight", num_classes=10, generator=gen)
    x = torch.rand((2, *glow.config.data_shape), generator=gen) - 0.5
    glow.initialise(x, torch.Generator().manual_seed(1))
    glow.eval()
    rows = []

    class Counting:
        num_classes = glow.num_classes

        def class_log_likelihoods(self, z, generator=None):
            rows.append(len(z))
            return glow.class_log_likelihoods(z, generator=generator)

    tm = flows_threat_model(Counting(), noise="fresh", noise_seed=0)
    assert tm.randomised
    y = tm.classify(x, draws=5)
    rows.clear()
    k, steps = 3, 4
    attack = CarliniWagnerL2(binary_search_steps=1, steps=steps, abort_early=False, eot_draws=k)
    result = attack(tm, x, Misclassified(y))
    assert rows == [k * 2] * (1 + steps)
    assert (result.queries == k * (1 + steps)).all()
    assert result.adversarial.min() >= -0.5 and result.adversarial.max() <= 0.5
