"""G-Coupling: exact equivariance of the field split, the two broken designs, points, and the models."""

import pytest
import torch

from gflows import checks, groups, models
from model_contract import train_briefly_then_check
from gflows.flows.coupling import AffineCoupling, Checkerboard, FieldSplit
from gflows.flows.squeeze import irrep_fields
from gflows.nn import point_coordinate_fields, point_regular_fields
from gflows.nn.conditioners import EquivariantConditioner, InvariantDecoderConditioner


def _coupling(field_type, hidden, parity=0):
    split = FieldSplit(field_type, parity)
    return AffineCoupling(split, EquivariantConditioner(split.in_type, split.t_type, split.n_scales, hidden))


def _perturb(module):
    """Random weights instead of the near-identity initialisation, so that errors cannot hide."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    return module


@pytest.mark.parametrize("name", ["C4", "D4"])
@pytest.mark.parametrize("parity", [0, 1])
def test_coupling_on_the_irreducible_fields_of_a_squeezed_image(name, parity, dtype):
    G = groups.get(name)
    fields = irrep_fields(G, 1)
    layer = _perturb(_coupling(fields, G.regular_fields(1), parity)).to(dtype)
    x = torch.randn(2, fields.size, 2, 2, dtype=dtype)
    checks.assert_equivariant(layer, x, G, in_field_type=fields, out_field_type=fields)
    z, logdet = layer(x)
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(checks.exact_logdet(layer, x), logdet.detach(), rtol=tolerance, atol=tolerance)
    assert checks.inverse_error(layer, x) < (1e-12 if dtype == torch.float64 else 1e-5)


def test_coupling_for_c8_on_its_exact_elements(dtype):
    G = groups.get("C8")
    layer = _perturb(_coupling(G.scalar_fields(3), G.regular_fields(1))).to(dtype)
    x = torch.randn(2, 3, 6, 6, dtype=dtype)
    errors = checks.assert_equivariant(layer, x, G)
    assert len(errors) == 4  # the 90-degree rotations


@pytest.mark.parametrize("name", ["trivial", "C2", "D1", "D2"])
@pytest.mark.parametrize("parity", [0, 1])
def test_cartesian_coupling_of_points_where_the_group_keeps_the_coordinates_apart(name, parity, dtype):
    G = groups.get(name)
    layer = _perturb(_coupling(point_coordinate_fields(G), point_regular_fields(G, 4), parity)).to(dtype)
    x = torch.randn(16, 2, dtype=dtype)
    checks.assert_equivariant(layer, x, G)
    z, logdet = layer(x)
    torch.testing.assert_close(z[:, 1 - parity], x[:, 1 - parity], rtol=0, atol=0)  # x_A passes unchanged
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(checks.exact_logdet(layer, x), logdet.detach(), rtol=tolerance, atol=tolerance)
    assert checks.inverse_error(layer, x) < (1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("name, fields", [("trivial", 5), ("C4", 4), ("C4", "regular 2"), ("D4", "irreps")])
@pytest.mark.parametrize("parity", [0, 1])
def test_field_split_by_slices_takes_the_channels_of_its_fields(name, fields, parity):
    G = groups.get(name)
    field_type = {"regular 2": G.regular_fields(2), "irreps": irrep_fields(G, 1)}.get(fields) or G.scalar_fields(fields)
    split = FieldSplit(field_type, parity)
    x = torch.randn(2, field_type.size, 3, 3)
    x_a, x_b = split.split(x)
    assert torch.equal(x_a, x[:, split.a_index]) and torch.equal(x_b, x[:, split.b_index])
    assert torch.equal(split.merge(x_a, x_b), x)
    s = torch.randn(2, split.n_scales, 3, 3)
    assert torch.equal(split.restrict(s, x_b)[0], s[:, split.scale_index])
    if name != "D4":   # fields of one size: views, no index
        assert split._a_slice is not None and split._b_slice is not None


def test_a_split_needs_two_fields():
    with pytest.raises(ValueError, match="nothing is left to condition on"):
        FieldSplit(groups.get("C4").scalar_fields(1))
    with pytest.raises(ValueError, match="nothing is left to condition on"):
        models.build("coupling", group="C8", data_shape=(1, 8, 8), depth=2, width=8)
    with pytest.raises(ValueError, match="split must be one of"):
        models.build("coupling", group="C4", data_shape=(2, 8, 8), split="pixels")


def _checkerboard_coupling(G, size, require_respected=True):
    board = Checkerboard(G.scalar_fields(1), G, require_respected=require_respected)
    layer = AffineCoupling(board, EquivariantConditioner(board.in_type, board.t_type, board.n_scales, G.regular_fields(2)))
    return _perturb(layer).double(), torch.randn(2, 1, size, size, dtype=torch.float64)


def test_checkerboard_breaks_equivariance_on_even_sizes_only():
    D4 = groups.get("D4")
    layer, x = _checkerboard_coupling(D4, 5)
    checks.assert_equivariant(layer, x, D4)  # odd size: every element keeps the parity of i + j
    layer, x = _checkerboard_coupling(D4, 6)
    with pytest.raises(ValueError, match="maps the pixel checkerboard of a 6x6 image to its complement"):
        layer(x)
    layer, x = _checkerboard_coupling(D4, 6, require_respected=False)
    assert checks.equivariance_error(layer, x, D4, relative=True) > 1e-2
    C2 = groups.get("C2")  # a half turn keeps the parity on even sizes
    layer, x = _checkerboard_coupling(C2, 6)
    checks.assert_equivariant(layer, x, C2)


def test_invariant_scale_decoded_per_pixel_is_not_equivariant():
    G = groups.get("C4")
    fields = G.scalar_fields(2)
    split = FieldSplit(fields)
    conditioner = InvariantDecoderConditioner(split.in_type, split.t_type, split.n_scales, G.regular_fields(2), (6, 6))
    layer = _perturb(AffineCoupling(split, conditioner)).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    assert checks.invariance_error(lambda v: conditioner(v[:, :1])[0].flatten(1).mean(1), x, G) < 1e-10
    assert checks.equivariance_error(layer, x, G, relative=True) > 1e-2
    model = models.coupling.FlowModel(layer, (2, 6, 6), G)
    assert checks.invariance_error(model.log_prob, x, G) > 1e-3


MODEL_CASES = [
    ("trivial", (1, 8, 8)), ("C4", (1, 8, 8)), ("D4", (1, 6, 6)), ("D4", (3, 4, 4)), ("C4", (2, 5, 5)),
    ("C8", (2, 4, 4)), ("C4", (2,)), ("D4", (2,)), ("C8", (2,)), ("D8", (2,)), ("trivial", (2,)),
]


def _data(shape, dtype):
    return torch.rand(4, *shape, dtype=dtype) if len(shape) == 3 else 2 * torch.randn(64, 2, dtype=dtype)


@pytest.mark.parametrize("name, shape", MODEL_CASES)
def test_coupling_model_is_equivariant_invertible_and_invariant_before_and_after_training(name, shape, dtype):
    G = groups.get(name)
    model = models.build("coupling", group=name, data_shape=shape, depth=2, width=4).to(dtype)
    x = _data(shape, dtype)
    train_briefly_then_check(model, x, G)


def test_coupling_model_log_det_is_the_exact_one():
    for shape in [(1, 4, 4), (2,)]:
        model = models.build("coupling", group="D4", data_shape=shape, depth=2, width=4).double()
        model.eval()
        x = _data(shape, torch.float64)[:2]
        torch.testing.assert_close(checks.exact_logdet(model, x), model(x)[1].detach(), rtol=1e-9, atol=1e-9)


def test_coupling_model_in_float32_is_equivariant_to_1e_5():
    G = groups.get("D4")
    model = models.build("coupling", group=G, data_shape=(1, 8, 8), depth=2, width=8)
    x = torch.rand(4, 1, 8, 8)
    model(x)
    model.eval()
    with torch.no_grad():
        assert checks.equivariance_error(model, x, G, relative=True) < 1e-5
        assert checks.invariance_error(model.log_prob, x, G) < 1e-4


def test_realnvp_baseline_is_the_same_code_with_the_trivial_group():
    model = models.build("coupling", group="trivial", data_shape=(1, 8, 8), depth=2, width=8, split="checkerboard")
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    model = model.double()
    assert checks.inverse_error(model, x) < 1e-10
    with pytest.raises(ValueError, match="complement"):
        models.build("coupling", group="D4", data_shape=(1, 8, 8), split="checkerboard").log_prob(x.float())


@pytest.mark.parametrize("kind", ["coupling", "iaf"])
def test_build_accepts_the_documented_shapes_and_double(kind):
    for shape in [(1, 8, 8), (3, 8, 8), (2,)]:
        model = models.build(kind, group="D4", data_shape=shape, depth=2, width=8).double()
        x = torch.rand(2, *shape, dtype=torch.float64) if len(shape) == 3 else torch.randn(2, 2, dtype=torch.float64)
        z, logdet = model(x)
        assert z.shape == x.shape and logdet.shape == (2,) and model.sample(3).shape == (3, *shape)


@pytest.mark.parametrize("kind", ["coupling", "iaf"])
@pytest.mark.parametrize("name", ["trivial", "C4", "D8"])
def test_point_coupling_is_a_diffeomorphism_at_the_origin(kind, name):
    """z(0) = 0 with log-det 0, Jacobian -> I as x -> 0, and a finite density continuous at the origin."""
    torch.manual_seed(0)
    model = _perturb(models.build(kind, group=name, data_shape=(2,), depth=4, width=8).double()).eval()
    origin = torch.zeros(1, 2, dtype=torch.float64)
    with torch.no_grad():
        z, log_det = model(origin)
        assert torch.equal(z, origin) and float(log_det) == 0.0
        log_q0 = float(model.log_prob(origin))
        assert abs(log_q0 + torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))) < 1e-12
    angles = torch.linspace(0, 2 * torch.pi, 9, dtype=torch.float64)[:-1] + 0.3
    directions = torch.stack([angles.cos(), angles.sin()], dim=1)
    errors = []
    for radius in (1e-2, 1e-4, 1e-6):
        points = radius * directions
        jacobians = torch.autograd.functional.jacobian(lambda x: model(x)[0].sum(0), points).permute(1, 0, 2)
        errors.append(float((jacobians - torch.eye(2, dtype=torch.float64)).abs().max()))
        with torch.no_grad():
            gap = float((model.log_prob(points) - log_q0).abs().max())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4, errors
    assert gap < 1e-6
    x = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    model.log_prob(x).sum().backward()
    assert torch.isfinite(x.grad).all()
