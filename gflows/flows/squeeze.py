r"""The equivariant 2x2 squeeze (space-to-depth) and the representation it induces on channels.

A squeeze cuts an even-sized image into 2x2 blocks and stacks the four pixels of each block as four
channels: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``, channel ``4c + 2a + b`` holding pixel
``(2i + a, 2j + b)`` of channel c (``torch.nn.functional.pixel_unshuffle``).

**The induced representation.** Put the corner ``(a, b)`` of a block at the offset
:math:`o_{ab} = (b - \tfrac12,\ \tfrac12 - a)` from the block's centre (columns are X, rows -Y). A
big pixel sits at :math:`P = 2Q + o`, with :math:`Q` the position of its block on the small grid;
both grids are centred at the same point when H and W are even. For an element whose matrix
:math:`A_g` is a signed permutation, :math:`A_g^{-1}P = 2A_g^{-1}Q + A_g^{-1}o` and
:math:`A_g^{-1}o` is again a corner, so

.. math:: \operatorname{squeeze}(g\cdot x)_{c,k}(Q) = \operatorname{squeeze}(x)_{c,k'}(A_g^{-1}Q),
          \qquad o_k = A_g\, o_{k'} ,

i.e. :math:`\operatorname{squeeze}(g\cdot x) = g\cdot\operatorname{squeeze}(x)` for the field type of
C copies of the **corner representation** :math:`P(g)`: the permutation matrix by which :math:`A_g`
permutes the four corners of a square. For :math:`C_4` it cycles the corners, so it is the regular
representation; for :math:`D_4` the stabiliser of a corner is the reflection across the diagonal
through it, so it is the permutation representation on :math:`D_4/\{e, \text{diagonal flip}\}`.

**Only for groups that map the block onto itself.** For :math:`C_8` no representation on four
channels restricts to the corner cycle on :math:`C_4` (the eigenvalue :math:`-1` of a 90° turn would
have to come from the frequency-2 irrep of :math:`C_8`, which brings it twice), so a squeeze is
refused for groups with elements that are not multiples of 90° or axis/diagonal flips.

**The irreducible basis.** :class:`Squeeze` also rotates every four channels by the orthogonal
matrix :math:`Q^\top` that splits :math:`P` into irreducible representations (for :math:`C_4`: the
block mean, a sign field and a 2-d gradient field: a Haar transform). The squeezed single-channel
image then has several fields, which a coupling can split; :math:`Q` is orthogonal, so the log-det is
zero.

>>> import torch
>>> from gflows import groups
>>> G = groups.get("D4")
>>> P = corner_representation(G)
>>> [irrep.size for irrep in irreps_of(P)]
[1, 2, 1]
>>> x = torch.randn(2, 1, 6, 6)
>>> fields = corner_fields(G, 1)
>>> all(torch.equal(space_to_depth(G.act_image(x, g)), G.act_image(space_to_depth(x), g, fields))
...     for g in G.elements())
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .._escnn import enn
from escnn.group import Representation
from ..groups import Group
from .base import Flow

#: Offsets of the corners (a, b) = (0,0), (0,1), (1,0), (1,1) from the centre of a 2x2 block, as (X, Y).
CORNERS = np.array([[b - 0.5, 0.5 - a] for a in (0, 1) for b in (0, 1)])


def corner_permutation(matrix: np.ndarray) -> np.ndarray:
    """The 4x4 permutation matrix P with P[k, j] = 1 iff A o_j = o_k (A a signed permutation matrix)."""
    moved = CORNERS @ np.asarray(matrix).T
    P = np.zeros((4, 4))
    for j, corner in enumerate(moved):
        hits = np.flatnonzero(np.abs(CORNERS - corner).max(axis=1) < 1e-9)
        if len(hits) != 1:
            raise ValueError(f"{np.asarray(matrix).round(3).tolist()} does not map the 2x2 block onto itself")
        P[hits[0], j] = 1.0
    return P


def _intertwiners(matrices: List[np.ndarray], irrep) -> np.ndarray:
    """Orthonormal basis (columns) of {M : rho(g) M = M psi(g) for all g}, flattened column-major."""
    d = irrep.size
    rows = [np.kron(np.eye(d), rho) - np.kron(irrep(g).T, np.eye(4)) for g, rho in matrices]
    _, singular, vt = np.linalg.svd(np.concatenate(rows))
    rank = int((singular > 1e-9).sum())
    return vt[rank:].T


def _decompose(group: Group) -> Tuple[list, np.ndarray]:
    """Irreps (escnn ids) and an orthogonal Q with P(g) = Q (direct sum of irreps)(g) Q^T."""
    fiber = group.gspace.fibergroup
    matrices = [(g, corner_permutation(group.matrix(g))) for g in fiber.elements]
    ids, columns = [], []
    for irrep in fiber.irreps():
        basis = _intertwiners(matrices, irrep)
        if irrep.size == 1:
            copies = [basis[:, i:i + 1] for i in range(basis.shape[1])]
        elif basis.shape[1] == 0:
            copies = []
        elif basis.shape[1] <= irrep.size:  # multiplicity one (its commutant has dimension <= size)
            M = basis[:, 0].reshape(irrep.size, 4).T
            copies = [M / np.sqrt((M.T @ M)[0, 0])]
        else:  # pragma: no cover - never happens for the corner representation of a planar group
            raise NotImplementedError(f"irrep {irrep.name} occurs more than once in the corner representation")
        ids += [irrep.id] * len(copies)
        columns += copies
    Q = np.concatenate(columns, axis=1)
    for g, P in matrices:  # the decomposition is exact: check it once
        block = np.zeros((4, 4))
        offset = 0
        for irrep_id in ids:
            irrep = fiber.irrep(*irrep_id)
            block[offset:offset + irrep.size, offset:offset + irrep.size] = irrep(g)
            offset += irrep.size
        assert np.allclose(Q @ block @ Q.T, P, atol=1e-10) and np.allclose(Q.T @ Q, np.eye(4), atol=1e-10)
    return ids, Q


def check_squeezable(group: Group) -> None:
    """Raise ValueError unless every element of ``group`` maps a 2x2 block onto itself."""
    inexact = group.inexact_elements()
    if inexact:
        raise ValueError(
            f"a 2x2 squeeze is not equivariant to {group.name}: {inexact[0]} does not map a 2x2 block onto "
            "itself, and no representation of the group on 4 channels restricts to the corner permutation; "
            "use a group of 90-degree rotations and flips (C1, C2, C4, D1, D2, D4), or no squeeze"
        )


@lru_cache(maxsize=None)
def corner_representation(group: Group):
    """escnn ``Representation`` of ``group`` permuting the 4 corners of a 2x2 block (see the module docstring)."""
    check_squeezable(group)
    ids, Q = _decompose(group)
    return Representation(group.gspace.fibergroup, f"gflows_corners_{group.name}", ids, Q, ["pointwise"])


def irreps_of(representation) -> list:
    """The escnn irreps of ``representation``, in the order of its change of basis."""
    return [representation.group.irrep(*irrep_id) for irrep_id in representation.irreps]


def corner_fields(group: Group, channels: int):
    """escnn ``FieldType`` of a squeezed C-channel image in the corner (pixel) basis: C corner fields."""
    return enn.FieldType(group.gspace, [corner_representation(group)] * channels)


def irrep_fields(group: Group, channels: int):
    """escnn ``FieldType`` of a squeezed C-channel image in the irreducible basis (what :class:`Squeeze` returns)."""
    return enn.FieldType(group.gspace, irreps_of(corner_representation(group)) * channels)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``, channel ``4c + 2a + b`` = pixel ``(2i+a, 2j+b)``; H, W even."""
    if x.dim() != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(
            f"a 2x2 squeeze needs (B, C, H, W) with even H and W (so that the grid centre is a block corner), "
            f"got {tuple(x.shape)}"
        )
    return F.pixel_unshuffle(x, 2)


class Squeeze(Flow):
    """2x2 squeeze into the irreducible basis of the corner representation: an orthogonal, volume
    preserving map ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` (log-det 0), equivariant from C scalar fields
    to :func:`irrep_fields` ``(group, C)``; exact inverse.
    """

    def __init__(self, group: Group, channels: int) -> None:
        super().__init__()
        rep = corner_representation(group)
        self.in_type = group.scalar_fields(channels)
        self.out_type = irrep_fields(group, channels)
        self.register_buffer("basis", torch.as_tensor(rep.change_of_basis, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = space_to_depth(x)
        b, c4, h, w = y.shape
        z = torch.einsum("jk,bcjhw->bckhw", self.basis.to(y.dtype), y.reshape(b, c4 // 4, 4, h, w))
        return z.reshape(b, c4, h, w), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        b, c4, h, w = z.shape
        y = torch.einsum("kj,bcjhw->bckhw", self.basis.to(z.dtype), z.reshape(b, c4 // 4, 4, h, w))
        return F.pixel_shuffle(y.reshape(b, c4, h, w), 2)


class Unsqueeze(Flow):
    """The inverse of :class:`Squeeze` as a layer: irreducible fields at H/2 x W/2 -> C scalar fields."""

    def __init__(self, group: Group, channels: int) -> None:
        super().__init__()
        self.squeeze = Squeeze(group, channels)
        self.in_type, self.out_type = self.squeeze.out_type, self.squeeze.in_type

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.squeeze.inverse(x), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.squeeze(z)[0]
