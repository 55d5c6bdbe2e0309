"""Every bijection: exact inverse and correct log-determinant at perturbed float64 parameters."""

from __future__ import annotations

import pytest
import torch

from flows.bijection import Chain
from flows.glow import Glow, glow_step
from flows.layers import ActNorm, AffineCoupling, FactorOut, InvertibleConv1x1, Squeeze

from .helpers import brute_force_logabsdet, perturb, relative_error

LAYERS = {
    "actnorm": (lambda: ActNorm(4), (4, 4, 4)),
    "invconv": (
        lambda: InvertibleConv1x1(4, generator=torch.Generator().manual_seed(1)),
        (4, 4, 4),
    ),
    "invconv-odd": (
        lambda: InvertibleConv1x1(3, generator=torch.Generator().manual_seed(2)),
        (3, 2, 2),
    ),
    "coupling": (lambda: AffineCoupling(4, hidden_channels=6), (4, 4, 4)),
    "coupling-odd": (lambda: AffineCoupling(3, hidden_channels=5), (3, 4, 4)),
    "squeeze": (lambda: Squeeze(), (2, 4, 4)),
    "factor_out": (lambda: FactorOut(4), (4, 4, 4)),
    "step": (lambda: glow_step(4, 6, torch.Generator().manual_seed(3)), (4, 4, 4)),
    "glow-1-level": (lambda: Glow(2, 4, levels=1, steps=2, hidden_channels=4), (2, 4, 4)),
    "glow-3-levels": (lambda: Glow(2, 8, levels=3, steps=2, hidden_channels=4), (2, 8, 8)),
}


def _prepared(name: str, batch: int = 3) -> tuple[torch.nn.Module, torch.Tensor]:
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(
        (batch, *shape), generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    layer(x)  # data-dependent initialisation where there is one
    perturb(layer, seed=5)
    return layer, x


@pytest.mark.parametrize("name", list(LAYERS))
def test_inverse_recovers_input_to_1e_10(name):
    layer, x = _prepared(name)
    z, _ = layer(x)
    x_back, _ = layer.inverse(z)
    assert relative_error(x_back, x) < 1e-10
    z_again, _ = layer(x_back)
    assert relative_error(z_again, z) < 1e-10


@pytest.mark.parametrize("name", list(LAYERS))
def test_logabsdet_matches_autograd_jacobian(name):
    layer, x = _prepared(name, batch=2)
    _, logabsdet = layer(x)
    _, inverse_logabsdet = layer.inverse(layer(x)[0])
    assert logabsdet.shape == (2,)
    for i in range(2):
        expected = brute_force_logabsdet(lambda v: layer(v)[0], x[i : i + 1])
        assert logabsdet[i].item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-9)
    assert torch.allclose(inverse_logabsdet, -logabsdet, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["coupling", "factor_out", "glow-3-levels"])
def test_inverse_logabsdet_matches_inverse_jacobian(name):
    layer, x = _prepared(name, batch=1)
    z, _ = layer(x)
    _, inverse_logabsdet = layer.inverse(z)
    expected = brute_force_logabsdet(lambda v: layer.inverse(v)[0], z)
    assert inverse_logabsdet.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ["coupling", "coupling-odd", "step"])
def test_gradients_match_finite_differences(name):
    """Backward through the in-place ReLUs of the coupling network is exact: gradcheck of the
    output and the log-determinant with respect to the input and every parameter."""
    layer, x = _prepared(name, batch=2)
    parameters = dict(layer.named_parameters())
    assert any("net" in key for key in parameters)  # the coupling network's weights are in

    def outputs(x, *values):
        return torch.func.functional_call(layer, dict(zip(parameters, values, strict=True)), (x,))

    inputs = [x.clone().requires_grad_()]
    inputs += [p.detach().clone().requires_grad_() for p in parameters.values()]
    assert torch.autograd.gradcheck(outputs, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_actnorm_initialises_from_first_batch_and_keeps_flag_in_state_dict():
    layer = ActNorm(3)
    x = 2.0 + 3.0 * torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert not bool(layer.initialised)
    z, _ = layer(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert "initialised" in layer.state_dict() and bool(layer.state_dict()["initialised"])
    bias = layer.bias.detach().clone()
    layer(x + 10.0)
    assert torch.equal(layer.bias, bias)
    fresh = ActNorm(3)
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialised)
    assert torch.equal(fresh(x)[0], layer(x)[0])


def test_actnorm_inverse_does_not_initialise():
    layer = ActNorm(2)
    layer.inverse(torch.randn(4, 2, 3, 3))
    assert not bool(layer.initialised)


def test_invconv_weight_times_inverse_is_identity_and_logdet_is_sum_of_log_diagonal():
    layer = perturb(InvertibleConv1x1(5, generator=torch.Generator().manual_seed(0)).double())
    identity = layer.weight() @ layer.inverse_weight()
    assert torch.allclose(identity, torch.eye(5, dtype=torch.float64), atol=1e-12)
    _, expected = torch.linalg.slogdet(layer.weight())
    assert layer.log_diagonal.sum().item() == pytest.approx(expected.item(), abs=1e-12)


def test_coupling_starts_as_constant_rescaling_and_scale_stays_in_unit_interval():
    layer = AffineCoupling(4, hidden_channels=8)
    x = torch.randn(2, 4, 3, 3)
    z, logabsdet = layer(x)
    factor = torch.sigmoid(torch.tensor(2.0))
    assert torch.equal(z[:, :2], x[:, :2])
    assert torch.allclose(z[:, 2:], x[:, 2:] * factor)
    assert torch.allclose(logabsdet, torch.full((2,), 18 * torch.log(factor).item()))
    perturb(layer, scale=5.0)
    _, logabsdet = layer(100 * x)
    assert torch.isfinite(logabsdet).all() and (logabsdet < 0).all()


def test_squeeze_moves_two_by_two_blocks_into_channels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    z, _ = Squeeze()(x)
    assert z.shape == (1, 4, 2, 2)
    assert z[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert z[0, :, 1, 1].tolist() == [10.0, 11.0, 14.0, 15.0]


def test_glow_squeezes_at_the_end_of_each_level_with_paper_mnist_shapes():
    flow = Glow(2, 32, levels=4, steps=1, hidden_channels=2)
    assert flow.factored_shapes == [(1, 32, 32), (2, 16, 16), (4, 8, 8)]
    assert flow.final_shape == (16, 4, 4)
    assert flow.dim == 2 * 32 * 32
    widths = [level.layers[0].layers[0].channels for level in flow.levels]
    assert widths == [2, 4, 8, 16]


def test_chain_sums_logabsdets():
    torch.manual_seed(0)
    a, b = perturb(ActNorm(2)), perturb(AffineCoupling(2, 3))
    a.initialised.fill_(True)
    x = torch.randn(3, 2, 2, 2)
    z, total = Chain(a, b)(x)
    h, first = a(x)
    z_direct, second = b(h)
    assert torch.equal(z, z_direct) and torch.allclose(total, first + second)


@pytest.mark.parametrize(
    "make, shape, message",
    [
        (lambda: ActNorm(3), (2, 4, 5, 5), r"\(B, 3, H, W\), got \(2, 4, 5, 5\)"),
        (lambda: Squeeze(), (2, 1, 3, 4), "even height and width"),
        (lambda: AffineCoupling(4, 2), (2, 4, 5), r"\(B, 4, H, W\)"),
    ],
    ids=["actnorm-channels", "squeeze-odd", "coupling-3d"],
)
def test_layers_reject_wrong_shapes_with_a_clear_message(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make()(torch.zeros(shape))


def test_constructors_reject_impossible_configurations():
    with pytest.raises(ValueError, match="at least 2 channels"):
        AffineCoupling(1, 4)
    with pytest.raises(ValueError, match="even number of input channels"):
        Glow(3, 8, levels=2, steps=1, hidden_channels=2)
    with pytest.raises(ValueError, match="not divisible"):
        Glow(2, 12, levels=4, steps=1, hidden_channels=2)
