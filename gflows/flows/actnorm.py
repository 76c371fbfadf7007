r"""Activation normalisation (Kingma & Dhariwal 2018), one scale and shift per *field*.

For a tensor whose channels are ``num_fields`` fields of ``field_size`` channels each,

.. math:: z = (x + b_f)\, e^{s_f} \quad\text{on every channel and position of field } f,
          \qquad \log\lvert\det\rvert = S\,P \sum_f s_f ,

with :math:`S` = ``field_size`` channels per field and :math:`P` positions (pixels) per channel.

Why it is equivariant: a group element moves pixels and acts on each field by a matrix
:math:`\rho(g)`. A positive scalar :math:`e^{s_f}` commutes with every :math:`\rho(g)`, and moving
pixels does not see a spatially constant map. The shift :math:`b_f \mathbf{1}` is left alone only if
:math:`\rho(g)\mathbf{1} = \mathbf{1}`: true for scalar fields and for regular (permutation) fields,
false for a rotation of the plane, so points in the plane use ``shift=False``.

Data-dependent initialisation: the first forward pass in training mode sets :math:`b_f` and
:math:`s_f` so that each field of that batch has zero mean and unit variance (unit mean square if
``shift=False``). The statistics pool over batch, positions and the channels of the field, which a
group element only permutes, so the initialised layer is equivariant too.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .base import Flow


class ActNorm(Flow):
    """Per-field affine map ``z = (x + b) * exp(s)``, equivariant for scalar / regular fields.

    Args:
        num_fields: number of fields F.
        field_size: channels per field S (1 for image channels, :math:`|G|` for regular fields, 2 for a
            point of the plane).
        shift: learn b (only for fields whose representation fixes the constant vector).
    Shapes: ``(B, F*S)`` or ``(B, F*S, H, W)`` in and out; ``logdet`` ``(B,)``.
    """

    def __init__(self, num_fields: int, field_size: int = 1, *, shift: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_fields, self.field_size, self.eps = num_fields, field_size, eps
        self.log_scale = nn.Parameter(torch.zeros(num_fields))
        self.shift = nn.Parameter(torch.zeros(num_fields)) if shift else None
        self.register_buffer("initialized", torch.tensor(False))

    def _per_field(self, x: torch.Tensor) -> torch.Tensor:
        """View ``(B, F*S, *spatial)`` as ``(B, F, S * positions)``."""
        if x.dim() < 2 or x.shape[1] != self.num_fields * self.field_size:
            raise ValueError(
                f"ActNorm expects {self.num_fields} fields x {self.field_size} channels = "
                f"{self.num_fields * self.field_size} channels, got shape {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.num_fields, -1)

    @torch.no_grad()
    def _initialize(self, fields: torch.Tensor) -> None:
        pooled = fields.transpose(0, 1).reshape(self.num_fields, -1)
        if self.shift is not None:
            self.shift.copy_(-pooled.mean(dim=1))
            spread = pooled.std(dim=1)
        else:
            spread = pooled.pow(2).mean(dim=1).sqrt()
        self.log_scale.copy_(-torch.log(spread + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        fields = self._per_field(x)
        if self.training and not self.initialized:
            self._initialize(fields)
        if self.shift is not None:
            fields = fields + self.shift[:, None]
        z = fields * self.log_scale.exp()[:, None]
        logdet = self.log_scale.sum() * fields.shape[-1]
        return z.reshape(x.shape), logdet.expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        fields = self._per_field(z) * torch.exp(-self.log_scale)[:, None]
        if self.shift is not None:
            fields = fields - self.shift[:, None]
        return fields.reshape(z.shape)
