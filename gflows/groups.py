r"""Symmetry groups of the plane and their actions on images and on points.

A group is named by a short string:

* ``"trivial"`` (and its alias ``"C1"``): no symmetry, the baseline of every model;
* ``"C2"`` .. ``"C16"``: the cyclic group :math:`C_N` of rotations by multiples of :math:`2\pi/N`;
* ``"D1"`` .. ``"D16"``: the dihedral group :math:`D_N` (the rotations of :math:`C_N` and
  :math:`N` reflections), of order :math:`2N`.

Each :class:`Group` wraps an escnn ``GSpace`` (the group acting on :math:`\mathbb{R}^2`), so
escnn's field types and steerable layers can be built from it, but it exposes plain tensors.

Two actions matter in this book.

* On **points** of the plane, an element :math:`g` acts by its standard representation: the
  :math:`2\times 2` orthogonal matrix :math:`A_g` (``Group.matrix``), ``x -> x @ A_g.T``.
* On **images** (feature fields sampled on a square pixel grid), :math:`g` moves the pixels and
  transforms the channels: :math:`(g\cdot f)(p) = \rho(g)\, f(A_g^{-1} p)` about the image centre.
  Data channels are scalar (trivial) fields, so :math:`\rho(g)=1`; hidden features of steerable
  networks use other field types (e.g. regular fields, whose channels are permuted).

An element acts *exactly* on a pixel grid when :math:`A_g` is a signed permutation matrix, i.e. a
multiple of 90 degrees or a reflection about an axis at a multiple of 45 degrees. Those elements are
applied with ``torch.rot90`` / ``torch.flip`` (exact, differentiable, on any device). Every other
element is applied by escnn's interpolation, which is only approximately an action: tests and the
book measure equivariance on ``exact_elements()``.

>>> G = get("D4")
>>> G.order, len(G.exact_elements())
(8, 8)
>>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
>>> r = G.elements()[1]                 # rotation by 90 degrees, counter-clockwise
>>> G.describe(r)
'rotation by 90°'
>>> G.act_image(x, r)[0, 0]
tensor([[1., 3.],
        [0., 2.]])
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import List, Optional, Sequence

import numpy as np
import torch

from ._escnn import GroupElement, enn, gspaces

MAX_ORDER = 16
ALLOWED_NAMES = "'trivial', 'C1'..'C16', 'D1'..'D16'"

# The 90-degree counter-clockwise rotation and the reflection X -> -X of the plane; every exact
# element is R^k or R^k F (k = 0..3).
_ROTATION_90 = np.array([[0, -1], [1, 0]])
_FLIP_X = np.array([[-1, 0], [0, 1]])


class Group:
    """A finite group acting on the plane, with its actions on points and on pixel grids.

    Build one with :func:`get`; ``name`` is the canonical short name (e.g. ``"D4"``).
    ``gspace`` is the escnn ``GSpace`` for building field types and steerable layers.
    """

    def __init__(self, name: str, gspace) -> None:
        self.name = name
        self.gspace = gspace
        self._elements: List[GroupElement] = list(gspace.fibergroup.elements)
        self._matrices = [np.asarray(gspace.basespace_action(g), dtype=np.float64) for g in self._elements]

    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"

    # ----------------------------------------------------------------------------- elements
    @property
    def order(self) -> int:
        """Number of elements, :math:`|G|`."""
        return len(self._elements)

    @property
    def identity(self) -> GroupElement:
        return self.gspace.fibergroup.identity

    def elements(self) -> List[GroupElement]:
        """All elements, identity first (escnn ``GroupElement`` objects; compose with ``@``)."""
        return list(self._elements)

    def exact_elements(self) -> List[GroupElement]:
        """The elements that act exactly on a square pixel grid (signed-permutation matrices)."""
        return [g for g in self._elements if self.is_exact(g)]

    def inexact_elements(self) -> List[str]:
        """Descriptions of the elements that move pixel centres off the grid (e.g. ``"rotation by 45°"``);
        empty for C1, C2, C4, D1, D2, D4."""
        return [self.describe(g) for g in self._elements if not self.is_exact(g)]

    def matrix(self, g: GroupElement) -> np.ndarray:
        """The 2x2 orthogonal matrix A_g by which ``g`` acts on the plane (float64)."""
        return self._matrices[self.index(g)].copy()

    def is_exact(self, g: GroupElement) -> bool:
        """True when A_g is a signed permutation, so that ``g`` maps pixel centres to pixel centres."""
        return is_signed_permutation(self.matrix(g))

    def reflection_axis(self, g: GroupElement) -> Optional[float]:
        """For a reflection, the angle (radians) of the line it fixes; ``None`` for a rotation.

        A reflection about the line at angle t has matrix [[cos 2t, sin 2t], [sin 2t, -cos 2t]].
        """
        a = self.matrix(g)
        return math.atan2(a[1, 0], a[0, 0]) / 2 if np.linalg.det(a) < 0 else None

    def describe(self, g: GroupElement) -> str:
        """A human-readable name: ``'identity'``, ``'rotation by 90°'``, ``'reflection (axis at 45°)'``."""
        axis = self.reflection_axis(g)
        if axis is not None:
            return f"reflection (axis at {round(math.degrees(axis), 1) % 180:g}°)"
        a = self.matrix(g)
        degrees = round(math.degrees(math.atan2(a[1, 0], a[0, 0])), 1) % 360
        return "identity" if degrees == 0 else f"rotation by {degrees:g}°"

    def index(self, g: GroupElement) -> int:
        """Position of ``g`` in ``elements()``; ValueError if ``g`` is not an element of this group."""
        if not isinstance(g, GroupElement) or g.group != self.gspace.fibergroup:
            raise ValueError(
                f"{g!r} is not an element of {self.name}; use one of {self.name}.elements()"
            )
        return self._elements.index(g)

    # ------------------------------------------------------------------------------ actions
    def act_points(self, x: torch.Tensor, g: GroupElement) -> torch.Tensor:
        """Apply g to points of the plane by the standard representation.

        Args:
            x: ``(..., 2)`` tensor of points.
        Returns:
            ``(..., 2)`` tensor ``x @ A_g.T``; an orthogonal map, so norms are preserved.
        """
        if not torch.is_tensor(x) or x.dim() < 1 or x.shape[-1] != 2:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"act_points expects a tensor of points of shape (..., 2), got {shape}")
        a = torch.as_tensor(self.matrix(g), dtype=x.dtype, device=x.device)
        return x @ a.T

    def act_image(self, x: torch.Tensor, g: GroupElement, field_type=None) -> torch.Tensor:
        """Apply g to a batch of feature fields on a pixel grid: (g.f)(p) = rho(g) f(A_g^{-1} p).

        Args:
            x: ``(B, C, H, W)`` tensor.
            g: an element of this group.
            field_type: escnn ``FieldType`` of this group's gspace saying how the C channels
                transform (``rho``); ``None`` means C scalar fields (image channels), rho = 1.
        Returns:
            ``(B, C, H, W)`` tensor. Exact (``rot90``/``flip`` and a channel permutation or signed
            combination) for ``is_exact(g)``; otherwise escnn's interpolation, approximate and not
            differentiable.
        Raises:
            ValueError: wrong tensor rank, channel count not matching ``field_type``, or an element
                that does not map the H x W grid onto itself (a rotation of a non-square image).
        """
        if not torch.is_tensor(x) or x.dim() != 4:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"act_image expects a (B, C, H, W) tensor, got {shape}")
        a = self.matrix(g)
        height, width = x.shape[-2:]
        if height != width and not np.allclose(np.abs(a), np.eye(2)):
            raise ValueError(
                f"{self.describe(g)} does not map a {height}x{width} grid onto itself: "
                f"{self.name} needs square images (H == W)"
            )
        if field_type is not None and field_type.size != x.shape[1]:
            raise ValueError(f"field type has {field_type.size} channels but x has {x.shape[1]}")
        if not self.is_exact(g):
            return self._interpolated_action(x, g, field_type)
        moved = move_pixels(x, a)
        if field_type is None or _is_trivial(field_type):
            return moved
        rho = field_type.representation(g)
        rounded = np.round(rho)
        if np.allclose(rho, rounded, atol=1e-9):  # a (signed) permutation computed through a change of basis:
            rho = rounded                          # its exact entries make the action exact (no round-off)
        return torch.einsum("oc,bchw->bohw", torch.as_tensor(rho, dtype=x.dtype, device=x.device), moved)

    def _interpolated_action(self, x: torch.Tensor, g: GroupElement, field_type) -> torch.Tensor:
        if field_type is None:
            field_type = self.scalar_fields(x.shape[1])
        moved = field_type.transform(x.detach().cpu(), g)
        return torch.as_tensor(moved, dtype=x.dtype).to(x.device)

    # -------------------------------------------------------------------------- field types
    def scalar_fields(self, n: int):
        """escnn ``FieldType`` of n scalar fields (how image channels transform)."""
        return enn.FieldType(self.gspace, [self.gspace.trivial_repr] * n)

    def regular_fields(self, n: int):
        """escnn ``FieldType`` of n regular fields (:math:`n|G|` channels, permuted by the group)."""
        return enn.FieldType(self.gspace, [self.gspace.regular_repr] * n)

    def check_image_shape(self, data_shape: Sequence[int]) -> None:
        """Raise ValueError unless (C, H, W) is an image shape this group acts on.

        Every group other than the trivial one and D1 (a single flip) needs square images.
        """
        if len(data_shape) != 3 or min(data_shape) < 1:
            raise ValueError(f"an image shape is (C, H, W) with positive sizes, got {tuple(data_shape)}")
        _, height, width = data_shape
        if height != width and any(not np.allclose(np.abs(a), np.eye(2)) for a in self._matrices):
            raise ValueError(f"{self.name} rotates images, so it needs H == W; got {height}x{width}")


def _is_trivial(field_type) -> bool:
    return all(rep.is_trivial() for rep in field_type.representations)


def is_signed_permutation(a: np.ndarray) -> bool:
    """True when every entry of the orthogonal matrix ``a`` is 0 or +-1 (it maps the pixel grid onto itself)."""
    entries = np.abs(a)
    return bool(np.all(np.isclose(entries, 0.0, atol=1e-9) | np.isclose(entries, 1.0, atol=1e-9)))


def move_pixels(x: torch.Tensor, a: np.ndarray) -> torch.Tensor:
    """f(A^{-1} p) for a signed-permutation matrix A: A = R^k F^s with R the 90° rotation, F: X -> -X.

    Rows index -Y and columns index X (escnn's convention), so R acts as ``torch.rot90(x, 1)`` on the
    last two dims and F as ``torch.flip`` of the columns.
    """
    flipped = np.linalg.det(a) < 0
    rotation = a @ _FLIP_X if flipped else a
    k = int(round(math.atan2(rotation[1, 0], rotation[0, 0]) / (math.pi / 2))) % 4
    if flipped:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


@lru_cache(maxsize=None)
def _build(name: str) -> Group:
    if name in ("trivial", "C1"):
        return Group(name, gspaces.trivialOnR2())
    kind, n = name[0], int(name[1:])
    if kind == "C":
        return Group(name, gspaces.rot2dOnR2(n))
    return Group(name, gspaces.flip2dOnR2() if n == 1 else gspaces.flipRot2dOnR2(n))


def get(name: str) -> Group:
    """The group called ``name``: 'trivial', 'C1'..'C16' or 'D1'..'D16' (case-insensitive).

    Raises:
        ValueError: for any other name, listing the allowed ones.
    """
    if not isinstance(name, str):
        raise ValueError(f"a group is named by a string ({ALLOWED_NAMES}), got {name!r}")
    canonical = name.strip()
    canonical = "trivial" if canonical.lower() == "trivial" else canonical.upper()
    match = re.fullmatch(r"([CD])(\d+)", canonical)
    if canonical != "trivial" and not (match and 1 <= int(match.group(2)) <= MAX_ORDER):
        raise ValueError(f"unknown group {name!r}; choose one of {ALLOWED_NAMES}")
    return _build(canonical)


def names() -> List[str]:
    """Every group name that :func:`get` accepts, in a sensible order."""
    return ["trivial"] + [f"{kind}{n}" for kind in "CD" for n in range(1, MAX_ORDER + 1)]

