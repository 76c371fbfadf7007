r"""Unconstrained steerable layers on plain tensors: the conditioners of coupling and autoregressive flows.

:class:`EquivariantConv` is escnn's ``R2Conv`` (a filter :math:`W=\sum_k w_k B_k` in the equivariant
kernel basis) applied with ``torch.nn.functional.conv2d``, stride 1 and padding ``k // 2``, so the
H x W grid and its centre are kept and 90-degree rotations and flips act exactly on odd and even
sizes alike. :class:`EquivariantLinear` is escnn's ``Linear`` between field types on no base space
(points of the plane). In float64 the expanded weight is averaged over the group
(:func:`~gflows.nn.exact.project_to_equivariant`), which removes the ~1e-8 error of escnn's float32
basis; in float32 the basis is already exact to round-off.

Expanding the filter costs about a quarter of a coupling model's evaluation step on a CPU, so in
evaluation mode without gradients the expanded filter is kept while the weights stay the same
(:meth:`~_Expanded.weight_and_bias`); training expands afresh at every step, inside the graph. For
the trivial group (the twins) every pair of fields shares one basis :math:`B` of :math:`K` filters,
so the expansion is one matrix product, ``(O*I, K) @ (K, k*k)``, with :math:`B` read off escnn's
expansion once at construction (same parameters and checkpoints as escnn's layer, the same filter).

Every layer owns its sampled basis (``recompute=True``): escnn otherwise shares one basis module
between all layers with the same field types, and ``.double()`` on one model would change the dtype of
another model's basis.

>>> import torch
>>> from gflows import groups, checks
>>> G = groups.get("D4")
>>> conv = EquivariantConv(G.scalar_fields(1), G.regular_fields(2)).double()
>>> x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
>>> checks.equivariance_error(conv, x, G, out_field_type=conv.out_type) < 1e-12
True
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._escnn import enn
from .exact import expanded_weight
from .parameters import copies, parameters_of, same_values


def _shared_basis(layer) -> torch.Tensor:
    """``(K, k*k)`` (``(K, 1)`` for a linear layer): the basis filters of one pair of trivial fields,
    which every pair of a trivial-group layer shares; escnn's weights run over the pairs, then the K
    basis elements (so the filter of pair p is ``weights[p*K:(p+1)*K] @ basis``)."""
    pairs = layer.out_type.size * layer.in_type.size
    per_pair = layer.basisexpansion.dimension() // pairs
    unit = torch.eye(per_pair, layer.basisexpansion.dimension(), dtype=layer.weights.dtype)
    with torch.no_grad():
        return torch.stack([layer.basisexpansion(e)[0, 0].reshape(-1) for e in unit])


class _Expanded(nn.Module):
    """An escnn layer used only for its parameters: expand, project in float64, apply with torch."""

    def __init__(self, layer) -> None:
        super().__init__()
        self.layer = layer
        self.in_type, self.out_type = layer.in_type, layer.out_type
        self._kept: Optional[tuple] = None
        trivial_group = layer.in_type.gspace.fibergroup.order() == 1
        self._weight_shape = tuple(layer.expand_parameters()[0].shape)
        self.register_buffer("shared_basis", _shared_basis(layer) if trivial_group else None, persistent=False)

    def expand(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The dense weight (exactly equivariant in float64) and the bias, computed afresh."""
        if self.shared_basis is None:
            return expanded_weight(self.layer)
        pairs = self.out_type.size * self.in_type.size    # trivial group: one field per channel, bias unexpanded
        return (self.layer.weights.view(pairs, -1) @ self.shared_basis).view(self._weight_shape), self.layer.bias

    def weight_and_bias(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`expand`, computed afresh in training mode or where autograd records; in evaluation
        mode without gradients (evaluation, sampling, inversion) kept and reused until a parameter or
        buffer changes (in place, e.g. ``load_state_dict``, an EMA update or a fused optimiser step, which
        leaves the version counters alone, so parameters are compared by value; or replaced, e.g. ``.to``)."""
        if self.training or torch.is_grad_enabled():
            self._kept = None
            return self.expand()
        parameters = parameters_of(self)
        buffers = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in self.buffers())
        if self._kept is None or self._kept[1] != buffers or not same_values(self._kept[0], parameters):
            self._kept = (copies(parameters), buffers, self.expand())
        return self._kept[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_weight(x, *self.weight_and_bias())

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The layer with a given expanded weight (to expand once and apply several times)."""
        raise NotImplementedError  # pragma: no cover

    def _check(self, x: torch.Tensor, rank: int) -> None:
        if x.dim() != rank or x.shape[1] != self.in_type.size:
            raise ValueError(
                f"{type(self).__name__} expects a rank-{rank} tensor with {self.in_type.size} channels, "
                f"got shape {tuple(x.shape)}"
            )


class EquivariantConv(_Expanded):
    """Steerable convolution ``(B, in_type.size, H, W) -> (B, out_type.size, H, W)``, equivariant to the
    group of the field types (exactly on the elements that act on pixel grids).

    Args:
        in_type, out_type: escnn ``FieldType`` s of one 2-D gspace.
        kernel_size: odd (an even kernel has no centre pixel and breaks equivariance).
        bias: learn a bias (escnn puts it on trivial fields only, where it is equivariant).
    """

    def __init__(self, in_type, out_type, kernel_size: int = 3, *, bias: bool = True) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (an even kernel has no centre pixel), got {kernel_size}")
        super().__init__(enn.R2Conv(in_type, out_type, kernel_size, padding=kernel_size // 2, bias=bias, recompute=True))
        self.padding = kernel_size // 2

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        self._check(x, 4)
        if x.device.type == "cpu" and x.dtype == torch.float32:
            # oneDNN's channels-last kernels: forward + backward of these thin convolutions 1.3-2.7x faster,
            # coupling and IAF training steps 10-23% (benchmarks/peers.py); the output stays channels-last
            x, weight = x.contiguous(memory_format=torch.channels_last), weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, padding=self.padding)


class EquivariantLinear(_Expanded):
    """Equivariant linear map ``(B, in_type.size) -> (B, out_type.size)`` between field types on no
    base space (points of the plane); equivariant to every element of the group."""

    def __init__(self, in_type, out_type, *, bias: bool = True) -> None:
        super().__init__(enn.Linear(in_type, out_type, bias=bias, recompute=True))

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        self._check(x, 2)
        return F.linear(x, weight, bias)


def equivariant_layer(in_type, out_type, kernel_size: int = 3) -> _Expanded:
    """:class:`EquivariantConv` for field types on the plane, :class:`EquivariantLinear` on no base space."""
    if in_type.gspace.dimensionality == 0:
        return EquivariantLinear(in_type, out_type)
    return EquivariantConv(in_type, out_type, kernel_size)
