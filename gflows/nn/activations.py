r"""LipSwish (Chen et al. 2019): :math:`\mathrm{LipSwish}(x) = x\,\sigma(\beta x) / 1.1`, :math:`\beta>0` learned.

For every :math:`\beta > 0`, :math:`\sup_x |\tfrac{d}{dx} x\sigma(\beta x)| \approx 1.0998 < 1.1`, so
LipSwish is 1-Lipschitz. Applied channel by channel, it commutes with any *permutation* of channels,
hence with the action of the group on trivial and regular fields, which moves pixels and permutes
channels. On other fields (the standard representation of the plane, irreducible representations
of dimension 2) a pointwise map is not equivariant, and :class:`LipSwish` refuses them.

**Derivatives by hand.** A residual block runs many vector-Jacobian products through the same
activation (one per log-det series term, and one differentiated again for the gradient). With
:math:`s = \sigma(\beta x)` the forward pass stores

.. math:: f'(x) = \frac{s\,(1 + \beta x (1 - s))}{1.1}, \qquad
          \partial_\beta f = \frac{x^2 s (1-s)}{1.1},

so every product costs two tensor operations (``gy * f'`` and one dot product) instead of autograd's
chain of eight. The product is itself differentiable (:class:`_LipSwishProduct`), with

.. math:: f'' = \beta q, \quad \partial_\beta f' = x q, \quad \partial^2_\beta f = \frac{x^3 s(1-s)(1-2s)}{1.1},
          \qquad q = \frac{s(1-s)\,(2 + \beta x (1-2s))}{1.1},

which is all a log-det gradient needs; a third derivative raises. Tests compare both levels with
finite differences (``gradcheck``, ``gradgradcheck``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .fields import without_pointwise_nonlinearities

_SCALE = 1 / 1.1


def _second_derivative_factor(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """q with f'' = beta q and d f'/d beta = x q (module docstring)."""
    s = torch.mul(x, beta).sigmoid_()
    q = torch.mul(s, -2 * beta).add_(beta).mul_(x).add_(2)             # 2 + beta x (1 - 2 s)
    return q.mul_(torch.addcmul(s, s, s, value=-1)).mul_(_SCALE)        # ... * s (1 - s) / 1.1


class _LipSwish(torch.autograd.Function):
    """``x sigma(beta x) / 1.1``, storing f'(x) and d f / d beta for the backward pass."""

    @staticmethod
    def forward(ctx, x, beta):
        s = torch.mul(x, beta).sigmoid_()
        y = torch.mul(x, s).mul_(_SCALE)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:       # 8 passes over x instead of 11
            slope = torch.addcmul(y, y, s, value=-1)                     # x s (1 - s) / 1.1
            derivative = torch.addcmul(s.mul_(_SCALE), slope, beta)      # s / 1.1 + beta x s (1 - s) / 1.1 = f'(x)
            ctx.save_for_backward(x, beta, derivative, slope.mul_(x))    # ..., d f / d beta
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, beta, derivative, beta_derivative = ctx.saved_tensors
        if torch.is_grad_enabled():                                     # create_graph: stay differentiable
            return _LipSwishProduct.apply(grad_y, x, beta, derivative, beta_derivative)
        return grad_y * derivative, torch.vdot(grad_y.flatten(), beta_derivative.flatten()).reshape(beta.shape)


class _LipSwishProduct(torch.autograd.Function):
    """``(gy * f'(x), <gy, d f / d beta>)``: the vector-Jacobian product of LipSwish, differentiable once
    more in gy, x and beta (f' and d f / d beta are passed along, computed by the forward pass)."""

    @staticmethod
    def forward(ctx, grad_y, x, beta, derivative, beta_derivative):
        ctx.save_for_backward(grad_y, x, beta, derivative, beta_derivative)
        ctx.set_materialize_grads(False)        # the beta output's gradient is usually absent: skip its terms
        return grad_y * derivative, torch.vdot(grad_y.flatten(), beta_derivative.flatten()).reshape(beta.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x_grad, grad_beta_grad):
        grad_y, x, beta, derivative, beta_derivative = ctx.saved_tensors
        q = _second_derivative_factor(x, beta)
        to_grad_y, to_x, to_beta = None, None, torch.zeros_like(beta)
        if grad_x_grad is not None:
            to_grad_y = grad_x_grad * derivative
            product = (grad_y * grad_x_grad).mul_(q)                  # gy gg q
            to_beta = to_beta + torch.vdot(product.flatten(), x.flatten())   # d f' / d beta = x q
            to_x = product.mul_(beta)                                  # f'' = beta q
        if grad_beta_grad is not None:
            from_beta = grad_y * q * x * grad_beta_grad                # d^2 f / d beta dx = x q
            to_x = from_beta if to_x is None else to_x + from_beta
            to_grad_y = grad_beta_grad * beta_derivative if to_grad_y is None else to_grad_y + grad_beta_grad * beta_derivative
            s = torch.sigmoid(beta * x)
            to_beta = to_beta + grad_beta_grad * (grad_y * beta_derivative * x * (1 - 2 * s)).sum()
        return to_grad_y, to_x, to_beta.reshape(beta.shape), None, None


class LipSwish(nn.Module):
    r"""Pointwise 1-Lipschitz activation on fields that allow pointwise non-linearities.

    Args:
        field_type: escnn ``FieldType`` of the input (and output); every representation in it must
            support pointwise non-linearities (trivial and regular fields do).
        beta: initial value of the learned parameter ``beta_raw``; :math:`\beta = \mathrm{softplus}(\beta_{\mathrm{raw}})`.
    Shapes: any ``(B, C, ...)`` with ``C = field_type.size``, in and out. Equivariant to the group of
    ``field_type``; Lip = 1. Derivatives by hand, twice differentiable (module docstring).
    """

    def __init__(self, field_type, beta: float = 0.5) -> None:
        super().__init__()
        refused = without_pointwise_nonlinearities(field_type)
        if refused:
            raise ValueError(
                f"a pointwise non-linearity is not equivariant on fields of type {refused}: "
                "use trivial or regular fields (or a norm / gated non-linearity)"
            )
        self.in_type = self.out_type = field_type
        self.beta_raw = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.in_type.size:
            raise ValueError(f"LipSwish expects {self.in_type.size} channels, got shape {tuple(x.shape)}")
        return _LipSwish.apply(x, F.softplus(self.beta_raw).to(x.dtype))
