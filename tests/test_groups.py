"""gflows.groups: names, elements, exact actions on pixel grids and on points, and clear errors."""

import math

import numpy as np
import pytest
import torch

from gflows import groups


def _expected_exact_rotations(n: int) -> int:
    """Multiples of 90 degrees among the rotations of C_n."""
    return 4 if n % 4 == 0 else 2 if n % 2 == 0 else 1


@pytest.mark.parametrize("name", groups.names())
def test_order_and_exact_elements(name):
    G = groups.get(name)
    if name in ("trivial", "C1"):
        assert G.order == 1 and len(G.exact_elements()) == 1 and G.inexact_elements() == []
        return
    n = int(name[1:])
    factor = 2 if name[0] == "D" else 1
    assert G.order == factor * n
    assert len(G.exact_elements()) == factor * _expected_exact_rotations(n)
    assert len(G.inexact_elements()) == G.order - len(G.exact_elements())
    assert G.elements()[0] == G.identity and G.describe(G.identity) == "identity"


@pytest.mark.parametrize("name", ["c4", " D8 ", "Trivial"])
def test_names_are_forgiving(name):
    assert groups.get(name).name == name.strip().upper().replace("TRIVIAL", "trivial")


@pytest.mark.parametrize("bad", ["C0", "C17", "D0", "D99", "SO3", "", "X4", "C4.5", 4, None])
def test_unknown_names_are_refused(bad):
    with pytest.raises(ValueError, match="trivial"):
        groups.get(bad)


@pytest.mark.parametrize("name", groups.names())
def test_matrices_form_an_orthogonal_representation(name):
    G = groups.get(name)
    for g in G.elements():
        a = G.matrix(g)
        np.testing.assert_allclose(a @ a.T, np.eye(2), atol=1e-12)
        for h in G.elements():
            np.testing.assert_allclose(G.matrix(g @ h), a @ G.matrix(h), atol=1e-12)


@pytest.mark.parametrize("name", ["C4", "D4", "C8", "D8", "D1", "C2", "D6", "C16"])
@pytest.mark.parametrize("size", [5, 6])
def test_act_image_matches_escnn_exactly(name, size):
    """Our rot90/flip action is bit-identical to escnn's own transform, on odd and even grids."""
    G = groups.get(name)
    x = torch.randn(2, 3, size, size)
    scalar, regular = G.scalar_fields(3), G.regular_fields(2)
    y = torch.randn(2, regular.size, size, size)
    for g in G.exact_elements():
        assert torch.equal(G.act_image(x, g), torch.as_tensor(scalar.transform(x, g)))
        assert torch.equal(G.act_image(y, g, regular), torch.as_tensor(regular.transform(y, g)))


@pytest.mark.parametrize("name", ["D4", "D8", "C4", "D2"])
def test_act_image_is_a_group_action(name):
    """g.(h.x) == (gh).x exactly, so rotations and flips compose as the group says."""
    G = groups.get(name)
    x = torch.randn(1, 2, 7, 7)
    exact = G.exact_elements()
    for g in exact:
        for h in exact:
            assert torch.equal(G.act_image(G.act_image(x, h), g), G.act_image(x, g @ h))
        assert torch.equal(G.act_image(G.act_image(x, g), ~g), x)


def test_four_quarter_turns_are_the_identity_and_flips_are_involutions():
    G = groups.get("D4")
    x = torch.randn(1, 1, 6, 6)
    quarter = next(g for g in G.elements() if G.describe(g) == "rotation by 90°")
    y = x
    for turn in range(4):
        assert torch.equal(y, x) == (turn == 0)
        y = G.act_image(y, quarter)
    assert torch.equal(y, x)
    assert torch.equal(G.act_image(x, quarter), torch.rot90(x, 1, dims=(-2, -1)))
    for g in G.elements():
        if G.describe(g).startswith("reflection"):
            assert torch.equal(G.act_image(G.act_image(x, g), g), x)
            assert not torch.equal(G.act_image(x, g), x)


@pytest.mark.parametrize("name", ["D4", "C4", "D8"])
def test_image_and_point_actions_agree(name):
    """A one-hot image at the pixel with coordinates p moves to the pixel at A_g p."""
    G = groups.get(name)
    size, centre = 7, 3
    for g in G.exact_elements():
        a = G.matrix(g)
        for i, j in [(0, 0), (1, 5), (3, 3), (6, 2)]:
            image = torch.zeros(1, 1, size, size)
            image[0, 0, i, j] = 1.0
            point = np.array([j - centre, centre - i])  # X to the right, Y up
            moved_x, moved_y = np.rint(a @ point).astype(int)
            moved = G.act_image(image, g)
            assert moved[0, 0, centre - moved_y, centre + moved_x] == 1.0 and moved.sum() == 1.0


def test_act_points_is_the_standard_representation(dtype):
    G = groups.get("C8")
    x = torch.randn(10, 2, dtype=dtype)
    eighth = G.elements()[1]
    assert G.describe(eighth) == "rotation by 45°"
    rotated = G.act_points(torch.tensor([[1.0, 0.0]], dtype=dtype), eighth)
    torch.testing.assert_close(rotated, torch.tensor([[2**-0.5, 2**-0.5]], dtype=dtype))
    for g in G.elements():
        torch.testing.assert_close(G.act_points(x, g).norm(dim=1), x.norm(dim=1))
    flips = groups.get("D1")
    mirror = flips.elements()[1]
    torch.testing.assert_close(flips.act_points(x, mirror), x * torch.tensor([-1.0, 1.0], dtype=dtype))


def test_interpolated_rotation_is_approximate_but_sensible():
    G = groups.get("C8")
    coords = torch.arange(15.0) - 7
    blob = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / 8).reshape(1, 1, 15, 15)
    eighth = G.elements()[1]
    assert not G.is_exact(eighth)
    rotated = G.act_image(blob.double(), eighth)
    assert rotated.dtype == torch.float64 and rotated.shape == blob.shape
    error = (rotated - blob).abs().max()
    assert 0 < error < 0.05  # a round blob barely changes, but interpolation is not exact


def test_bad_inputs_get_clear_errors():
    G = groups.get("D4")
    r = G.elements()[1]
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        G.act_image(torch.randn(3, 5, 5), r)
    with pytest.raises(ValueError, match="square"):
        G.act_image(torch.randn(1, 1, 4, 5), r)
    with pytest.raises(ValueError, match="H == W"):
        G.check_image_shape((1, 4, 5))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        G.check_image_shape((4, 5))
    with pytest.raises(ValueError, match="channels"):
        G.act_image(torch.randn(1, 3, 5, 5), r, G.regular_fields(1))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        G.act_points(torch.randn(4, 3), r)
    with pytest.raises(ValueError, match="not an element of D4"):
        G.act_image(torch.randn(1, 1, 5, 5), groups.get("C4").elements()[1])
    # a flip maps any rectangle onto itself, so the flip group accepts non-square images
    flips = groups.get("D1")
    flips.check_image_shape((1, 4, 5))
    flipped = flips.act_image(torch.arange(20.0).reshape(1, 1, 4, 5), flips.elements()[1])
    assert torch.equal(flipped, torch.arange(20.0).reshape(1, 1, 4, 5).flip(-1))


def test_describe_names_every_element_of_d4():
    G = groups.get("D4")
    assert [G.describe(g) for g in G.elements()] == [
        "identity", "rotation by 90°", "rotation by 180°", "rotation by 270°",
        "reflection (axis at 90°)", "reflection (axis at 135°)", "reflection (axis at 0°)",
        "reflection (axis at 45°)",
    ]


def test_actions_are_differentiable_and_keep_device(device):
    G = groups.get("D4")
    x = torch.randn(1, 1, 4, 4, device=device, requires_grad=True)
    y = G.act_image(x, G.elements()[5])
    y.pow(2).sum().backward()
    assert y.device == x.device and torch.allclose(x.grad, 2 * x.detach())


def test_escnn_uses_its_exact_svd():
    """gflows switches escnn from scikit-learn's randomized SVD (unseeded; breaks on scikit-learn
    >= 1.9) to scipy's exact SVD: a fresh dihedral kernel basis must build deterministically."""
    import escnn.group._numerical as numerical

    assert numerical.randomized_svd is None
    G = groups.get("D3")
    basis = lambda: numerical.null(np.asmatrix(np.kron(G.matrix(G.elements()[1]), np.eye(2)) - np.eye(4)), False)
    np.testing.assert_array_equal(basis(), basis())


def test_describe_keeps_half_degrees():
    names = [groups.get("D8").describe(g) for g in groups.get("D8").elements()]
    assert "reflection (axis at 22.5°)" in names and "reflection (axis at 112.5°)" in names
    assert groups.get("C16").describe(groups.get("C16").elements()[1]) == "rotation by 22.5°"


def test_reflection_axis_is_the_fixed_line():
    G = groups.get("D8")
    for g in G.elements():
        axis = G.reflection_axis(g)
        if axis is None:
            assert np.linalg.det(G.matrix(g)) > 0
            continue
        direction = np.array([math.cos(axis), math.sin(axis)])
        np.testing.assert_allclose(G.matrix(g) @ direction, direction, atol=1e-12)


def test_inexact_elements_are_described():
    assert groups.get("D4").inexact_elements() == []
    described = groups.get("C8").inexact_elements()
    assert len(described) == 4 and all("rotation" in text for text in described)
