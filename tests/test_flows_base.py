"""The flow protocol: one contract test over every layer, then FlowModel, bits/dim and dequantisation.

For every layer: log-det = brute-force log|det dz/dx| and the inverse's is its negative (the sign
convention of gflows.flows.base), inverse round trip, gradients reach every parameter, save/load,
and equivariance to the group the layer claims, also after optimiser steps.
"""

import io
import math

import pytest
import torch

from gflows import checks, groups
from gflows._escnn import enn
from gflows.flows import ActNorm, FlowModel, Logit, ResidualBlock, Sequential, dequantize, standard_normal_log_prob
from gflows.flows.autoregressive import AutoregressiveAffine
from gflows.flows.coupling import AffineCoupling, AngularCoupling, FieldSplit, RadialCoupling
from gflows.flows.logdet import Exact
from gflows.models.residual import image_branch, point_branch
from gflows.nn import point_fields, point_regular_fields
from gflows.nn.conditioners import EquivariantConditioner, MaskedConditioner


def _coupling(group, channels, parity=0):
    G = groups.get(group)
    split = FieldSplit(G.scalar_fields(channels), parity)
    return AffineCoupling(split, EquivariantConditioner(split.in_type, split.t_type, split.n_scales, G.regular_fields(2)))


def _autoregressive(group, channels, fast):
    G = groups.get(group)
    fields = G.scalar_fields(channels)
    return AutoregressiveAffine(fields, MaskedConditioner(fields, G.regular_fields(2), [2, 0, 1]), fast=fast)


def _radial(group):
    G = groups.get(group)
    return RadialCoupling(EquivariantConditioner(point_fields(G), None, 3, point_regular_fields(G, 2)), 3)


def _angular(group):
    G = groups.get(group)
    space = point_fields(G).gspace
    scalars = enn.FieldType(space, [space.trivial_repr])
    return AngularCoupling(G, EquivariantConditioner(scalars, None, 5, enn.FieldType(space, [space.trivial_repr] * 4)), 2)


# (name, factory, example input, group it is equivariant to, field type name for images)
LAYERS = {
    "actnorm-scalar": (lambda: ActNorm(3), lambda: torch.randn(4, 3, 5, 5) * 2 + 1, "D4", None),
    "actnorm-regular": (lambda: ActNorm(2, field_size=8), lambda: torch.randn(4, 16, 4, 4) - 1, "D4", 2),
    "actnorm-points": (lambda: ActNorm(1, field_size=2, shift=False), lambda: torch.randn(16, 2) * 3, "C8", None),
    "logit": (lambda: Logit(0.05), lambda: torch.rand(4, 2, 5, 5), "D4", None),
    "sequential": (lambda: Sequential(Logit(), ActNorm(2)), lambda: torch.rand(4, 2, 6, 6), "D4", None),
    "coupling-fields": (lambda: _coupling("D4", 3), lambda: torch.randn(3, 3, 4, 4), "D4", None),
    "iaf-fields": (lambda: _autoregressive("C4", 3, "inverse"), lambda: torch.randn(3, 3, 5, 5), "C4", None),
    "maf-fields": (lambda: _autoregressive("D4", 3, "forward"), lambda: torch.randn(3, 3, 4, 4), "D4", None),
    "coupling-radial": (lambda: _radial("C8"), lambda: torch.randn(16, 2) * 2, "C8", None),
    "coupling-angular": (lambda: _angular("D8"), lambda: torch.randn(16, 2) * 2, "D8", None),
    "residual-image": (
        lambda: ResidualBlock(image_branch(groups.get("D4"), 2, 2, coeff=0.7), train_estimator=Exact(), eval_estimator=Exact()),
        lambda: torch.randn(3, 2, 5, 5),
        "D4",
        None,
    ),
    "residual-points": (
        lambda: ResidualBlock(point_branch(groups.get("C8"), 2, coeff=0.7), train_estimator=Exact(), eval_estimator=Exact()),
        lambda: torch.randn(8, 2),
        "C8",
        None,
    ),
}


def _make(name, dtype):
    factory, example, group, regular_fields = LAYERS[name]
    layer, x = factory().to(dtype), example().to(dtype)
    layer(x)  # data-dependent initialisation in training mode
    layer.eval()
    G = groups.get(group)
    field_type = G.regular_fields(regular_fields) if regular_fields else None
    return layer, x, G, field_type


@pytest.mark.parametrize("name", LAYERS)
def test_logdet_matches_bruteforce_jacobian_with_the_documented_sign(name, dtype):
    layer, x, _, _ = _make(name, dtype)
    z, logdet = layer(x)
    assert logdet.shape == (x.shape[0],)
    tolerance = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(checks.exact_logdet(layer, x), logdet.detach(), **tolerance)
    torch.testing.assert_close(checks.exact_logdet(layer.inverse, z.detach()), -logdet.detach(), **tolerance)


@pytest.mark.parametrize("name", LAYERS)
def test_inverse_round_trip(name, dtype):
    layer, x, _, _ = _make(name, dtype)
    assert checks.inverse_error(layer, x) < (1e-10 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_gradients_reach_the_input_and_every_parameter(name, dtype):
    layer, x, _, _ = _make(name, dtype)
    layer.train()
    x.requires_grad_(True)
    z, logdet = layer(x)
    (z.pow(2).sum() - logdet.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for parameter_name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", LAYERS)
def test_save_and_load_gives_the_same_layer(name, dtype):
    layer, x, _, _ = _make(name, dtype)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = LAYERS[name][0]().to(dtype)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.train()  # a loaded layer must not initialise itself again on new data
    z, logdet = layer(x)
    z_fresh, logdet_fresh = fresh(x * 0.5 + 0.25)  # other statistics, still in the domain of Logit
    torch.testing.assert_close(fresh(x)[0], z)
    assert not torch.allclose(z_fresh, z)


@pytest.mark.parametrize("name", LAYERS)
def test_equivariant_at_init_and_after_training_steps(name, dtype):
    layer, x, G, field_type = _make(name, dtype)
    kwargs = dict(in_field_type=field_type, out_field_type=field_type) if field_type else {}
    checks.assert_equivariant(layer, x, G, **kwargs)
    layer.train()
    optimiser = torch.optim.SGD(layer.parameters(), lr=0.1) if list(layer.parameters()) else None
    for _ in range(3):
        if optimiser is None:
            break
        z, logdet = layer(x)
        loss = (0.5 * z.pow(2).flatten(1).sum(1) - logdet).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    checks.assert_equivariant(layer, x, G, **kwargs)


def test_actnorm_initialises_from_data_and_invariantly():
    x = torch.randn(64, 2, 5, 5, dtype=torch.float64) * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + 2
    layer = ActNorm(2).double()
    z, _ = layer(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(2, dtype=torch.float64), rtol=1e-5, atol=0)
    G = groups.get("D4")
    moved = ActNorm(2).double()
    moved(G.act_image(x, G.elements()[3]))
    torch.testing.assert_close(moved.log_scale, layer.log_scale)
    with pytest.raises(ValueError, match="2 fields of 2 channels in all"):
        layer(torch.randn(1, 3, 5, 5, dtype=torch.float64))


def test_flow_model_log_prob_and_bits_per_dim_formula():
    model = FlowModel(Sequential(), (1, 4, 4), group="D4")
    x = torch.rand(5, 1, 4, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(x), expected)
    bits = -(expected - 16 * math.log(256)) / (16 * math.log(2))
    torch.testing.assert_close(model.bits_per_dim(x), bits)
    torch.testing.assert_close(standard_normal_log_prob(x), expected)


def test_flow_model_density_is_invariant_for_an_equivariant_flow():
    G = groups.get("D4")
    model = FlowModel(Sequential(Logit(), ActNorm(1)), (1, 8, 8), group=G).double()
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    model(x)
    model.eval()
    assert checks.invariance_error(model.log_prob, x, G) < 1e-10
    assert model.dim == 64


def test_flow_model_refuses_bad_shapes_and_groups():
    with pytest.raises(ValueError, match="H == W"):
        FlowModel(Sequential(), (1, 4, 5), group="C4")
    with pytest.raises(ValueError, match=r"\(C, H, W\) for images or \(2,\)"):
        FlowModel(Sequential(), (3,), group="C4")
    model = FlowModel(Sequential(), (1, 4, 4), group="C4")
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 4\)"):
        model.log_prob(torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 4\)"):
        model.log_prob(torch.rand(1, 4, 4))
    points = FlowModel(Sequential(ActNorm(1, 2, shift=False)), (2,), group="C8")
    with pytest.raises(ValueError, match="bits_per_dim is defined for images"):
        points.bits_per_dim(torch.randn(3, 2))


def test_sampling_shapes_and_temperature():
    model = FlowModel(Sequential(ActNorm(1, 2, shift=False)), (2,), group="C8").double()
    model(torch.randn(100, 2, dtype=torch.float64) * 4)
    generator = torch.Generator().manual_seed(1)
    samples = model.sample(2000, generator=generator)
    assert samples.shape == (2000, 2) and samples.dtype == torch.float64
    cold = model.sample(2000, temperature=0.0)
    assert torch.all(cold == 0)
    assert 2.5 < samples.std() < 5.5


def test_dequantize():
    pixels = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    x = dequantize(pixels, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() < 1
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), pixels)
    with pytest.raises(ValueError, match="integer"):
        dequantize(torch.rand(3))
    with pytest.raises(ValueError, match="0..255"):
        dequantize(torch.tensor([3, 300]))


def test_dequantize_of_255_stays_below_one():
    # with u ~ torch.rand in float32, 255 + u rounds up to 256 for u > 1 - 2**-17: about 15 of these 2e6
    pixels = torch.full((2_000_000,), 255, dtype=torch.uint8)
    x = dequantize(pixels, generator=torch.Generator().manual_seed(0))
    assert x.max() < 1 and torch.equal(torch.floor(x * 256).to(torch.uint8), pixels)
    assert len(torch.unique(x)) > 60_000          # u spreads over its 2**16 values
