"""``models.build``: like-for-like twins by construction, the multiscale G-Residual flow, and a test
log-likelihood that is the same number every time and for every exact element."""

import pytest
import torch

from gflows import checks, groups, models
from gflows.flows.logdet import Exact, MovingProbeSeries, PowerSeries
from gflows.flows.multiscale import OnFields
from gflows.flows.residual import logdet_estimator, residual_blocks
from gflows.flows.squeeze import PixelSqueeze
from gflows.nn import Hidden

pytestmark = pytest.mark.usefixtures("one_thread")
GROUPS = ("C2", "C4", "C8", "D1", "D2", "D4", "D8")
#: shapes every group can build each kind on (a coupling of C8 needs several channels: no squeeze)
SHAPES = {"residual": [(1, 8, 8), (2,)], "coupling": [(3, 8, 8), (2,)], "iaf": [(3, 8, 8), (2,)]}


@pytest.mark.parametrize("kind", models.KINDS)
def test_every_group_has_its_trivial_twins_parameter_count_within_ten_percent(kind):
    ratios = {}
    for shape in SHAPES[kind]:
        for width in (8, 32):
            for group in GROUPS:
                arguments = models.twin_arguments(kind, group, shape, depth=2, width=width)
                twin = models.parameter_count(models.build(kind, group="trivial", data_shape=shape, **arguments))
                model = models.parameter_count(models.build(kind, group=group, data_shape=shape, **arguments))
                ratios[(shape, width, group)] = model / twin
    outside = {key: round(ratio, 3) for key, ratio in ratios.items() if not 0.9 <= ratio <= 1.1}
    assert not outside, f"parameter counts off by more than 10% from the trivial twin: {outside}"


def test_the_default_arguments_build_the_twin_of_the_same_architecture():
    assert models.twin_arguments("residual", "C8", (1, 8, 8), width=8)["squeezes"] == 0   # no 2x2 squeeze for 45°
    assert models.twin_arguments("residual", "D4", (1, 8, 8), width=8)["squeezes"] == 2
    assert models.twin_arguments("coupling", "C8", (3, 8, 8))["squeeze"] is False
    matched = models.matched_hidden("coupling", "D4", (1, 8, 8), depth=2, width=16)
    assert isinstance(matched, Hidden) and matched.regular >= 1
    explicit = models.build("coupling", group="D4", data_shape=(1, 8, 8), depth=2, width=16, hidden=Hidden(2, 1))
    assert models.parameter_count(explicit) != models.parameter_count(
        models.build("coupling", group="D4", data_shape=(1, 8, 8), depth=2, width=16)), "hidden= skips the matching"


def test_matching_leaves_the_random_generators_alone():
    torch.manual_seed(0)
    first = models.build("iaf", group="C4", data_shape=(1, 8, 8), depth=2, width=12).state_dict()
    torch.manual_seed(0)
    second = models.build("iaf", group="C4", data_shape=(1, 8, 8), depth=2, width=12).state_dict()  # counts cached now
    assert all(torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())


# ------------------------------------------------------------------ the multiscale G-Residual flow
def _trained(group, shape, steps=2, **hparams):
    torch.manual_seed(0)
    model = models.build("residual", group=group, data_shape=shape, width=8, **{"depth": 1, **hparams}).double()
    x = 0.05 + 0.9 * torch.rand(6, *shape, dtype=torch.float64)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = -model.log_prob(x).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), x


@pytest.mark.parametrize("group, shape, hparams, squeezes", [
    ("C4", (1, 8, 8), {}, 2), ("D4", (2, 8, 8), {"factor_out": True}, 2), ("D4", (2, 6, 6), {}, 1),
    ("C4", (1, 7, 7), {}, 0), ("D4", (1, 8, 8), {"squeezes": 0}, 0), ("D1", (1, 4, 6), {}, 1),
    ("trivial", (1, 8, 8), {"factor_out": True}, 2),
])
def test_multiscale_flows_are_exactly_equivariant_invariant_and_invertible(group, shape, hparams, squeezes):
    model, x = _trained(group, shape, **hparams)
    G = model.group
    assert sum(isinstance(layer, PixelSqueeze) for layer in model.flow.layers) == squeezes
    if hparams.get("factor_out"):
        assert any(isinstance(layer, OnFields) for layer in model.flow.layers), "factor-out acts on some fields only"
    with torch.no_grad(), logdet_estimator(model, Exact()):
        checks.assert_equivariant(model, x, G)
        assert checks.invariance_error(model.log_prob, x, G) < 1e-10
        torch.testing.assert_close(model(x)[1], checks.exact_logdet(model, x), rtol=1e-8, atol=1e-8)
    assert checks.inverse_error(model, x) < 1e-10
    state = x
    for layer in model.flow.layers:   # Lip(g) < 1: the Jacobian of every branch has 2-norm below 1 where it is used
        branch = getattr(getattr(layer, "flow", layer), "g", None)
        if branch is not None:
            inputs = state[:, layer.channels] if isinstance(layer, OnFields) else state
            for sample in inputs[:2]:
                jacobian = torch.autograd.functional.jacobian(lambda v: branch(v[None])[0], sample)
                assert torch.linalg.matrix_norm(jacobian.reshape(sample.numel(), -1), ord=2) < 1
        with torch.no_grad(), logdet_estimator(model, Exact()):
            state = layer(state)[0]


def test_squeezes_the_group_or_the_size_do_not_allow_are_refused():
    with pytest.raises(ValueError, match="2x2 squeeze is not equivariant to C8"):
        models.build("residual", group="C8", data_shape=(1, 8, 8), squeezes=1, width=8)
    with pytest.raises(ValueError, match=r"allows 1 2x2 squeezes"):
        models.build("residual", group="C4", data_shape=(1, 6, 6), squeezes=2, width=8)
    assert models.build("residual", group="C8", data_shape=(1, 8, 8), depth=1, width=8)   # default: full resolution


def test_the_multiscale_branch_no_longer_ends_in_one_scalar_field():
    model = models.build("residual", group="D4", data_shape=(1, 8, 8), depth=1, width=8)
    block = next(residual_blocks(model))
    assert block.in_type.size == 4 and len(block.in_type) == 1   # a 2x2 block's four pixels, one D4 field
    full = next(residual_blocks(models.build("residual", group="D4", data_shape=(1, 8, 8), depth=1, width=8, squeezes=0)))
    assert full.in_type.size == 1


# ------------------------------------------------------------- the default evaluation log-likelihood
def test_evaluation_log_likelihood_is_deterministic_and_exactly_invariant():
    model, x = _trained("D4", (1, 8, 8))
    assert all(isinstance(block.eval_estimator, MovingProbeSeries) for block in residual_blocks(model))
    with torch.no_grad():
        first, again = model.log_prob(x), model.log_prob(x)
        assert torch.equal(first, again), "the same input gets the same number"
        assert checks.invariance_error(model.log_prob, x, model.group) < 1e-10
        with logdet_estimator(model, PowerSeries(20)):   # a fresh random probe each call: neither holds
            assert (model.log_prob(x) - model.log_prob(x)).abs().max() > 1e-6


def test_the_moving_probe_estimate_is_unbiased_over_inputs_up_to_the_truncation():
    """Over many inputs the fixed-probe estimate averages to the exact log-det (each input's probe is
    a standard normal vector moved by a permutation); 20 terms leave a truncation far below the noise."""
    model, _ = _trained("C4", (1, 4, 4), steps=0)
    x = 0.05 + 0.9 * torch.rand(400, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        estimate = model.log_prob(x)
        with logdet_estimator(model, Exact()):
            exact = model.log_prob(x)
    error = estimate - exact
    assert abs(float(error.mean())) < 3 * float(error.std()) / len(error) ** 0.5 + 1e-3
