r"""G-IAF: affine autoregressive flows over the *fields* of an image, with field-masked equivariant conditioners.

Order the fields :math:`x_1, \dots, x_F` of the state (never its pixels: the group moves pixels, but it
maps each field to itself). An affine autoregressive layer is, data to latent,

* **MAF form** (``fast="forward"``): :math:`z_i = x_i\, e^{s_i(x_{<i})} + t_i(x_{<i})`. The density
  direction is one pass of the masked conditioner; the inverse (sampling) is sequential, F passes.
* **IAF form** (``fast="inverse"``, Kingma et al. 2016): :math:`z_i = x_i\, e^{s_i(z_{<i})} + t_i(z_{<i})`.
  Sampling :math:`x_i = (z_i - t_i(z_{<i}))\,e^{-s_i(z_{<i})}` is one pass; the density direction is
  sequential.

In both, :math:`\log\lvert\det\rvert = \sum_i \sum s_i` (a triangular Jacobian over fields, with the
scale of field i one scalar field broadcast over its channels, as in :mod:`gflows.flows.coupling`). With an
equivariant, field-masked conditioner (:class:`gflows.nn.conditioners.MaskedConditioner`) every pass
is equivariant, and so is the sequential loop: its intermediate states are equivariant functions of
the input (a field still zero is mapped to zero by every :math:`\rho(g)`).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .base import Flow

FAST_DIRECTIONS = ("forward", "inverse")


class AutoregressiveAffine(Flow):
    """Affine autoregressive layer over the fields of ``field_type`` (MAF or IAF form, module docstring).

    Args:
        field_type: escnn ``FieldType`` of the state; at least 2 fields.
        conditioner: maps the state (and optionally its ``expanded_weights()``) to ``(s_raw, t)``: one
            scalar field per field and a ``field_type``
            shift, the outputs of field ``order[k]`` depending only on fields ``order[:k]``
            (:class:`gflows.nn.conditioners.MaskedConditioner`).
        fast: ``"inverse"`` (IAF: one-pass sampling) or ``"forward"`` (MAF: one-pass density).
    Shapes ``(B, C, H, W)`` in and out, or ``(B, C)`` for fields on no base space (e.g. the two
    coordinates of a point, :func:`gflows.nn.point_coordinate_fields`: MAF / IAF on the plane for the
    groups that respect them); ``logdet`` ``(B,)``; exact inverse (F conditioner passes in the
    slow direction). Equivariant when the conditioner is.
    """

    def __init__(self, field_type, conditioner: nn.Module, *, fast: str = "inverse") -> None:
        super().__init__()
        if fast not in FAST_DIRECTIONS:
            raise ValueError(f"fast must be one of {FAST_DIRECTIONS}, got {fast!r}")
        if len(field_type) < 2:
            raise ValueError(
                f"an autoregressive flow over fields needs >= 2 fields, got {len(field_type)}: use an image "
                "with >= 2 channels, or squeeze it first (gflows.flows.squeeze)"
            )
        self.n_fields, self.fast, self.conditioner = len(field_type), fast, conditioner
        self.scale = nn.Parameter(torch.ones(self.n_fields))
        field_of_channel = [f for f, rep in enumerate(field_type.representations) for _ in range(rep.size)]
        self.register_buffer("scale_index", torch.as_tensor(field_of_channel))

    def _scale_and_shift(self, v: torch.Tensor, weights) -> Tuple[torch.Tensor, torch.Tensor]:
        s_raw, t = self.conditioner(v, weights)
        s = self.scale.view((1, -1) + (1,) * (s_raw.dim() - 2)) * torch.tanh(s_raw)
        return s[:, self.scale_index], t

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        weights = self.conditioner.expanded_weights()
        if self.fast == "forward":
            s, t = self._scale_and_shift(x, weights)
            z = x * torch.exp(s) + t
        else:
            z = torch.zeros_like(x)
            for _ in range(self.n_fields):  # after pass k, the first k fields of the order are final
                s, t = self._scale_and_shift(z, weights)
                z = x * torch.exp(s) + t
        return z, s.flatten(1).sum(dim=1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        weights = self.conditioner.expanded_weights()
        if self.fast == "inverse":
            s, t = self._scale_and_shift(z, weights)
            return (z - t) * torch.exp(-s)
        x = torch.zeros_like(z)
        for _ in range(self.n_fields):
            s, t = self._scale_and_shift(x, weights)
            x = (z - t) * torch.exp(-s)
        return x
