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
    n = matrices[0][1].shape[0]
    rows = [np.kron(np.eye(d), rho) - np.kron(irrep(g).T, np.eye(n)) for g, rho in matrices]
    _, singular, vt = np.linalg.svd(np.concatenate(rows))
    rank = int((singular > 1e-9).sum())
    return vt[rank:].T


def _null_space(a: np.ndarray) -> np.ndarray:
    _, singular, vt = np.linalg.svd(a)
    rank = int((singular > 1e-9).sum())
    return vt[rank:].T


def _copies(basis: np.ndarray, n: int, d: int) -> List[np.ndarray]:
    r"""Isometric intertwiners ``n x d`` with mutually orthogonal images, as many as the multiplicity.

    Any non-zero intertwiner M from an irrep has :math:`M^\top M = aI` (it commutes with the irrep
    and is symmetric positive), so M/sqrt(a) is an isometric copy; the intertwiners whose image is
    orthogonal to it form the next, smaller, intertwiner space (Gram-Schmidt over copies).
    """
    copies = []
    while basis.shape[1]:
        M = basis[:, 0].reshape(d, n).T
        gram = M.T @ M
        assert np.allclose(gram, gram[0, 0] * np.eye(d), atol=1e-9)
        M = M / np.sqrt(gram[0, 0])
        copies.append(M)
        overlaps = np.stack([(M.T @ basis[:, i].reshape(d, n).T).ravel() for i in range(basis.shape[1])], axis=1)
        basis = basis @ _null_space(overlaps)
        basis = np.linalg.qr(basis)[0] if basis.shape[1] else basis
    return copies


def decompose(group: Group, matrices: List[Tuple[object, np.ndarray]]) -> Tuple[list, np.ndarray]:
    r"""Irreps (escnn ids) and an orthogonal Q with :math:`\rho(g) = Q\,(\bigoplus_i \psi_i(g))\,Q^\top`
    for an orthogonal representation given as ``[(element, matrix)]`` over every element of ``group``
    (every multiplicity; the decomposition is checked exactly)."""
    fiber = group.gspace.fibergroup
    n = matrices[0][1].shape[0]
    ids, columns = [], []
    for irrep in fiber.irreps():
        copies = _copies(_intertwiners(matrices, irrep), n, irrep.size)
        ids += [irrep.id] * len(copies)
        columns += copies
    Q = np.concatenate(columns, axis=1)
    for g, rho in matrices:
        block = np.zeros((n, n))
        offset = 0
        for irrep_id in ids:
            irrep = fiber.irrep(*irrep_id)
            block[offset:offset + irrep.size, offset:offset + irrep.size] = irrep(g)
            offset += irrep.size
        assert offset == n and np.allclose(Q @ block @ Q.T, rho, atol=1e-9) and np.allclose(Q.T @ Q, np.eye(n), atol=1e-9)
    return ids, Q


def _decompose(group: Group) -> Tuple[list, np.ndarray]:
    """Irreps (escnn ids) and an orthogonal Q with P(g) = Q (direct sum of irreps)(g) Q^T."""
    return decompose(group, [(g, corner_permutation(group.matrix(g))) for g in group.gspace.fibergroup.elements])


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


# ----------------------------------------------------------------------- squeezes in the pixel basis
def _permutation(matrix: np.ndarray) -> Tuple[int, ...]:
    """The permutation ``p`` of a permutation matrix: ``matrix[p[j], j] = 1``; ValueError otherwise."""
    matrix = np.asarray(matrix)
    if not (np.allclose(np.abs(matrix), matrix, atol=1e-9) and np.allclose(matrix.sum(0), 1) and
            np.allclose(matrix.sum(1), 1) and np.all((np.abs(matrix) < 1e-9) | (np.abs(matrix - 1) < 1e-9))):
        raise ValueError("a pixel-basis squeeze needs fields whose group elements act by permutation matrices "
                         "(scalar, regular or permutation fields)")
    return tuple(int(i) for i in np.argmax(matrix, axis=0))


@lru_cache(maxsize=None)
def permutation_representation(group: Group, permutations: Tuple[Tuple[int, ...], ...]):
    """escnn ``Representation`` of ``group`` acting by permutation matrices: element ``k`` of
    ``group.gspace.fibergroup.elements`` sends basis vector ``j`` to ``permutations[k][j]``.

    Its change of basis splits it into irreps (:func:`decompose`); in its own basis every element is a
    permutation, so pointwise non-linearities and a per-field shift are equivariant on it.
    """
    elements = list(group.gspace.fibergroup.elements)
    n = len(permutations[0])
    matrices = []
    for g, permutation in zip(elements, permutations):
        matrix = np.zeros((n, n))
        matrix[list(permutation), list(range(n))] = 1.0
        matrices.append((g, matrix))
    ids, Q = decompose(group, matrices)
    name = f"gflows_permutation_{group.name}_{abs(hash(permutations)):x}"
    return Representation(group.gspace.fibergroup, name, ids, Q, ["pointwise"])


def squeezed_fields(group: Group, field_type):
    """What a 2x2 squeeze in the pixel basis makes of ``field_type`` (permutation fields of the
    squeezable ``group``): ``(out_type, order)``.

    After :func:`space_to_depth`, channel ``4j + k`` holds corner k of input channel j, and an element
    g sends it to channel ``4 p_g(j) + pi_g(k)`` (p_g its permutation of the input channels, pi_g of the
    corners). The orbits of these permutations are the output fields; ``order`` lists the channels
    orbit by orbit, and each orbit transforms by the permutation representation of the group on it.
    """
    check_squeezable(group)
    gspace = field_type.gspace
    elements = list(gspace.fibergroup.elements)
    channel_maps = [_permutation(field_type.representation(g)) for g in elements]
    corner_maps = [_permutation(corner_permutation(group.matrix(g))) for g in elements]
    size = 4 * field_type.size
    moves = [[4 * p[j // 4] + c[j % 4] for j in range(size)] for p, c in zip(channel_maps, corner_maps)]
    seen, orbits = set(), []
    for start in range(size):
        if start not in seen:
            orbit = sorted({move[start] for move in moves})
            seen.update(orbit)
            orbits.append(orbit)
    representations = []
    for orbit in orbits:
        position = {channel: i for i, channel in enumerate(orbit)}
        local = tuple(tuple(position[move[channel]] for channel in orbit) for move in moves)
        representations.append(permutation_representation(group, local))
    order = [channel for orbit in orbits for channel in orbit]
    return enn.FieldType(gspace, representations), order


class PixelSqueeze(Flow):
    """2x2 squeeze of permutation fields that stays in the pixel basis: ``space_to_depth`` followed by a
    fixed reordering of the channels into orbit fields (:func:`squeezed_fields`). A permutation of the
    numbers, so volume preserving (log-det 0) with an exact inverse; equivariant from ``in_type`` to
    ``out_type``. Squeezed again, its orbit fields split into further orbit fields: the multiscale
    G-Residual flow (:mod:`gflows.models.residual`) squeezes this way at every scale.
    Shapes ``(B, C, H, W) -> (B, 4C, H/2, W/2)``, H and W even.
    """

    def __init__(self, group: Group, in_type) -> None:
        super().__init__()
        self.in_type = in_type
        self.out_type, order = squeezed_fields(group, in_type)
        field_of_channel = [i for i, rep in enumerate(in_type.representations) for _ in range(rep.size)]
        starts = np.cumsum([0] + [rep.size for rep in self.out_type.representations])[:-1]
        #: for each output field, the input field it was cut from (a squeeze never mixes fields)
        self.parents = [field_of_channel[order[start] // 4] for start in starts]
        self.register_buffer("order", torch.tensor(order), persistent=False)
        self.register_buffer("unorder", torch.argsort(torch.tensor(order)), persistent=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return space_to_depth(x)[:, self.order], x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(z[:, self.unorder], 2)


class PixelUnsqueeze(Flow):
    """The inverse of a :class:`PixelSqueeze` as a layer: its orbit fields back to ``in_type`` at twice the size."""

    def __init__(self, squeeze: PixelSqueeze) -> None:
        super().__init__()
        self.squeeze = squeeze
        self.in_type, self.out_type = squeeze.out_type, squeeze.in_type

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.squeeze.inverse(x), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.squeeze(z)[0]
