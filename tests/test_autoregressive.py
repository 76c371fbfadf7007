"""G-IAF: field masks keep equivariance and make the Jacobian block-triangular over fields; both
directions (one-pass and sequential) agree; the models are equivariant and exact."""

import pytest
import torch

from gflows import checks, groups, models
from model_contract import train_briefly_then_check
from gflows.flows.autoregressive import AutoregressiveAffine
from gflows.flows.squeeze import irrep_fields
from gflows.nn import point_coordinate_fields, point_regular_fields
from gflows.nn.conditioners import MaskedConditioner
from gflows.nn.masked import MaskedFieldConv, MaskedFieldLinear, field_mask


def _perturbed(module):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    return module


def test_field_mask_is_constant_on_field_blocks():
    G = groups.get("C4")
    fields = irrep_fields(G, 1)  # sizes 1, 2, 1
    mask = field_mask(fields, fields, [0, 1, 2], [0, 1, 2], strict=True)
    assert mask.shape == (4, 4)
    assert mask.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]
    with pytest.raises(ValueError, match="one degree per field"):
        field_mask(fields, fields, [0, 1], [0, 1, 2], strict=True)


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_masked_field_conv_is_equivariant_and_autoregressive(name, dtype):
    G = groups.get(name)
    fields = G.regular_fields(3)
    conv = _perturbed(MaskedFieldConv(fields, fields, [2, 0, 1], [2, 0, 1], strict=True)).to(dtype)
    x = torch.randn(2, fields.size, 4, 4, dtype=dtype)
    checks.assert_equivariant(conv, x, G, in_field_type=fields, out_field_type=fields)
    n = G.order
    jacobian = torch.autograd.functional.jacobian(lambda v: conv(v).sum(dim=(0, 2, 3)), x).sum(dim=(1, 3, 4))
    blocks = jacobian.reshape(3, n, 3, n).abs().sum(dim=(1, 3))
    allowed = torch.tensor([[0, 1, 1], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)  # degrees 2, 0, 1
    assert torch.all(blocks[~allowed] == 0) and torch.all(blocks[allowed] > 0)


def _layer(G, fields, fast):
    hidden = G.regular_fields(2)
    order = list(range(len(fields)))[::-1]
    return _perturbed(AutoregressiveAffine(fields, MaskedConditioner(fields, hidden, order), fast=fast))


@pytest.mark.parametrize("fast", ["inverse", "forward"])
@pytest.mark.parametrize("name", ["C4", "D4"])
def test_autoregressive_layer_on_irreducible_fields(name, fast, dtype):
    G = groups.get(name)
    fields = irrep_fields(G, 1)
    layer = _layer(G, fields, fast).to(dtype)
    x = torch.randn(2, fields.size, 2, 2, dtype=dtype)
    checks.assert_equivariant(layer, x, G, in_field_type=fields, out_field_type=fields)
    z, logdet = layer(x)
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(checks.exact_logdet(layer, x), logdet.detach(), rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(checks.exact_logdet(layer.inverse, z.detach()), -logdet.detach(), rtol=tolerance, atol=tolerance)
    assert checks.inverse_error(layer, x) < (1e-12 if dtype == torch.float64 else 1e-5)


def test_iaf_sequential_direction_is_the_inverse_of_its_one_pass_direction():
    G = groups.get("C4")
    fields = G.scalar_fields(3)
    iaf = _layer(G, fields, "inverse").double()
    z = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    x = iaf.inverse(z)  # one pass
    z_again, _ = iaf(x)  # F sequential passes
    torch.testing.assert_close(z_again, z, rtol=0, atol=1e-12)
    maf = _layer(G, fields, "forward").double()
    torch.testing.assert_close(maf(maf.inverse(z))[0], z, rtol=0, atol=1e-12)
    # the IAF and MAF forms of the same conditioner are two different flows
    maf.load_state_dict(iaf.state_dict())
    assert not torch.allclose(maf(x)[0], z)


def test_jacobian_is_block_triangular_over_fields_in_the_chosen_order():
    G = groups.get("trivial")
    fields = G.scalar_fields(3)
    layer = _layer(G, fields, "forward").double()  # order 2, 1, 0
    x = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x).reshape(3, 9, 3, 9)
    blocks = jacobian.abs().sum(dim=(1, 3))
    assert blocks[2, 0] == 0 and blocks[2, 1] == 0 and blocks[1, 0] == 0
    assert blocks[0, 1] > 0 and blocks[0, 2] > 0 and blocks[1, 2] > 0


@pytest.mark.parametrize("fast", ["inverse", "forward"])
@pytest.mark.parametrize("name", ["trivial", "D2"])
def test_maf_and_iaf_on_the_coordinates_of_points(name, fast, dtype):
    G = groups.get(name)
    fields = point_coordinate_fields(G)
    layer = _perturbed(AutoregressiveAffine(fields, MaskedConditioner(fields, point_regular_fields(G, 4), [1, 0]), fast=fast)).to(dtype)
    x = torch.randn(16, 2, dtype=dtype)
    checks.assert_equivariant(layer, x, G)
    z, logdet = layer(x)
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(checks.exact_logdet(layer, x), logdet.detach(), rtol=tolerance, atol=tolerance)
    assert checks.inverse_error(layer, x) < (1e-12 if dtype == torch.float64 else 1e-5)
    # order [1, 0]: the Jacobian of the data -> latent map is triangular the other way round
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[0])
    assert jacobian[1, 0] == 0 and jacobian[0, 1] != 0


def test_masked_field_linear_is_equivariant_and_autoregressive():
    G = groups.get("D2")
    fields = point_regular_fields(G, 3)
    linear = _perturbed(MaskedFieldLinear(fields, fields, [1, 2, 0], [1, 2, 0], strict=False)).double()
    x = torch.randn(4, fields.size, dtype=torch.float64)
    action = lambda h, g: h @ torch.as_tensor(fields.representation(g), dtype=h.dtype).T  # noqa: E731
    checks.assert_equivariant(linear, x, G, in_action=action, out_action=action)
    blocks = torch.autograd.functional.jacobian(lambda v: linear(v[None])[0], x[0]).reshape(3, 4, 3, 4).abs().sum(dim=(1, 3))
    allowed = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)  # degrees 1, 2, 0, not strict
    assert torch.all(blocks[~allowed] == 0) and torch.all(blocks[allowed] > 0)


def test_autoregression_needs_two_fields_and_a_known_direction():
    G = groups.get("C4")
    fields = G.scalar_fields(1)
    with pytest.raises(ValueError, match=">= 2 fields"):
        AutoregressiveAffine(fields, None)
    with pytest.raises(ValueError, match="fast must be one of"):
        AutoregressiveAffine(G.scalar_fields(2), None, fast="sideways")
    with pytest.raises(ValueError, match="permutation of the 2 fields"):
        MaskedConditioner(G.scalar_fields(2), G.regular_fields(1), [0, 0])
    with pytest.raises(ValueError, match=">= 2 fields"):
        models.build("iaf", group="C8", data_shape=(1, 8, 8), depth=2, width=8)


MODEL_CASES = [("trivial", (1, 8, 8)), ("C4", (1, 8, 8)), ("D4", (1, 4, 4)), ("C4", (3, 4, 4)),
               ("C8", (2, 5, 5)), ("D4", (2,))]


@pytest.mark.parametrize("name, shape", MODEL_CASES)
def test_iaf_model_is_equivariant_invertible_and_invariant_after_training(name, shape, dtype):
    G = groups.get(name)
    model = models.build("iaf", group=name, data_shape=shape, depth=2, width=4).to(dtype)
    x = torch.rand(3, *shape, dtype=dtype) if len(shape) == 3 else torch.randn(32, 2, dtype=dtype)
    train_briefly_then_check(model, x, G)


def test_iaf_model_log_det_is_the_exact_one_and_maf_is_an_option():
    for fast in ("inverse", "forward"):
        model = models.build("iaf", group="C4", data_shape=(1, 4, 4), depth=2, width=4, fast=fast).double()
        model.eval()
        x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
        torch.testing.assert_close(checks.exact_logdet(model, x), model(x)[1].detach(), rtol=1e-9, atol=1e-9)
