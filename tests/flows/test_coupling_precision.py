"""bfloat16 coupling networks: the flow stays an exact bijection with an exact log-determinant."""

from __future__ import annotations

import pytest
import torch

import flows
from flows.layers import AffineCoupling
from flows.training import train

from .helpers import brute_force_logabsdet, perturb, relative_error, tiny_run_config


def _bf16_coupling(channels: int = 4, hidden: int = 8) -> AffineCoupling:
    torch.manual_seed(0)
    layer = perturb(AffineCoupling(channels, hidden), seed=1, scale=0.5)
    layer.network_dtype = torch.bfloat16
    return layer


def test_bf16_network_really_rounds_but_inverse_is_exact():
    layer = _bf16_coupling()
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(2))
    z, logdet = layer(x)
    x_back, inverse_logdet = layer.inverse(z)
    # Exact up to float32 rounding of the affine map: the network sees the same x_a both ways and
    # gives the same rounded output.
    assert relative_error(x_back, x) < 1e-5
    torch.testing.assert_close(inverse_logdet, -logdet, rtol=0, atol=1e-5)
    layer.network_dtype = None
    z_float32, logdet_float32 = layer(x)
    # The control: the network itself is visibly rounded (bfloat16 keeps 8 bits of mantissa), so
    # an inverse that ran it in another precision would miss x by far more than the bound above.
    assert (z - z_float32).abs().max() > 1e-3
    assert (logdet - logdet_float32).abs().max() > 1e-3
    assert relative_error(layer.inverse(z)[0], x) > 1e-3


def test_bf16_logdet_equals_the_jacobian_of_the_map_it_computes():
    layer = _bf16_coupling(channels=2, hidden=6)
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    _, logdet = layer(x)
    expected = brute_force_logabsdet(lambda v: layer(v)[0], x)
    torch.testing.assert_close(logdet[0], expected, rtol=1e-5, atol=1e-5)


def test_float64_inputs_ignore_the_reduced_precision():
    layer = _bf16_coupling().double()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    z, logdet = layer(x)
    layer.network_dtype = None
    torch.testing.assert_close(layer(x), (z, logdet), rtol=0, atol=0)


def test_model_round_trip_and_saved_precision(tmp_path):
    model = flows.build_model("tiny", "split", coupling_precision="bfloat16")
    assert model.config.coupling_precision == "bfloat16"
    couplings = [m for m in model.modules() if isinstance(m, AffineCoupling)]
    assert couplings and all(m.network_dtype is torch.bfloat16 for m in couplings)
    x = torch.rand(4, *model.config.data_shape, generator=torch.Generator().manual_seed(5)) - 0.5
    model.initialise(x)
    perturb(model, seed=6, scale=0.05)
    z, _ = model.encode(x, torch.Generator().manual_seed(7))
    assert relative_error(model.decode(z), x) < 1e-4  # float32 rounding; bfloat16's is ~1e-2

    model.set_coupling_precision("float32")
    assert model.config.coupling_precision == "float32"
    assert all(m.network_dtype is None for m in couplings)
    with pytest.raises(ValueError, match="coupling_precision must be one of"):
        model.set_coupling_precision("float16")
    with pytest.raises(ValueError, match="coupling_precision must be one of"):
        flows.build_model("tiny", "base", coupling_precision="half")


def test_train_amp_trains_and_saves_bfloat16_couplings(tmp_path):
    run = tmp_path / "run"
    config = tiny_run_config(run, epochs=1, amp=True)
    final = train(config)
    assert torch.isfinite(torch.tensor(final["bits_per_dim"]))
    model = flows.load(run)
    assert model.config.coupling_precision == "bfloat16"
    assert all(
        m.network_dtype is torch.bfloat16 for m in model.modules() if isinstance(m, AffineCoupling)
    )
