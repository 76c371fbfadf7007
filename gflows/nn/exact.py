r"""Projection of an expanded escnn weight onto the exactly equivariant subspace (the Reynolds operator).

escnn samples its steerable basis filters in float32, so a filter expanded in float64 satisfies the
equivariance constraint only to about :math:`10^{-8}`. Averaging over a finite group :math:`H`,

.. math:: \bar W = \frac{1}{|H|}\sum_{h\in H} h\cdot W, \qquad
          (h\cdot W)(p) = \rho_\text{out}(h)\, W(A_h^{-1}p)\, \rho_\text{in}(h)^{-1},

is a linear projection onto the filters with :math:`h\cdot W = W` for every :math:`h \in H`, i.e. the
equivariant ones: it leaves an equivariant filter unchanged and removes the round-off. For
convolution filters :math:`H` is the subgroup of elements that act exactly on a pixel grid (90°
rotations and flips); for the matrices of linear maps on points (no pixels) it is the whole group.
Layers apply it to float64 weights, where it brings equivariance to float64 precision; in float32
the sampled basis is already exact to float32 round-off.

>>> import torch
>>> from gflows import groups
>>> G = groups.get("C4")
>>> W = torch.randn(1, 1, 3, 3, dtype=torch.float64)
>>> P = project_to_equivariant(W, G.scalar_fields(1), G.scalar_fields(1))
>>> bool(torch.allclose(P, torch.rot90(P, 1, dims=(-2, -1))))     # a C4-invariant 3x3 filter
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..groups import is_signed_permutation, move_pixels


@lru_cache(maxsize=None)
def _averaging_terms(in_type, out_type, on_grid: bool) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(A_h, rho_out(h), rho_in(h)^{-1}) for each h averaged over."""
    gspace = in_type.gspace
    terms = []
    for h in gspace.fibergroup.elements:
        a = np.asarray(gspace.basespace_action(h)) if on_grid else None
        if on_grid and not is_signed_permutation(a):
            continue
        terms.append((a, out_type.representation(h), in_type.representation(~h)))
    return terms


def project_to_equivariant(weight: torch.Tensor, in_type, out_type) -> torch.Tensor:
    """Average ``weight`` over the group: ``(O, I, k, k)`` conv filters (over grid-exact elements) or
    ``(O, I)`` matrices (over every element). Returns a tensor of the same shape, equivariant to that
    set of elements up to round-off in ``weight``'s dtype."""
    if weight.dim() not in (2, 4) or weight.shape[:2] != (out_type.size, in_type.size):
        raise ValueError(f"expected an ({out_type.size}, {in_type.size}[, k, k]) weight, got {tuple(weight.shape)}")
    on_grid = weight.dim() == 4
    terms = _averaging_terms(in_type, out_type, on_grid)
    rho_out = torch.as_tensor(np.stack([t[1] for t in terms]), dtype=weight.dtype, device=weight.device)
    rho_in_inverse = torch.as_tensor(np.stack([t[2] for t in terms]), dtype=weight.dtype, device=weight.device)
    if on_grid:  # (n, k, k, O, I): one matrix product per group element and kernel position
        moved = torch.stack([move_pixels(weight, a) for a, _, _ in terms]).permute(0, 3, 4, 1, 2)
        averaged = (rho_out[:, None, None] @ moved @ rho_in_inverse[:, None, None]).mean(dim=0)
        return averaged.permute(2, 3, 0, 1)
    return (rho_out @ weight @ rho_in_inverse).mean(dim=0)


def expanded_weight(layer) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The dense ``(weight, bias)`` of an escnn ``R2Conv`` / ``Linear``; in float64 the weight is
    projected with :func:`project_to_equivariant`, so that it is equivariant to float64 precision."""
    weight, bias = layer.expand_parameters()
    if weight.dtype == torch.float64:
        weight = project_to_equivariant(weight, layer.in_type, layer.out_type)
    return weight, bias
