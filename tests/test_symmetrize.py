"""gflows.symmetrize: the Reynolds operator makes maps equivariant and functions invariant, and is a projection."""

import math

import pytest
import torch

from gflows import checks, groups
from gflows.nn.equivariant import EquivariantConv
from gflows.symmetrize import symmetrize, symmetrize_function, symmetrize_log_prob

POINT_GROUPS = ["C3", "C4", "C5", "C8", "D3", "D4", "D5", "D8"]
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


def wind(x):
    """A smooth map of the plane with no symmetry: (B, 2) -> (B, 2), values of order one. Its
    equivariant part (for every C_N and D_N) is not zero, thanks to the radial term x (1 + x_1 / 2)."""
    breeze = torch.stack([0.6 + 0.5 * torch.sin(1.5 * x[:, 1]), 0.2 + 0.3 * torch.tanh(x[:, 0]) * x[:, 1]], dim=-1)
    return breeze + x * (1 + 0.5 * x[:, :1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", POINT_GROUPS)
def test_symmetrized_map_of_points_is_equivariant_and_the_raw_map_was_not(name, dtype):
    G = groups.get(name)
    x = torch.randn(64, 2, dtype=dtype)
    assert checks.equivariance_error(wind, x, G, relative=True) > 0.1
    averaged = symmetrize(wind, G)
    assert averaged(x).abs().max() > 0.5                      # the relative error below is not 0/0
    errors = checks.equivariance_error(averaged, x, G, relative=True, per_element=True)
    assert len(errors) == G.order
    assert max(errors.values()) < TOLERANCE[dtype]


@pytest.mark.parametrize("name", POINT_GROUPS)
def test_reynolds_operator_is_a_projection(name):
    G = groups.get(name)
    x = torch.randn(32, 2, dtype=torch.float64)
    once = symmetrize(wind, G)
    assert (symmetrize(once, G)(x) - once(x)).abs().max() < 1e-12
    radial = lambda v: v * torch.exp(-v.norm(dim=-1, keepdim=True))  # noqa: E731  (O(2)-equivariant)
    assert (symmetrize(radial, G)(x) - radial(x)).abs().max() < 1e-12


def test_projection_depends_on_the_group():
    """sinh coordinate-wise is D4-equivariant (odd, permutes with the axes) but not C8-equivariant."""
    x = torch.randn(32, 2, dtype=torch.float64)
    assert (symmetrize(torch.sinh, groups.get("D4"))(x) - torch.sinh(x)).abs().max() < 1e-12
    assert (symmetrize(torch.sinh, groups.get("C8"))(x) - torch.sinh(x)).abs().max() > 1e-2


@pytest.mark.parametrize("n", [3, 5, 8])
def test_average_of_a_linear_map_is_the_commutant_projection(n):
    """Brute force against the closed form: over C_N (N >= 3) a 2x2 matrix M averages to a I + b J
    (J the 90° rotation), a = tr M / 2, b = (M21 - M12) / 2; over D_N only a I survives."""
    torch.manual_seed(n)
    m = torch.randn(2, 2, dtype=torch.float64)
    x = torch.randn(16, 2, dtype=torch.float64)
    a, b = (m[0, 0] + m[1, 1]) / 2, (m[1, 0] - m[0, 1]) / 2
    rotation_part = torch.tensor([[a, -b], [b, a]], dtype=torch.float64)
    linear = lambda v: v @ m.T  # noqa: E731
    assert (symmetrize(linear, groups.get(f"C{n}"))(x) - x @ rotation_part.T).abs().max() < 1e-12
    assert (symmetrize(linear, groups.get(f"D{n}"))(x) - a * x).abs().max() < 1e-12


@pytest.mark.parametrize("size", [7, 8])
def test_symmetrized_convolution_on_images_scalar_and_regular_fields(size):
    G = groups.get("D4")
    x = torch.randn(3, 1, size, size, dtype=torch.float64)
    scalar_conv = torch.nn.Conv2d(1, 1, 3, padding=1).double()
    assert checks.equivariance_error(scalar_conv, x, G, relative=True) > 0.05
    assert checks.equivariance_error(symmetrize(scalar_conv, G), x, G, relative=True) < 1e-12
    regular = G.regular_fields(1)
    to_regular = torch.nn.Conv2d(1, regular.size, 3, padding=1).double()
    averaged = symmetrize(to_regular, G, out_field_type=regular)
    assert checks.equivariance_error(to_regular, x, G, out_field_type=regular, relative=True) > 0.05
    assert checks.equivariance_error(averaged, x, G, out_field_type=regular, relative=True) < 1e-12
    again = symmetrize(averaged, G, out_field_type=regular)
    assert (again(x) - averaged(x)).abs().max() < 1e-12


def test_steerable_convolution_is_left_unchanged():
    """gflows' steerable conv is equivariant to float64 precision (its filter is projected with the
    same operator, gflows.nn.exact), so averaging it changes nothing."""
    G = groups.get("C4")
    conv = EquivariantConv(G.scalar_fields(1), G.regular_fields(2)).double()
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert (symmetrize(conv, G, out_field_type=conv.out_type)(x) - conv(x)).abs().max() < 1e-12


def test_clear_errors():
    x_images = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="rotation by 45°"):
        symmetrize(lambda v: v, groups.get("C8"))(x_images)
    with pytest.raises(ValueError, match="rotation by 45°"):
        symmetrize_function(lambda v: v.sum((1, 2, 3)), groups.get("D8"))(x_images)
    with pytest.raises(ValueError, match=r"\(B, 2\) or images"):
        symmetrize(lambda v: v, groups.get("C4"))(torch.randn(5, 3))
    with pytest.raises(ValueError, match="must return"):
        symmetrize(lambda v: v[:, :1], groups.get("C4"))(torch.randn(5, 2))
    with pytest.raises(ValueError, match="one value per sample"):
        symmetrize_function(lambda v: v, groups.get("C4"))(torch.randn(5, 2))


def test_symmetrized_function_is_invariant_on_points_and_images():
    G = groups.get("D5")
    x = torch.randn(32, 2, dtype=torch.float64)
    first_coordinate = lambda v: v[:, 0] + v[:, 1] ** 3  # noqa: E731
    assert checks.invariance_error(first_coordinate, x, G) > 0.1
    averaged = symmetrize_function(first_coordinate, G)
    assert checks.invariance_error(averaged, x, G) < 1e-12
    assert (symmetrize_function(averaged, G)(x) - averaged(x)).abs().max() < 1e-12
    D4 = groups.get("D4")
    images = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    first_row = lambda v: v[:, 0, 0].sum(-1)  # noqa: E731
    assert checks.invariance_error(first_row, images, D4) > 0.1
    assert checks.invariance_error(symmetrize_function(first_row, D4), images, D4) < 1e-12


def test_symmetrized_log_prob_is_an_invariant_normalised_density():
    """A Gaussian off the origin: its orbit mixture is invariant, matches the brute-force mixture,
    still integrates to 1, and an invariant density (standard normal) is left unchanged."""
    G = groups.get("C5")
    centre = torch.tensor([1.0, 0.3], dtype=torch.float64)
    log_gauss = lambda v: -0.5 * (v - centre).pow(2).sum(-1) - math.log(2 * math.pi)  # noqa: E731
    averaged = symmetrize_log_prob(log_gauss, G)
    x = torch.randn(32, 2, dtype=torch.float64)
    assert checks.invariance_error(log_gauss, x, G) > 0.1
    assert checks.invariance_error(averaged, x, G) < 1e-12
    brute = torch.stack([log_gauss(G.act_points(x, g)).exp() for g in G.elements()]).mean(0).log()
    assert (averaged(x) - brute).abs().max() < 1e-12
    ticks = torch.linspace(-9, 9, 361, dtype=torch.float64)
    grid = torch.cartesian_prod(ticks, ticks)
    mass = averaged(grid).exp().sum() * (ticks[1] - ticks[0]) ** 2
    assert abs(float(mass) - 1) < 1e-6
    standard = lambda v: -0.5 * v.pow(2).sum(-1) - math.log(2 * math.pi)  # noqa: E731
    assert (symmetrize_log_prob(standard, G)(x) - standard(x)).abs().max() < 1e-12
