r"""LipSwish (Chen et al. 2019): :math:`\mathrm{LipSwish}(x) = x\,\sigma(\beta x) / 1.1`, :math:`\beta>0` learned.

For every :math:`\beta > 0`, :math:`\sup_x |\tfrac{d}{dx} x\sigma(\beta x)| \approx 1.0998 < 1.1`, so
LipSwish is 1-Lipschitz. Applied channel by channel, it commutes with any *permutation* of channels,
hence with the action of the group on trivial and regular fields, which moves pixels and permutes
channels. On other fields (the standard representation of the plane, irreducible representations
of dimension 2) a pointwise map is not equivariant, and :class:`LipSwish` refuses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fields import without_pointwise_nonlinearities


class LipSwish(nn.Module):
    r"""Pointwise 1-Lipschitz activation on fields that allow pointwise non-linearities.

    Args:
        field_type: escnn ``FieldType`` of the input (and output); every representation in it must
            support pointwise non-linearities (trivial and regular fields do).
        beta: initial value of the learned parameter ``beta_raw``; :math:`\beta = \mathrm{softplus}(\beta_{\mathrm{raw}})`.
    Shapes: any ``(B, C, ...)`` with ``C = field_type.size``, in and out. Equivariant to the group of
    ``field_type``; Lip = 1.
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
        return x * torch.sigmoid(F.softplus(self.beta_raw) * x) / 1.1
