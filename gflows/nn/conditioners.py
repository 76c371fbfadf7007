r"""Conditioner networks of coupling and autoregressive flows: equivariant maps to a shift and a log-scale.

Every conditioner maps a tensor ``v`` to ``(s_raw, t)``:

* ``t`` has the field type ``t_type`` of the part of the state that the flow transforms;
* ``s_raw`` holds ``n_scales`` **scalar** (trivial) fields, one per field of ``t_type``: the flow
  multiplies every channel of field f by :math:`e^{s_f}`. A scalar commutes with every matrix
  :math:`\rho_f(g)`, and a scalar field moves with the pixels, so the scaling is equivariant whatever
  the representation of the field (see chapter 4).

:class:`EquivariantConditioner` is a plain stack of equivariant layers with pointwise ELU on regular
(permutation) hidden fields; :class:`MaskedConditioner` is its MADE-style twin for autoregressive flows.
:class:`InvariantDecoderConditioner` reproduces the design of the official E-RealNVP scale network
(an invariant vector decoded to per-pixel scales by an ordinary network). **It is not equivariant**;
it exists only so that the book and the tests can show that it fails.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._escnn import enn
from .equivariant import EquivariantConv, equivariant_layer
from .fields import without_pointwise_nonlinearities
from .masked import masked_field_layer

#: Multiplies the initial weights of the output layer, so that a new flow starts close to the identity.
OUTPUT_INIT_SCALE = 0.1


def _with_scales(gspace, t_type, n_scales: int):
    """``t_type`` (or nothing, if ``None``) followed by ``n_scales`` trivial fields: a conditioner's output type."""
    shifts = [] if t_type is None else list(t_type.representations)
    return enn.FieldType(gspace, shifts + [gspace.trivial_repr] * n_scales)


def _shrink(layer) -> None:
    with torch.no_grad():
        layer.layer.weights.mul_(OUTPUT_INIT_SCALE)


def _check_pointwise(hidden_type) -> None:
    refused = without_pointwise_nonlinearities(hidden_type)
    if refused:
        raise ValueError(f"hidden fields must allow pointwise non-linearities (trivial or regular), got {refused}")


class _Conditioner(nn.Module):
    """Layers with ELU in between; the output is split into ``(s_raw, t)``."""

    def __init__(self, layers: List[nn.Module], t_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.t_size = t_size
        _shrink(layers[-1])

    def expanded_weights(self) -> list:
        """Every layer's ``(weight, bias)``, for calling :meth:`forward` several times with one expansion."""
        return [layer.weight_and_bias() for layer in self.layers]

    def forward(self, v: torch.Tensor, weights: Optional[list] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        weights = self.expanded_weights() if weights is None else weights
        for layer, (weight, bias) in zip(self.layers[:-1], weights):
            v = F.elu(layer.apply_weight(v, weight, bias), inplace=True)   # backward from the output: 4x faster
        out = self.layers[-1].apply_weight(v, *weights[-1]).contiguous()   # channel slices of a channels-last
        return out[:, self.t_size:], out[:, :self.t_size]                  # tensor make later ops ~30x slower


class EquivariantConditioner(_Conditioner):
    """Equivariant network ``in_type -> (n_scales scalar fields, t_type)``.

    Args:
        in_type: field type of the conditioning input.
        t_type: field type of the shift ``t`` (``None``: no shift, ``t`` has 0 channels); ``n_scales``
            scalar fields for ``s_raw``.
        hidden_type: field type of the hidden layers (trivial or regular fields, for the pointwise ELU).
        hidden_layers: number of hidden layers (>= 1).
        kernel_size: of the convolutions (images); ignored for field types on no base space (points).
    Shapes: images ``(B, in, H, W) -> ((B, n_scales, H, W), (B, t, H, W))``; points ``(B, in) -> ...``.
    Equivariant to the group of the field types.
    """

    def __init__(self, in_type, t_type: Optional[object], n_scales: int, hidden_type, *, hidden_layers: int = 1, kernel_size: int = 3) -> None:
        _check_pointwise(hidden_type)
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be >= 1, got {hidden_layers}")
        types = [in_type] + [hidden_type] * hidden_layers + [_with_scales(in_type.gspace, t_type, n_scales)]
        t_size = 0 if t_type is None else t_type.size
        super().__init__([equivariant_layer(a, b, kernel_size) for a, b in zip(types[:-1], types[1:])], t_size)


def made_degrees(n_fields: int, n_hidden: int) -> List[int]:
    """Degrees of ``n_hidden`` hidden fields for ``n_fields`` ordered fields: cycling over 0..n_fields-2,
    so that every output field i > 0 sees every input field j < i."""
    return [k % max(1, n_fields - 1) for k in range(n_hidden)]


class MaskedConditioner(_Conditioner):
    """MADE-style equivariant network over the fields of ``field_type``, taken in the order ``order``.

    Output ``(s_raw, t)``: ``t`` has type ``field_type``, ``s_raw`` one scalar field per field. The
    outputs of field ``order[k]`` depend only on the input fields ``order[:k]`` (so the first field's
    outputs are constants). Equivariant to the group of ``field_type`` (masks are field blocks).
    Shapes as :class:`EquivariantConditioner`: images ``(B, C, H, W)``, or ``(B, C)`` for field types
    on no base space (e.g. :func:`gflows.nn.point_coordinate_fields`; ``kernel_size`` is then unused).
    """

    def __init__(self, field_type, hidden_type, order: Sequence[int], *, hidden_layers: int = 1, kernel_size: int = 3) -> None:
        _check_pointwise(hidden_type)
        n = len(field_type)
        if sorted(order) != list(range(n)):
            raise ValueError(f"order must be a permutation of the {n} fields, got {list(order)}")
        position = [0] * n
        for k, field in enumerate(order):
            position[field] = k
        hidden_degrees = made_degrees(n, len(hidden_type))
        out_type = _with_scales(field_type.gspace, field_type, n)
        types = [(field_type, position)] + [(hidden_type, hidden_degrees)] * hidden_layers + [(out_type, position + position)]
        layers = [
            masked_field_layer(a, b, da, db, strict=(i == len(types) - 2), kernel_size=kernel_size)
            for i, ((a, da), (b, db)) in enumerate(zip(types[:-1], types[1:]))
        ]
        super().__init__(layers, field_type.size)


class InvariantDecoderConditioner(nn.Module):
    """**Not equivariant** (a counterexample): the official E-RealNVP scale network, in miniature.

    ``t`` comes from an equivariant network, but ``s_raw`` is computed from a G-*invariant* vector
    (equivariant convs, then the mean over positions and over the channels of each regular field)
    by an ordinary linear decoder into one value per pixel. Rotating the input leaves ``s_raw``
    unchanged instead of rotating it, so :math:`x_B e^{s}` does not follow the rotation.
    Shapes as :class:`EquivariantConditioner`; needs the spatial size ``(H, W)`` at construction.
    """

    def __init__(self, in_type, t_type, n_scales: int, hidden_type, size: Tuple[int, int], *, kernel_size: int = 3) -> None:
        super().__init__()
        self.shift = EquivariantConditioner(in_type, t_type, 0, hidden_type, kernel_size=kernel_size)
        self.encoder = EquivariantConv(in_type, hidden_type, kernel_size)
        self.n_hidden, self.n_scales, self.size = len(hidden_type), n_scales, tuple(size)
        self.decoder = nn.Linear(self.n_hidden, n_scales * self.size[0] * self.size[1])
        with torch.no_grad():
            self.decoder.weight.mul_(OUTPUT_INIT_SCALE)

    def forward(self, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        _, t = self.shift(v)
        h = F.elu(self.encoder(v))
        invariant = h.reshape(h.shape[0], self.n_hidden, -1).mean(dim=2)        # (B, fields): G-invariant
        s_raw = self.decoder(invariant).reshape(v.shape[0], self.n_scales, *self.size)
        return s_raw, t
