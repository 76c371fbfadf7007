r"""Steerable convolutions masked field by field: the autoregressive conditioners of G-IAF (MADE-style).

Give every input and output *field* a degree (an integer). :class:`MaskedFieldConv` keeps the
connections from an input field of degree :math:`d_j` to an output field of degree :math:`d_i` only
when :math:`d_j \le d_i` (hidden layers) or :math:`d_j < d_i` (``strict``, the output layer), exactly
as MADE does for single numbers (Germain et al. 2015), but for whole blocks of channels.
:class:`MaskedFieldLinear` is the same for field types on no base space (points of the plane).

**Why masking whole fields keeps equivariance.** The input and output representations are direct
sums over fields, :math:`\rho_\text{in}=\bigoplus_j\rho_j`, :math:`\rho_\text{out}=\bigoplus_i\rho_i`,
so the equivariance constraint :math:`\rho_\text{out}(g)\,W(A_g^{-1}p)\,\rho_\text{in}(g)^{-1}=W(p)`
splits into one constraint per block, :math:`\rho_i(g)\,W_{ij}(A_g^{-1}p)\,\rho_j(g)^{-1} = W_{ij}(p)`.
Setting a block :math:`W_{ij}` to zero satisfies its constraint and leaves the others alone, so the
masked filter is still equivariant. Masking *inside* a field (e.g. one channel of a regular field)
would break the block constraint: the group mixes the channels of a field, never those of two fields.

>>> import torch
>>> from gflows import groups, checks
>>> G = groups.get("C4")
>>> fields = G.regular_fields(3)
>>> conv = MaskedFieldConv(fields, fields, [0, 1, 2], [0, 1, 2], strict=True).double()
>>> x = torch.randn(1, 12, 5, 5, dtype=torch.float64)
>>> y = conv(x)
>>> x[:, 4:] = 0                                  # fields 1 and 2 cannot reach output fields 0 and 1
>>> bool(torch.equal(conv(x)[:, :8], y[:, :8]))
True
>>> checks.equivariance_error(conv, x, G, in_field_type=fields, out_field_type=fields) < 1e-12
True
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .equivariant import EquivariantConv, EquivariantLinear


def field_mask(in_type, out_type, in_degrees: Sequence[int], out_degrees: Sequence[int], *, strict: bool) -> torch.Tensor:
    """``(out_type.size, in_type.size)`` 0/1 matrix, constant on every (output field, input field) block:
    1 where ``in_degree < out_degree`` (``strict``) or ``<=``."""
    if len(in_degrees) != len(in_type) or len(out_degrees) != len(out_type):
        raise ValueError(
            f"need one degree per field: {len(in_type)} input and {len(out_type)} output fields, "
            f"got {len(in_degrees)} and {len(out_degrees)} degrees"
        )
    d_in, d_out = torch.as_tensor(list(in_degrees)), torch.as_tensor(list(out_degrees))
    blocks = (d_in[None, :] < d_out[:, None]) if strict else (d_in[None, :] <= d_out[:, None])
    in_sizes = torch.as_tensor([rep.size for rep in in_type.representations])
    out_sizes = torch.as_tensor([rep.size for rep in out_type.representations])
    return blocks.double().repeat_interleave(out_sizes, dim=0).repeat_interleave(in_sizes, dim=1)


class _FieldMasked:
    """Mixin for an escnn-backed layer: its expanded weight is multiplied by a :func:`field_mask`."""

    def _register_field_mask(self, in_degrees: Sequence[int], out_degrees: Sequence[int], strict: bool) -> None:
        self.register_buffer("mask", field_mask(self.in_type, self.out_type, in_degrees, out_degrees, strict=strict))

    def expand(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        weight, bias = super().expand()
        mask = self.mask.to(weight.dtype)
        return weight * mask.reshape(mask.shape + (1,) * (weight.dim() - 2)), bias


class MaskedFieldConv(_FieldMasked, EquivariantConv):
    """:class:`~gflows.nn.equivariant.EquivariantConv` whose filter blocks between fields are masked by
    degree (see the module docstring). Shapes as for ``EquivariantConv``; equivariant to the group of
    the field types; output field i depends only on input fields j with ``d_j < d_i`` (``strict``) or
    ``d_j <= d_i``.
    """

    def __init__(self, in_type, out_type, in_degrees: Sequence[int], out_degrees: Sequence[int], *,
                 strict: bool, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__(in_type, out_type, kernel_size, bias=bias)
        self._register_field_mask(in_degrees, out_degrees, strict)


class MaskedFieldLinear(_FieldMasked, EquivariantLinear):
    """:class:`~gflows.nn.equivariant.EquivariantLinear` (field types on no base space, e.g. points of the
    plane) with the same degree masks as :class:`MaskedFieldConv`. Shapes ``(B, in) -> (B, out)``."""

    def __init__(self, in_type, out_type, in_degrees: Sequence[int], out_degrees: Sequence[int], *,
                 strict: bool, bias: bool = True) -> None:
        super().__init__(in_type, out_type, bias=bias)
        self._register_field_mask(in_degrees, out_degrees, strict)


def masked_field_layer(in_type, out_type, in_degrees: Sequence[int], out_degrees: Sequence[int], *,
                       strict: bool, kernel_size: int = 3):
    """:class:`MaskedFieldConv` for field types on the plane, :class:`MaskedFieldLinear` on no base space
    (``kernel_size`` is then unused), as :func:`~gflows.nn.equivariant.equivariant_layer` chooses."""
    if in_type.gspace.dimensionality == 0:
        return MaskedFieldLinear(in_type, out_type, in_degrees, out_degrees, strict=strict)
    return MaskedFieldConv(in_type, out_type, in_degrees, out_degrees, strict=strict, kernel_size=kernel_size)
