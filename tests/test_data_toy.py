"""Toy densities of the plane: normalised, sampled from the density they claim, exactly invariant under
the group they declare (and not under others), and strict about groups and inputs."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from gflows import groups
from gflows.data import toy

DENSITIES = {
    "ring": toy.get("ring", modes=8),
    "ring5": toy.get("ring", modes=5, radius=1.5, sigma=0.3),
    "pinwheel": toy.get("pinwheel", blades=5),
    "checkerboard": toy.get("checkerboard", cells=5),
    "rings": toy.get("rings"),
}


def _grid(density, per_side):
    """Midpoints of a per_side x per_side grid of [-extent, extent]^2, (per_side^2, 2), and the cell area."""
    extent = density.extent
    ticks = (torch.arange(per_side, dtype=torch.float64) + 0.5) * (2 * extent / per_side) - extent
    points = torch.cartesian_prod(ticks, ticks)
    return points, (2 * extent / per_side) ** 2


@pytest.mark.parametrize("name", DENSITIES)
def test_density_integrates_to_one(name):
    density = DENSITIES[name]
    points, area = _grid(density, 1000)  # 1000 divides the checkerboard's cells: its grid is cell-aligned
    total = float(density.log_prob(points).exp().sum() * area)
    assert abs(total - 1) < 2e-3, f"{name}: integral {total}"


def _chi_square_p_value(samples, density, bins=12, fine=30):
    """p-value of Pearson's chi-square test of the samples' bin counts against the bins' probabilities,
    integrated from the log-density with a midpoint rule (fine x fine points per bin)."""
    points, area = _grid(density, bins * fine)
    mass = density.log_prob(points).exp() * area                       # grid rows = x index, columns = y index
    probabilities = mass.reshape(bins, fine, bins, fine).sum(dim=(1, 3)).numpy()
    edges = np.linspace(-density.extent, density.extent, bins + 1)
    counts, _, _ = np.histogram2d(samples[:, 0].numpy(), samples[:, 1].numpy(), bins=[edges, edges])
    expected = probabilities * len(samples)
    used = expected >= 5
    statistic = ((counts[used] - expected[used]) ** 2 / expected[used]).sum()
    statistic += (counts[~used].sum() - expected[~used].sum()) ** 2 / max(expected[~used].sum(), 1e-12)
    return stats.chi2.sf(statistic, used.sum())


@pytest.mark.parametrize("name", DENSITIES)
def test_samples_follow_the_log_density(name):
    density = DENSITIES[name]
    samples = density.sample(20_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert samples.shape == (20_000, 2) and samples.dtype == torch.float64
    assert torch.isfinite(density.log_prob(samples)).all()
    assert _chi_square_p_value(samples, density) > 1e-3


def test_chi_square_test_has_power():
    """Samples of the mirror-image pinwheel are rejected against the pinwheel's density."""
    pinwheel, mirrored = toy.get("pinwheel", twist=0.9), toy.get("pinwheel", twist=-0.9)
    samples = mirrored.sample(20_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _chi_square_p_value(samples, pinwheel) < 1e-6


@pytest.mark.parametrize("name", DENSITIES)
def test_log_density_is_invariant_under_the_declared_group(name):
    density = DENSITIES[name]
    x = density.sample(500, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    G = density.symmetry_group() or groups.get("D16")  # O(2): try a rich finite subgroup
    reference = density.log_prob(x)
    for g in G.elements():
        assert torch.allclose(density.log_prob(G.act_points(x, g)), reference, atol=1e-10, rtol=0), G.describe(g)


@pytest.mark.parametrize("name, group, element", [
    ("ring", "C16", 1),           # 22.5 degrees is not a symmetry of 8 modes
    ("pinwheel", "D5", 5),        # the swirl breaks every reflection
    ("checkerboard", "C8", 1),    # nor is 45 degrees of a square board
])
def test_a_non_symmetry_changes_the_log_density(name, group, element):
    density, G = DENSITIES[name], groups.get(group)
    x = density.sample(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    moved = density.log_prob(G.act_points(x, G.elements()[element]))
    assert (moved - density.log_prob(x)).abs().max() > 1.0
    assert not density.has_symmetry(G)


@pytest.mark.parametrize("name, accepted, refused", [
    ("ring", ["trivial", "C2", "C4", "C8", "D1", "D2", "D4", "D8"], ["C3", "C16", "D16", "D3"]),
    ("ring5", ["trivial", "C5", "D1", "D5"], ["C2", "C4", "D2"]),
    ("pinwheel", ["trivial", "C5"], ["D1", "D5", "C4"]),
    ("checkerboard", ["trivial", "C2", "C4", "D1", "D2", "D4"], ["C8", "D8", "C3"]),
    ("rings", ["trivial", "C7", "D16", "C16"], []),
])
def test_check_group_accepts_exactly_the_subgroups(name, accepted, refused):
    density = DENSITIES[name]
    for group in accepted:
        density.check_group(groups.get(group))
    for group in refused:
        with pytest.raises(ValueError, match=f"{density.symmetry}-symmetric; {group} is not"):
            density.check_group(groups.get(group))


def test_bad_inputs_are_refused_with_reasons():
    with pytest.raises(ValueError, match="must be odd"):
        toy.get("checkerboard", cells=4)
    with pytest.raises(ValueError, match="unknown toy density 'moons'"):
        toy.get("moons")
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        DENSITIES["ring"].log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="twist"):
        toy.get("pinwheel", twist=0.0)
    with pytest.raises(ValueError, match="n must be"):
        DENSITIES["ring"].sample(-1)


def test_checkerboard_is_zero_on_light_cells():
    board = DENSITIES["checkerboard"]
    light_centre = torch.tensor([[board.cell, 0.0]], dtype=torch.float64)  # the cell right of the (dark) centre
    dark_centre = torch.zeros(1, 2, dtype=torch.float64)
    assert board.log_prob(light_centre).item() == -math.inf
    assert board.log_prob(dark_centre).item() == pytest.approx(-math.log(13 * board.cell ** 2))
