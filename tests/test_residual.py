"""G-Residual flows: log-det estimators against brute force, unbiasedness, the fixed-point inverse,
equivariance and invariance of blocks and models, and models.build.
"""

import math

import pytest
import torch

from gflows import checks, groups, models
from gflows.flows import InverseDidNotConverge, ResidualBlock
from gflows.flows.logdet import Exact, PowerSeries, RussianRoulette
from gflows.flows.residual import logdet_estimator
from gflows.models.residual import image_branch, point_branch


def _branch(group="C4", channels=1, fields=2, coeff=0.9, size=5, dtype=torch.float64):
    """An image residual branch whose power iteration has run at ``size`` (eval mode)."""
    g = image_branch(groups.get(group), channels, fields, coeff=coeff).to(dtype)
    g(torch.zeros(1, channels, size, size, dtype=dtype))
    return g.eval()


# ----------------------------------------------------------------------------- estimators
def test_exact_estimator_matches_the_bruteforce_jacobian_of_the_block():
    g = _branch()
    block = ResidualBlock(g, eval_estimator=Exact()).eval()
    x = torch.randn(3, 1, 5, 5, dtype=torch.float64)
    _, logdet = block(x)
    torch.testing.assert_close(logdet, checks.exact_logdet(block, x), rtol=1e-10, atol=1e-10)


def _contraction(dim=6):
    """A linear residual branch with eigenvalues in [-0.9, -0.5]: its log-det series converges slowly."""
    g = torch.nn.Linear(dim, dim, bias=False).double()
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
    with torch.no_grad():
        g.weight.copy_(rotation @ torch.diag(torch.linspace(-0.9, -0.5, dim, dtype=torch.float64)) @ rotation.T)
    return g


def test_power_series_converges_to_the_exact_value_in_expectation():
    g = _contraction()
    x = torch.zeros(20000, 6, dtype=torch.float64)
    exact = torch.linalg.slogdet(torch.eye(6, dtype=torch.float64) + g.weight).logabsdet.item()
    _, series = PowerSeries(n_terms=200)(g, x)
    standard_error = series.std() / math.sqrt(len(series))
    assert abs(series.mean() - exact) < 3 * standard_error


def test_russian_roulette_is_unbiased():
    """Mean of many independent estimates within 3 standard errors of the brute-force log-det."""
    g = _contraction()
    x = torch.zeros(1, 6, dtype=torch.float64)
    _, exact = Exact()(g, x)
    estimator = RussianRoulette(n_exact_terms=1, p=0.5)
    draws = torch.stack([estimator(g, x.expand(8, 6))[1].detach().mean() for _ in range(3000)])
    standard_error = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - exact[0]) < 3 * standard_error
    # the test has power: stopping after the exact terms would be biased by many standard errors
    A = g.weight.detach()
    truncation_bias = exact[0] - torch.trace(A)
    assert abs(truncation_bias) > 6 * standard_error


def test_neumann_gradient_is_an_unbiased_estimate_of_the_exact_gradient():
    g = _branch(coeff=0.8)
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    parameters = [p for p in g.parameters() if p.requires_grad]

    def gradient(estimator, batch):
        _, logdet = estimator(g, x.expand(batch, 1, 5, 5))
        grads = torch.autograd.grad(logdet.mean(), parameters, allow_unused=True)  # biases do not enter J
        return torch.cat([(torch.zeros_like(p) if t is None else t).flatten() for p, t in zip(parameters, grads)])

    exact = gradient(Exact(), 1)
    draws = torch.stack([gradient(RussianRoulette(memory_efficient=False), 64) for _ in range(200)])
    standard_error = draws.std(dim=0) / math.sqrt(len(draws))
    z_scores = (draws.mean(dim=0) - exact) / (standard_error + 1e-12)
    assert z_scores.abs().max() < 5, z_scores.abs().max()  # many components: allow 5 sigma


def test_memory_efficient_backward_gives_the_same_gradients():
    g = _branch()
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    probe = torch.randn_like(x)
    gradients = []
    for memory_efficient in (False, True):
        torch.manual_seed(3)
        gx, logdet = RussianRoulette(memory_efficient=memory_efficient)(g, x, probe=probe)
        loss = (gx.pow(2).sum() - logdet.sum()) / 4
        gradients.append(torch.autograd.grad(loss, [x, *g.parameters()]))
    for plain, efficient in zip(*gradients):
        torch.testing.assert_close(efficient, plain, rtol=1e-10, atol=1e-12)
    torch.manual_seed(3)
    _, logdet = RussianRoulette()(g, x, probe=probe)
    with pytest.raises(RuntimeError, match="weights every sample"):
        (logdet * torch.arange(4.0, dtype=torch.float64)).sum().backward()


def test_stochastic_estimate_is_invariant_when_the_probe_moves_with_the_input():
    G = groups.get("D4")
    g = _branch("D4")
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    probe = torch.randn_like(x)
    torch.manual_seed(7)
    _, reference = RussianRoulette()(g, x, probe=probe)
    for element in G.exact_elements():
        torch.manual_seed(7)
        _, moved = RussianRoulette()(g, G.act_image(x, element), probe=G.act_image(probe, element))
        torch.testing.assert_close(moved, reference, rtol=1e-10, atol=1e-10)


def test_estimators_work_under_no_grad_and_return_detached_values():
    g = _branch()
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        for estimator in (Exact(), PowerSeries(), RussianRoulette()):
            gx, logdet = estimator(g, x)
            assert not gx.requires_grad and not logdet.requires_grad and logdet.shape == (2,)
    with pytest.raises(ValueError, match="max_dim"):
        Exact(max_dim=10)(g, x)
    with pytest.raises(ValueError, match="probe"):
        PowerSeries()(g, x, probe=torch.randn(1, 1, 5, 5))


# ----------------------------------------------------------------------------- inverse
def test_fixed_point_inverse_converges_geometrically():
    block = ResidualBlock(_branch(coeff=0.9)).eval()
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    z, _ = block(x)
    x_back, changes = block.inverse_with_history(z)
    assert (x_back - x).abs().max() < 1e-11
    assert all(later <= earlier for earlier, later in zip(changes, changes[1:]))


def test_inverse_that_does_not_converge_raises():
    expanding = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        expanding.weight.copy_(3 * torch.eye(2))
    block = ResidualBlock(expanding, eval_estimator=Exact()).eval()
    with pytest.raises(InverseDidNotConverge, match="did not converge in 50 iterations") as failure:
        ResidualBlock(expanding, max_iterations=50).inverse(torch.ones(1, 2))
    assert failure.value.iterations == 50 and failure.value.residual > 0
    assert block(torch.ones(1, 2))[0].shape == (1, 2)


# ----------------------------------------------------------------------------- models
MODEL_CASES = [("C4", (1, 8, 8)), ("D4", (1, 7, 7)), ("C8", (1, 6, 6)), ("D4", (3, 8, 8)), ("D4", (2,)), ("C8", (2,)), ("trivial", (1, 6, 5))]


def _trained_model(group, data_shape, dtype, steps=3):
    model = models.build("residual", group=group, data_shape=data_shape, depth=2, width=8).to(dtype)
    x = (torch.rand if len(data_shape) == 3 else torch.randn)(8, *data_shape, dtype=dtype)
    if len(data_shape) == 3:
        x = 0.05 + 0.9 * x
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):  # equivariance must survive training: power iteration, actnorm init
        loss = -model.log_prob(x).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), x


@pytest.mark.parametrize("group,data_shape", MODEL_CASES)
def test_model_is_equivariant_invariant_and_invertible_after_training(group, data_shape, dtype):
    model, x = _trained_model(group, data_shape, dtype)
    G = model.group
    with logdet_estimator(model, Exact()):
        checks.assert_equivariant(model, x, G)
        invariance = checks.invariance_error(model.log_prob, x, G)
        assert invariance < (1e-9 if dtype == torch.float64 else 1e-4)
        torch.testing.assert_close(model(x)[1], checks.exact_logdet(model, x), rtol=1e-6, atol=1e-6)
    assert checks.inverse_error(model, x) < (1e-10 if dtype == torch.float64 else 1e-4)
    sample = model.sample(3)
    assert sample.shape == (3, *data_shape) and torch.isfinite(sample).all()


def test_every_block_and_the_model_are_equivariant_in_float32():
    for group in ("C4", "D4", "C8"):
        model, x = _trained_model(group, (1, 8, 8), torch.float32, steps=1)
        G = model.group
        with logdet_estimator(model, Exact()):
            checks.assert_equivariant(model, x, G)  # relative tolerance 1e-5 in float32
        h = model.flow[0](x)[0]  # after the logit
        state = G.scalar_fields(1)   # how the state between layers transforms: it changes at every squeeze
        for layer in model.flow.layers[1:]:
            out_state = getattr(layer, "out_type", state)
            with logdet_estimator(layer, Exact()):
                checks.assert_equivariant(layer, h, G, in_field_type=state, out_field_type=out_state)
            h, state = layer(h)[0], out_state


def test_log_prob_is_invariant_on_28x28_images():
    """Exact log-dets on 784 dimensions are costly: one block, and the two generators of D4 (a
    function invariant under generators is invariant under the group they generate)."""
    model = models.build("residual", group="D4", data_shape=(1, 28, 28), depth=1, width=4).double()
    x = 0.05 + 0.9 * torch.rand(4, 1, 28, 28, dtype=torch.float64)
    model(x)
    model.eval()
    G = model.group
    rotation, reflection = G.elements()[1], G.elements()[4]
    with logdet_estimator(model, Exact()):
        error = checks.invariance_error(model.log_prob, x[:1], G, elements=[rotation, reflection])
    assert error < 1e-4


def test_point_branch_is_equivariant_for_every_element():
    G = groups.get("D8")
    g = point_branch(G, 3).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    g(x)
    checks.assert_equivariant(g.eval(), x, G)


def test_build_errors():
    with pytest.raises(ValueError, match="unknown model kind"):
        models.build("glow", group="C4", data_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="H == W"):
        models.build("residual", group="C4", data_shape=(1, 8, 6))
    with pytest.raises(ValueError, match=r"\(C, H, W\) for images or \(2,\)"):
        models.build("residual", group="C4", data_shape=(3,))
    with pytest.raises(ValueError, match="depth must be a positive"):
        models.build("residual", group="C4", data_shape=(1, 8, 8), depth=0)
    with pytest.raises(ValueError, match="unknown group|allowed|Unknown"):
        models.build("residual", group="C99", data_shape=(1, 8, 8))
    model = models.build("residual", group="C4", data_shape=(1, 8, 8), depth=1, width=8)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        model.log_prob(torch.rand(2, 1, 9, 9))


def test_the_probe_does_not_depend_on_the_memory_layout_of_the_input():
    """The same numbers in another memory layout (a rotated batch's strides are permuted) get the same
    probe, hence the same estimate: ``randn_like`` would fill the permuted strides in another order."""
    block = ResidualBlock(image_branch(groups.get("C4"), 1, 2, coeff=0.7), eval_estimator=PowerSeries(4)).double().eval()
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    permuted = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert torch.equal(permuted, x) and permuted.stride() != x.stride()
    estimates = []
    for batch in (x, permuted):
        torch.manual_seed(3)
        estimates.append(block(batch)[1])
    torch.testing.assert_close(estimates[0], estimates[1], rtol=0, atol=1e-12)


def test_neumann_series_with_the_reused_last_product_equals_the_k_plus_one_product_form():
    """The K-th term taken from the surrogate's product gives the value and gradient of the plain form."""
    from gflows import models
    from gflows.flows.logdet import series_logdet
    torch.manual_seed(0)
    model = models.build("residual", group="D4", data_shape=(1, 8, 8), depth=1, width=8).double()
    block = next(m for m in model.modules() if isinstance(m, ResidualBlock))
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    probe, weights = torch.randn_like(x), [1.0, 1.0, 2.0, 4.0]
    gx = block.g(x)
    reused = series_logdet(gx, x, probe, weights, neumann_gradient=True, create_graph=True)
    plain = series_logdet(gx, x, probe, weights, neumann_gradient=False, create_graph=False)
    torch.testing.assert_close(reused.detach(), plain)
    psi, w = torch.zeros_like(probe), probe          # the K + 1 product surrogate, written out
    for k, weight in enumerate(weights, start=1):
        psi = psi + (-1) ** (k - 1) * weight * w
        w = torch.autograd.grad(gx, x, w, retain_graph=True)[0]
    surrogate = (torch.autograd.grad(gx, x, psi, retain_graph=True, create_graph=True)[0] * probe).sum((1, 2, 3))
    inputs = [x] + [p for p in block.g.parameters() if p.requires_grad]
    expected = torch.autograd.grad(surrogate.sum(), inputs, retain_graph=True, allow_unused=True)
    got = torch.autograd.grad(reused.sum(), inputs, allow_unused=True)
    for a, b in zip(got, expected):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
