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

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .base import Flow


class ActNorm(Flow):
    """Per-field affine map ``z = (x + b) * exp(s)``, equivariant for scalar / regular / permutation fields.

    Args:
        num_fields: number of fields F.
        field_size: channels per field S (1 for image channels, :math:`|G|` for regular fields, 2 for a
            point of the plane).
        shift: learn b (only for fields whose representation fixes the constant vector).
        field_sizes: the channels of each field, for fields of different sizes (e.g. the orbit fields
            of a squeezed image, :func:`for_fields`); replaces ``num_fields`` x ``field_size``.
    Shapes: ``(B, sum of sizes)`` or ``(B, sum of sizes, H, W)`` in and out; ``logdet`` ``(B,)``.
    """

    def __init__(self, num_fields: int, field_size: int = 1, *, shift: bool = True, eps: float = 1e-6,
                 field_sizes: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        sizes = [field_size] * num_fields if field_sizes is None else [int(n) for n in field_sizes]
        if field_sizes is not None and len(sizes) != num_fields:
            raise ValueError(f"field_sizes lists {len(sizes)} fields, num_fields is {num_fields}")
        self.num_fields, self.field_sizes, self.eps = num_fields, tuple(sizes), eps
        self.channels = sum(sizes)
        self.log_scale = nn.Parameter(torch.zeros(num_fields))
        self.shift = nn.Parameter(torch.zeros(num_fields)) if shift else None
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("_field_of_channel", torch.repeat_interleave(torch.arange(num_fields), torch.tensor(sizes)),
                             persistent=False)

    @classmethod
    def for_fields(cls, field_type, *, shift: bool = True) -> "ActNorm":
        """One scale (and shift) per field of the escnn ``field_type``."""
        return cls(len(field_type), shift=shift, field_sizes=[rep.size for rep in field_type.representations])

    def _per_channel(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A per-field vector as ``(1, C, 1, ...)`` for broadcasting against ``x``."""
        return values[self._field_of_channel].reshape((1, -1) + (1,) * (x.dim() - 2))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"ActNorm expects {self.num_fields} fields of {self.channels} channels in all, "
                             f"got shape {tuple(x.shape)}")

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        channels_last = x.transpose(0, 1).reshape(self.channels, -1)
        per_field = lambda values: torch.zeros(self.num_fields, dtype=x.dtype, device=x.device).index_add_(  # noqa: E731
            0, self._field_of_channel, values)
        count = per_field(torch.full((self.channels,), channels_last.shape[1], dtype=x.dtype, device=x.device))
        total, squares = per_field(channels_last.sum(dim=1)), per_field(channels_last.pow(2).sum(dim=1))
        if self.shift is not None:
            mean = total / count
            self.shift.copy_(-mean)
            spread = ((squares - count * mean ** 2).clamp_min(0) / (count - 1).clamp_min(1)).sqrt()
        else:
            spread = (squares / count).sqrt()
        self.log_scale.copy_(-torch.log(spread + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        if self.training and not self.initialized:
            self._initialize(x)
        if self.shift is not None:
            x = x + self._per_channel(self.shift, x)
        z = x * self._per_channel(self.log_scale.exp(), x)
        positions = x[0, 0].numel()
        sizes = self.log_scale.new_tensor(self.field_sizes)
        logdet = (self.log_scale * sizes).sum() * positions
        return z, logdet.expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        x = z * self._per_channel(torch.exp(-self.log_scale), z)
        if self.shift is not None:
            x = x - self._per_channel(self.shift, z)
        return x
