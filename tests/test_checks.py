"""gflows.checks: each check detects what it should, and stays silent on what is correct."""

import pytest
import torch

from gflows import checks, groups
from gflows._escnn import enn


def test_equivariance_error_of_maps_we_know(dtype):
    G = groups.get("D4")
    x = torch.randn(3, 2, 6, 6, dtype=dtype)
    assert checks.equivariance_error(torch.tanh, x, G) < 1e-5
    assert checks.equivariance_error(lambda v: v.roll(1, dims=-1), x, G) > 0.1
    plain = torch.nn.Conv2d(2, 2, 3, padding=1).to(dtype)
    assert checks.equivariance_error(plain, x, G, relative=True) > 0.05


@pytest.mark.parametrize("size", [7, 8])
def test_steerable_convolution_is_equivariant_with_regular_output(size):
    """escnn's R2Conv into regular fields: round-off with the fibre permutation, O(1) without it."""
    G = groups.get("D4")
    conv = enn.R2Conv(G.scalar_fields(1), G.regular_fields(2), kernel_size=3, padding=1)
    conv.eval()
    f = lambda v: conv(enn.GeometricTensor(v, conv.in_type)).tensor
    x = torch.randn(2, 1, size, size)
    errors = checks.assert_equivariant(f, x, G, out_field_type=conv.out_type)
    assert len(errors) == 8 and max(errors.values()) < 1e-5
    grid_only = checks.equivariance_error(f, x, G, relative=True)
    assert grid_only > 0.05


def test_per_element_and_tuples():
    G = groups.get("C4")
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    weights = torch.randn(5, 5, dtype=torch.float64)

    def flow_like(v):  # z equivariant (pointwise) but a "logdet" that is not invariant
        return torch.sinh(v), (v[:, 0] * weights).sum(dim=(1, 2))

    per_element = checks.equivariance_error(flow_like, x, G, per_element=True)
    assert list(per_element) == ["identity", "rotation by 90°", "rotation by 180°", "rotation by 270°"]
    assert per_element["identity"] == 0.0 and min(list(per_element.values())[1:]) > 1e-3
    assert checks.equivariance_error(lambda v: torch.sinh(v), x, G) < 1e-12
    with pytest.raises(TypeError, match="tuple"):
        checks.equivariance_error(lambda v: "nope", x, G)


def test_points_use_every_element_by_default():
    G = groups.get("C8")
    x = torch.randn(5, 2, dtype=torch.float64)
    radial = lambda v: v * torch.exp(-v.norm(dim=1, keepdim=True))
    errors = checks.equivariance_error(radial, x, G, per_element=True)
    assert len(errors) == 8 and max(errors.values()) < 1e-12
    coordinatewise = lambda v: torch.sinh(v)  # odd and coordinate-wise: D4-equivariant on R^2, not C8
    assert checks.equivariance_error(coordinatewise, x, groups.get("D4")) < 1e-12
    assert checks.equivariance_error(coordinatewise, x, G) > 1e-3


def test_invariance_error():
    G = groups.get("D4")
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    assert checks.invariance_error(lambda v: v.pow(2).sum(dim=(1, 2, 3)), x, G) < 1e-12
    weights = torch.randn(6, 6, dtype=torch.float64)
    assert checks.invariance_error(lambda v: (v[:, 0] * weights).sum(dim=(1, 2)), x, G) > 1e-2


def test_assert_equivariant_reports_failing_elements():
    G = groups.get("C4")
    x = torch.randn(1, 1, 5, 5)
    with pytest.raises(AssertionError, match="rotation by 90°"):
        checks.assert_equivariant(lambda v: v.roll(1, dims=-1), x, G)
    with pytest.raises(ValueError, match="cannot tell how"):
        checks.equivariance_error(torch.tanh, torch.randn(2, 3), G)


class _Affine(torch.nn.Module):
    """z = x W^T + b with a possibly wrong inverse, to test the checks themselves."""

    def __init__(self, weight, wrong_inverse=False):
        super().__init__()
        self.weight, self.wrong_inverse = weight, wrong_inverse

    def forward(self, x):
        logdet = torch.linalg.slogdet(self.weight).logabsdet.expand(x.shape[0])
        return x @ self.weight.T + 1.0, logdet

    def inverse(self, z):
        weight = self.weight.T if self.wrong_inverse else self.weight
        return torch.linalg.solve(weight, (z - 1.0).T).T


def test_inverse_error_and_exact_logdet(dtype):
    weight = torch.randn(4, 4, dtype=dtype) + 3 * torch.eye(4, dtype=dtype)
    x = torch.randn(3, 4, dtype=dtype)
    good, bad = _Affine(weight), _Affine(weight, wrong_inverse=True)
    assert checks.inverse_error(good, x) < 1e-5
    assert checks.inverse_error(bad, x) > 1e-2
    exact = checks.exact_logdet(good, x)
    torch.testing.assert_close(exact, good(x)[1])
    torch.testing.assert_close(checks.exact_logdet(good.inverse, x), -good(x)[1])
    with pytest.raises(ValueError, match="keep D"):
        checks.exact_logdet(torch.tanh, torch.randn(1, 5000))
    with pytest.raises(ValueError, match="square"):
        checks.exact_logdet(lambda v: v[:, :2], x)


def test_relative_error_of_an_invariant_output_is_taken_against_its_own_size():
    G = groups.get("C4")
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    # a large "log-det" with a small non-invariant part, beside an equivariant output of size ~1
    f = lambda v: (v, 1e6 + 1e-3 * v[:, 0, 0, 0])  # noqa: E731
    assert checks.equivariance_error(f, x, G) > 1e-4
    assert checks.equivariance_error(f, x, G, relative=True) < 1e-8
