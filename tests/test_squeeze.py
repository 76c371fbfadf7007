"""The 2x2 squeeze: the corner representation it induces, exact equivariance, the irreducible basis."""

import numpy as np
import pytest
import torch

from gflows import checks, groups
from gflows.flows.squeeze import (
    Squeeze, Unsqueeze, corner_fields, corner_permutation, corner_representation, irreps_of, space_to_depth,
)

SQUEEZABLE = ["trivial", "C2", "C4", "D1", "D2", "D4"]


@pytest.mark.parametrize("name", SQUEEZABLE)
def test_corner_representation_is_the_permutation_of_the_corners(name):
    G = groups.get(name)
    rep = corner_representation(G)
    for g in G.elements():
        P = corner_permutation(G.matrix(g))
        assert np.array_equal(P.sum(0), np.ones(4)) and np.array_equal(P.sum(1), np.ones(4))
        np.testing.assert_allclose(rep(g), P, atol=1e-12)
        for h in G.elements():
            np.testing.assert_allclose(corner_permutation(G.matrix(g @ h)), P @ corner_permutation(G.matrix(h)))


def test_corner_representation_of_c4_is_regular_and_of_d4_a_quotient():
    C4, D4 = groups.get("C4"), groups.get("D4")
    r90 = C4.elements()[1]
    P = corner_permutation(C4.matrix(r90))
    assert np.array_equal(np.linalg.matrix_power(P, 4), np.eye(4)) and not np.any(np.diag(P))  # a 4-cycle
    assert sorted(irrep.size for irrep in irreps_of(corner_representation(C4))) == [1, 1, 2]
    # in D4 each corner is fixed by exactly one non-identity element: the diagonal reflection through it
    fixing = [sum(corner_permutation(D4.matrix(g))[k, k] for g in D4.elements()) for k in range(4)]
    assert fixing == [2, 2, 2, 2]
    assert [irrep.size for irrep in irreps_of(corner_representation(D4))] == [1, 2, 1]


@pytest.mark.parametrize("name", SQUEEZABLE)
@pytest.mark.parametrize("size", [2, 4, 6])
def test_squeeze_commutes_with_the_group_exactly(name, size):
    G = groups.get(name)
    x = torch.randn(2, 3, size, size)
    fields = corner_fields(G, 3)
    for g in G.elements():
        assert torch.equal(space_to_depth(G.act_image(x, g)), G.act_image(space_to_depth(x), g, fields))


@pytest.mark.parametrize("name", ["C4", "D4", "D2"])
def test_squeeze_into_irreducible_fields_is_an_equivariant_orthogonal_flow(name, dtype):
    G = groups.get(name)
    squeeze = Squeeze(G, 2).to(dtype)
    x = torch.randn(3, 2, 6, 6, dtype=dtype)
    checks.assert_equivariant(squeeze, x, G, out_field_type=squeeze.out_type)
    z, logdet = squeeze(x)
    assert z.shape == (3, 8, 3, 3) and torch.equal(logdet, torch.zeros(3, dtype=dtype))
    assert checks.inverse_error(squeeze, x) < (1e-12 if dtype == torch.float64 else 1e-6)
    torch.testing.assert_close(z.pow(2).sum(), x.pow(2).sum())  # orthogonal
    unsqueeze = Unsqueeze(G, 2).to(dtype)
    torch.testing.assert_close(unsqueeze(z)[0], x)
    torch.testing.assert_close(unsqueeze.inverse(x), z)


def test_squeeze_refuses_odd_sizes_and_groups_beyond_the_square():
    with pytest.raises(ValueError, match="even H and W"):
        Squeeze(groups.get("C4"), 1)(torch.randn(1, 1, 5, 5))
    for name in ("C8", "D8", "C3"):
        with pytest.raises(ValueError, match="does not map a 2x2 block onto itself"):
            corner_representation(groups.get(name))
