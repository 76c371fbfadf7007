"""Equivariant building blocks: Lipschitz steerable convolutions and linear maps, LipSwish, projection.

Properties: equivariance to float precision (exact elements, odd and even sizes), the true operator
norm after power iteration is at most coeff, LipSwish is 1-Lipschitz and refuses fields on which a
pointwise map is not equivariant, the float64 projection leaves escnn's filters unchanged up to their
float32 sampling error and makes any filter equivariant.
"""

import io

import pytest
import torch

from gflows import checks, groups
from gflows.nn import (LipSwish, LipschitzConv, LipschitzLinear, hidden_fields, point_coordinate_fields, point_fields,
                       point_regular_fields, update_lipschitz)
from gflows.nn.exact import project_to_equivariant


def _operator_norm(layer, x):
    """Largest singular value of the (affine part of the) layer at input x, from its dense Jacobian."""
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.reshape(x.shape)).reshape(-1), x.reshape(-1))
    return torch.linalg.matrix_norm(jacobian, ord=2).item()


@pytest.mark.parametrize("group_name", ["C4", "D4", "C8", "D1"])
@pytest.mark.parametrize("size", [5, 6])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_lipschitz_conv_is_equivariant_on_odd_and_even_grids(group_name, size, kernel_size, dtype):
    G = groups.get(group_name)
    conv = LipschitzConv(G.scalar_fields(2), G.regular_fields(2), kernel_size).to(dtype)
    x = torch.randn(3, 2, size, size, dtype=dtype)
    conv(x)
    checks.assert_equivariant(conv, x, G, out_field_type=conv.out_type)
    back = LipschitzConv(G.regular_fields(2), G.scalar_fields(1), kernel_size).to(dtype)
    checks.assert_equivariant(back, conv(x), G, in_field_type=back.in_type)


@pytest.mark.parametrize("group_name", ["trivial", "C4", "D4"])
@pytest.mark.parametrize("coeff", [0.5, 0.98])
def test_operator_norm_after_power_iteration_is_at_most_coeff(group_name, coeff):
    G = groups.get(group_name)
    conv = LipschitzConv(G.scalar_fields(1), G.regular_fields(2), 3, coeff=coeff, bias=False).double()
    with torch.no_grad():
        conv.layer.weights.mul_(10)  # make sure the normalisation is active
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    conv(x)
    conv.eval()  # runs n_iterations_eval more iterations
    assert coeff - 1e-3 < _operator_norm(conv, x) <= coeff * (1 + 1e-3)


def test_small_weights_are_left_alone():
    G = groups.get("C4")
    conv = LipschitzConv(G.scalar_fields(1), G.scalar_fields(1), 3, coeff=0.9, bias=False).double()
    with torch.no_grad():
        conv.layer.weights.mul_(1e-3)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    weight, _ = conv.normalized_weight(x)
    torch.testing.assert_close(weight, conv.layer.expand_parameters()[0])


@pytest.mark.parametrize("group_name", ["trivial", "C4", "D4", "C8"])
def test_lipschitz_linear_on_points_is_equivariant_for_every_element_and_bounded(group_name, dtype):
    G = groups.get(group_name)
    up = LipschitzLinear(point_fields(G), point_regular_fields(G, 3), coeff=0.8, bias=False).to(dtype)
    with torch.no_grad():
        up.layer.weights.mul_(10)
    down = LipschitzLinear(point_regular_fields(G, 3), point_fields(G), coeff=0.8).to(dtype)
    x = torch.randn(16, 2, dtype=dtype)
    hidden = up(x)
    down(hidden)
    up.eval(), down.eval()
    hidden_action = lambda h, g: h @ torch.as_tensor(up.out_type.representation(g), dtype=dtype).T  # noqa: E731
    checks.assert_equivariant(up, x, G, out_action=hidden_action)
    checks.assert_equivariant(down, hidden, G, in_action=hidden_action)
    assert _operator_norm(up.double(), x[:1].double()) <= 0.8 * (1 + 1e-3)


@pytest.mark.parametrize("group_name", ["trivial", "C2", "D1", "D2"])
def test_coordinate_fields_act_on_points_like_the_group(group_name):
    G = groups.get(group_name)
    fields = point_coordinate_fields(G)
    assert len(fields) == 2 and fields.size == 2
    for g in G.elements():
        assert torch.equal(torch.as_tensor(fields.representation(g)), torch.as_tensor(G.matrix(g)).round())


@pytest.mark.parametrize("group_name", ["C3", "C4", "D4", "C8"])
def test_coordinate_fields_are_refused_where_rotations_mix_the_coordinates(group_name):
    with pytest.raises(ValueError, match="mixes the two coordinates"):
        point_coordinate_fields(groups.get(group_name))


def test_power_iteration_runs_only_when_the_weights_change():
    G = groups.get("C4")
    conv = LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 3, n_iterations_init=1).double()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    conv(x)
    u = conv.u.clone()
    conv(x)
    assert torch.equal(conv.u, u)  # same weights: same normalisation, calls are repeatable
    optimiser = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(x).pow(2).sum().backward()
    optimiser.step()
    conv(x)
    assert not torch.equal(conv.u, u)
    before = conv.u.clone()
    update_lipschitz(torch.nn.Sequential(conv), 5)
    assert not torch.equal(conv.u, before)


@pytest.mark.parametrize("fused", [False, True])
def test_every_optimiser_step_is_followed_by_power_iteration(fused):
    # torch's fused AdamW (the trainer's, gflows.train.loop.adamw) updates the weights without
    # bumping their version counters: the change must be seen all the same
    from gflows.train.loop import adamw
    G = groups.get("C4")
    conv = LipschitzConv(G.scalar_fields(1), G.regular_fields(2), 3, tolerance=0.0)
    x = torch.randn(2, 1, 6, 6)
    optimiser = adamw(conv.parameters(), lr=1e-2) if fused else torch.optim.AdamW(conv.parameters(), lr=1e-2, foreach=False)
    assert bool(optimiser.defaults["fused"]) == fused
    for _ in range(3):
        conv(x).pow(2).sum().backward()
        optimiser.step()
        optimiser.zero_grad()
        assert conv.weights_changed
        conv(x)
        assert conv.last_iterations == conv.n_iterations_train and not conv.weights_changed


def test_state_dict_round_trip_keeps_power_iteration_vectors():
    G = groups.get("D4")
    conv = LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 3).double()
    x = torch.randn(2, 1, 7, 7, dtype=torch.float64)
    conv.eval()
    y = conv(x)
    buffer = io.BytesIO()
    torch.save(conv.state_dict(), buffer)
    buffer.seek(0)
    fresh = LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 3).double().eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.v.shape == (1, 1, 7, 7)
    torch.testing.assert_close(fresh(x), y)


def test_state_dict_saved_after_an_optimiser_step_iterates_like_the_original():
    """The saved state says the weights changed since the last power iteration, so the loaded copy
    runs the same iterations at its next call (exact resume of training)."""
    G = groups.get("C4")
    conv = LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 3).double()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    conv(x).pow(2).sum().backward()
    torch.optim.SGD(conv.parameters(), lr=0.5).step()
    assert conv.weights_changed
    buffer = io.BytesIO()
    torch.save(conv.state_dict(), buffer)
    buffer.seek(0)
    fresh = LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 3).double()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.weights_changed
    assert torch.equal(fresh(x), conv(x)) and torch.equal(fresh.u, conv.u)
    assert not fresh.weights_changed


def test_bad_inputs_raise_clear_errors():
    G = groups.get("C4")
    with pytest.raises(ValueError, match="odd"):
        LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 2)
    conv = LipschitzConv(G.scalar_fields(2), G.regular_fields(1), 3)
    with pytest.raises(ValueError, match="with C = 2"):
        conv(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        conv(torch.randn(2, 5))
    with pytest.raises(ValueError, match="not equivariant"):
        LipSwish(point_fields(G))
    with pytest.raises(ValueError, match="positive"):
        hidden_fields(G, 0)


@pytest.mark.parametrize("beta", [-3.0, 0.5, 4.0])
def test_lipswish_is_one_lipschitz_and_commutes_with_permutations(beta):
    G = groups.get("D4")
    activation = LipSwish(G.regular_fields(2), beta=beta).double()
    t = torch.linspace(-20, 20, 20001, dtype=torch.float64).reshape(1, -1, 1).expand(1, -1, 16).clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(activation(t.transpose(1, 2)).sum(), t)
    assert slope.abs().max() <= 1.0
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    checks.assert_equivariant(activation, x, G, in_field_type=activation.in_type, out_field_type=activation.out_type)


@pytest.mark.parametrize("group_name", ["C4", "D4", "C8", "D8"])
def test_projection_keeps_escnn_filters_and_makes_any_filter_equivariant(group_name):
    G = groups.get(group_name)
    conv = LipschitzConv(G.regular_fields(1), G.regular_fields(2), 3).double()
    weight, _ = conv.layer.expand_parameters()
    projected = project_to_equivariant(weight, conv.in_type, conv.out_type)
    assert (projected - weight).abs().max() < 1e-6  # escnn's float32 basis, nothing more
    random = project_to_equivariant(torch.randn_like(weight), conv.in_type, conv.out_type)
    torch.testing.assert_close(project_to_equivariant(random, conv.in_type, conv.out_type), random)
    x = torch.randn(2, conv.in_type.size, 6, 6, dtype=torch.float64)
    convolve = lambda v: torch.nn.functional.conv2d(v, random, padding=1)  # noqa: E731
    checks.assert_equivariant(convolve, x, G, in_field_type=conv.in_type, out_field_type=conv.out_type)
    with pytest.raises(ValueError, match="weight"):
        project_to_equivariant(weight[:, :1], conv.in_type, conv.out_type)


def test_width_rule_matches_parameter_counts_across_groups():
    counts = {}
    for name in ("trivial", "C4", "D4", "C8"):
        G = groups.get(name)
        fields = hidden_fields(G, 32)
        conv = LipschitzConv(G.regular_fields(fields), G.regular_fields(fields), 3)
        counts[name] = sum(p.numel() for p in conv.parameters())
    for name, count in counts.items():
        assert 0.5 < count / counts["trivial"] < 2, counts


def test_layers_do_not_share_escnn_buffers_between_models():
    """escnn caches basis-expansion modules; converting one model must not convert another."""
    G = groups.get("D4")
    first = LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 3)
    second = LipschitzConv(G.scalar_fields(1), G.regular_fields(1), 3)
    linear_first = LipschitzLinear(point_fields(G), point_regular_fields(G, 1))
    linear_second = LipschitzLinear(point_fields(G), point_regular_fields(G, 1))
    first.double(), linear_first.double()
    assert second(torch.randn(1, 1, 5, 5)).dtype == torch.float32
    assert linear_second(torch.randn(2, 2)).dtype == torch.float32


def test_lipswish_hand_written_derivatives_match_finite_differences_to_second_order():
    from gflows.nn.activations import _LipSwish
    torch.manual_seed(0)
    x = (3 * torch.randn(3, 4, dtype=torch.float64)).requires_grad_()
    beta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_LipSwish.apply, (x, beta))
    assert torch.autograd.gradgradcheck(_LipSwish.apply, (x, beta))
    torch.testing.assert_close(_LipSwish.apply(x, beta), x * torch.sigmoid(beta * x) / 1.1)


def test_one_by_one_power_iteration_runs_on_one_pixel_and_bounds_the_norm():
    G = groups.get("C4")
    conv = LipschitzConv(G.regular_fields(2), G.regular_fields(2), 1, coeff=0.9, bias=False).double()
    with torch.no_grad():
        conv.layer.weights.mul_(10)
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    conv(x)
    conv.eval()
    assert conv.v.shape == (1, 8, 1, 1)
    assert 0.9 - 1e-3 < _operator_norm(conv, x) <= 0.9 * (1 + 1e-3)


def test_training_power_iteration_stops_when_its_two_estimates_agree():
    G = groups.get("C4")
    conv = LipschitzConv(G.scalar_fields(1), G.regular_fields(2), 3, coeff=0.9, n_iterations_train=5).double()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    conv(x)                                            # 200 iterations from fresh vectors: converged
    with torch.no_grad():
        conv.layer.weights.mul_(1 + 1e-6)              # a tiny step: one iteration suffices
    conv(x)
    assert conv.last_iterations == 1
    conv.tolerance = 0.0
    with torch.no_grad():
        conv.layer.weights.mul_(1 + 1e-6)
    conv(x)
    assert conv.last_iterations == 5


def test_expanded_filter_is_kept_in_evaluation_and_follows_every_weight_change():
    from gflows.nn.equivariant import EquivariantConv
    G = groups.get("C4")
    conv = EquivariantConv(G.scalar_fields(1), G.regular_fields(2))
    x = torch.randn(2, 1, 6, 6)
    conv.eval()
    with torch.no_grad():
        first = conv.weight_and_bias()[0]
        assert conv.weight_and_bias()[0] is first                      # kept: the same tensor
        conv.layer.weights.mul_(2.0)                                   # an in-place change (EMA, optimiser)
        doubled = conv.weight_and_bias()[0]
        assert doubled is not first and torch.allclose(doubled, 2 * first)
        other = EquivariantConv(G.scalar_fields(1), G.regular_fields(2))
        conv.load_state_dict(other.state_dict())                      # new weights copied in place
        assert torch.equal(conv.weight_and_bias()[0], other.expand()[0])
        assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, *other.expand(), padding=1))
        from gflows.train.loop import adamw
        optimiser = adamw(conv.parameters(), lr=0.1)                   # fused: leaves _version alone
        conv.layer.weights.grad = torch.ones_like(conv.layer.weights)
        kept = conv.weight_and_bias()[0]
        optimiser.step()
        assert not torch.equal(conv.weight_and_bias()[0], kept)
        assert torch.equal(conv.weight_and_bias()[0], conv.expand()[0])
    conv.double()                                                      # replaced tensors
    with torch.no_grad():
        assert conv.weight_and_bias()[0].dtype == torch.float64
    assert conv.weight_and_bias()[0].requires_grad                     # with gradients: afresh, in the graph
    conv.train()
    with torch.no_grad():
        assert conv.weight_and_bias()[0] is not conv.weight_and_bias()[0]


@pytest.mark.parametrize("layer_kind", ["conv", "masked conv", "linear"])
def test_trivial_group_expansion_is_escnns_filter_from_one_shared_basis(layer_kind, dtype):
    from gflows._escnn import enn
    from gflows.nn.equivariant import EquivariantConv, EquivariantLinear
    from gflows.nn.exact import expanded_weight
    from gflows.nn.masked import MaskedFieldConv
    G = groups.get("trivial")
    if layer_kind == "linear":
        in_type = point_coordinate_fields(G)
        layer = EquivariantLinear(in_type, enn.FieldType(in_type.gspace, [in_type.gspace.trivial_repr] * 5))
    elif layer_kind == "conv":
        layer = EquivariantConv(G.scalar_fields(3), G.scalar_fields(5), 5)
    else:
        layer = MaskedFieldConv(G.scalar_fields(3), G.scalar_fields(5), [0, 1, 2], [0, 1, 2, 0, 1], strict=True)
    assert layer.shared_basis is not None and "shared_basis" not in layer.state_dict()   # checkpoints unchanged
    layer = layer.to(dtype)
    with torch.no_grad():
        layer.layer.weights.normal_()
        layer.layer.bias.normal_()
    weight, bias = layer.expand()
    escnn_weight, escnn_bias = expanded_weight(layer.layer)
    if layer_kind == "masked conv":
        escnn_weight = escnn_weight * layer.mask.to(dtype)[:, :, None, None]
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5                # round-off of a K-term sum
    assert torch.allclose(weight, escnn_weight, rtol=0, atol=tolerance) and torch.equal(bias, escnn_bias)
    probe = torch.randn(weight.shape, dtype=dtype)
    grads = [torch.autograd.grad((w * probe).sum(), layer.layer.weights)[0] for w in (weight, escnn_weight)]
    assert torch.allclose(*grads, rtol=0, atol=10 * tolerance)


@pytest.mark.parametrize("kind", ["residual", "coupling"])
@pytest.mark.parametrize("group_name", ["trivial", "D4"])
def test_parameters_of_lists_what_module_parameters_lists(kind, group_name):
    from gflows import models
    from gflows.nn.parameters import parameters_of
    model = models.build(kind, group=group_name, data_shape=(1, 8, 8), depth=2, width=4)
    assert [id(p) for p in parameters_of(model)] == [id(p) for p in model.parameters()]
    shared = torch.nn.Linear(2, 2)
    tree = torch.nn.Sequential(shared, torch.nn.Sequential(shared, torch.nn.Linear(2, 1)))
    tree[1][1].weight = shared.weight    # a shared module and a shared parameter: listed once each
    assert [id(p) for p in parameters_of(tree)] == [id(p) for p in tree.parameters()]
    assert len(parameters_of(tree)) == 3
