"""gflows.transport: Moser's construction gives an equivariant map that pushes p onto q, on coarse grids."""

import pytest
import torch

from gflows import checks, groups
from gflows.symmetrize import symmetrize_function
from gflows.transport import MoserTransport, gaussian_bumps

L = 1.5
D4 = groups.get("D4")


def stream(x):
    """A stream function that vanishes on the boundary of [-L, L]^2 and has no symmetry."""
    box = (L ** 2 - x[:, 0] ** 2) * (L ** 2 - x[:, 1] ** 2) / L ** 4
    return 0.05 * box * torch.exp(-((x[:, 0] - 0.8) ** 2 + (x[:, 1] - 0.3) ** 2) / 0.5)


@pytest.fixture(scope="module")
def densities():
    p = gaussian_bumps([[0.8, 0.3]], width=0.25, group=D4, floor=0.02)
    q = gaussian_bumps([[0.5, 0.5]], width=0.35, group=D4, floor=0.02)
    return p, q


@pytest.fixture(scope="module")
def coarse(densities):
    return MoserTransport(*densities, half_width=L, grid_size=32, n_steps=8)


@pytest.fixture
def points():
    return (torch.rand(100, 2, dtype=torch.float64) * 2 - 1) * L


def test_gaussian_bumps_with_a_group_is_the_orbit_average(densities, points):
    p, _ = densities
    brute = symmetrize_function(gaussian_bumps([[0.8, 0.3]], width=0.25, floor=0.02), D4)
    assert (p(points) - brute(points)).abs().max() < 1e-14
    assert checks.invariance_error(p, points, D4) < 1e-14


def test_poisson_solution_is_exact_and_invariant_on_the_grid(coarse):
    assert coarse.poisson_residual < 1e-10
    phi = coarse.potential
    assert abs(float(phi.mean())) < 1e-12
    for moved in (torch.rot90(phi, 1), torch.flip(phi, dims=(0,)), phi.T):
        assert (moved - phi).abs().max() < 1e-12 * phi.abs().max()


def test_map_and_field_are_d4_equivariant_to_round_off(coarse, points):
    assert checks.equivariance_error(coarse, points, D4) < 1e-12
    assert checks.equivariance_error(lambda v: coarse.velocity(v, 0.4), points, D4) < 1e-12
    assert checks.equivariance_error(lambda v: coarse.step(v, 3), points, D4) < 1e-12


def test_map_is_the_composition_of_its_steps_and_keeps_the_square(coarse, points):
    path = coarse.trajectory(points)
    assert path.shape == (coarse.n_steps + 1, 100, 2)
    assert (path[-1] - coarse(points)).abs().max() == 0
    assert path.abs().max() <= L
    on_edge = torch.stack([torch.full((20,), L, dtype=torch.float64), torch.linspace(-L, L, 20, dtype=torch.float64)], -1)
    assert (coarse(on_edge)[:, 0] - L).abs().max() < 1e-12          # the flux is tangent to the boundary
    assert coarse.flux(on_edge)[:, 0].abs().max() < 1e-14


def test_log_det_is_the_brute_force_log_det_of_the_computed_map(coarse, points):
    _, log_det = coarse.transport_with_log_det(points[:5])
    assert (log_det - checks.exact_logdet(coarse, points[:5])).abs().max() < 1e-12


def test_change_of_variables_residual_is_small_and_shrinks_with_the_grid(densities, coarse, points):
    """log q(T x) + log|det DT(x)| - log p(x): below 0.15 nats on a 32x32 grid (8 RK4 steps), and
    the mean at least halves from 32x32 to 64x64 (bilinear interpolation of the gradient field)."""
    coarse_residual = coarse.change_of_variables_residual(points).abs()
    assert coarse_residual.max() < 0.15
    finer = MoserTransport(*densities, half_width=L, grid_size=64, n_steps=8)
    assert finer.change_of_variables_residual(points).abs().mean() < coarse_residual.mean() / 2
    identity = MoserTransport(densities[0], densities[0], half_width=L, grid_size=16, n_steps=2)
    assert (identity(points) - points).abs().max() < 1e-15           # p onto p: nothing moves


def test_stream_function_breaks_equivariance_and_averaging_repairs_it(densities, coarse, points):
    raw = MoserTransport(*densities, half_width=L, grid_size=32, n_steps=4, stream_function=stream)
    averaged = MoserTransport(*densities, half_width=L, grid_size=32, n_steps=4, stream_function=stream, group=D4)
    assert (raw.flux(points) - coarse.flux(points)).abs().max() > 1e-2  # a genuinely different field
    assert checks.equivariance_error(raw, points, D4) > 1e-2
    assert checks.equivariance_error(averaged, points, D4) < 1e-12
    for transport in (raw, averaged):                                   # both still push p onto q
        assert transport.change_of_variables_residual(points[:30]).abs().max() < 0.15


def test_clear_errors(densities):
    p, q = densities
    with pytest.raises(ValueError, match="subgroup of D4"):
        MoserTransport(p, q, half_width=L, grid_size=8, group=groups.get("C8"))
    lopsided = gaussian_bumps([[0.8, 0.3]], width=0.25)
    with pytest.raises(ValueError, match="not C4-invariant"):
        MoserTransport(lopsided, q, half_width=L, grid_size=8, group=groups.get("C4"))
    with pytest.raises(ValueError, match="vanish on the boundary"):
        MoserTransport(p, q, half_width=L, grid_size=8, stream_function=lambda x: x[:, 0])
    with pytest.raises(ValueError, match="positive"):
        MoserTransport(lambda x: x[:, 0], q, half_width=L, grid_size=8)
    transport = MoserTransport(p, q, half_width=L, grid_size=8, n_steps=1)
    with pytest.raises(ValueError, match="defined on the square"):
        transport(torch.tensor([[2.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        transport(torch.zeros(3, dtype=torch.float64))
