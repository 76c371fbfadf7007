r"""Field types used by the models of this book, and the width rule.

On **images** (see :meth:`gflows.groups.Group.scalar_fields` / ``regular_fields``) data channels are
scalar fields and hidden features are regular fields, whose :math:`|G|` channels the group permutes.

On **points** of the plane there is no pixel grid: a point is one vector transforming by the standard
representation :math:`A_g` (escnn's ``basespace_action``), and hidden features are regular fields of
the same group on a zero-dimensional base space. Where every :math:`A_g` is diagonal (the trivial
group, :math:`C_2`, :math:`D_1`, :math:`D_2`), the two coordinates are fields of their own
(:func:`point_coordinate_fields`), which a coupling can split; for :math:`C_N, D_N` with
:math:`N\ge 3` the plane is one irreducible field and cannot be split.

**Width rule.** A layer between :math:`F` regular fields has about :math:`F^2 |G|` free parameters
per kernel position (a :math:`|G| \times |G|` block that commutes with the group has :math:`|G|`
degrees of freedom), an ordinary layer of width :math:`W` has :math:`W^2`. Taking
:math:`F = W/\sqrt{|G|}` matches them (the rule of Weiler & Cesa 2019), so a model built with
``width=W`` has roughly the same number of parameters for every group.

>>> from gflows import groups
>>> [hidden_fields(groups.get(name), 64) for name in ("trivial", "C4", "D4", "C16")]
[64, 32, 23, 16]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._escnn import enn, gspaces
from ..groups import Group


@dataclass(frozen=True)
class Hidden:
    """The hidden features of a G-model: ``regular`` regular fields (:math:`|G|` channels each,
    permuted by the group) followed by ``trivial`` scalar fields (one invariant channel each).

    Both take pointwise non-linearities, so any mix is equivariant. :func:`gflows.models.build` chooses
    the mix that gives a model the parameter count of its trivial twin (the scalar fields fine-tune
    the count, since one regular field adds many parameters at once); for the trivial group both
    kinds are plain channels.
    """

    regular: int
    trivial: int = 0

    def __post_init__(self) -> None:
        for name in ("regular", "trivial"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Hidden.{name} must be an integer >= 0, got {value!r}")
        if self.regular + self.trivial < 1:
            raise ValueError("a hidden layer needs at least one field")

    def __len__(self) -> int:
        return self.regular + self.trivial

    def at_least(self, fields: int) -> "Hidden":
        """The same mix with regular fields added until it has ``fields`` fields in all."""
        return Hidden(max(self.regular, fields - self.trivial), self.trivial)

    def image_type(self, group: Group):
        """escnn ``FieldType`` on the pixel grid."""
        space = group.gspace
        return enn.FieldType(space, [space.regular_repr] * self.regular + [space.trivial_repr] * self.trivial)

    def point_type(self, group: Group):
        """escnn ``FieldType`` on no base space (hidden features of point models)."""
        space = _point_space(group)
        return enn.FieldType(space, [space.regular_repr] * self.regular + [space.trivial_repr] * self.trivial)


def hidden_fields(group: Group, width: int) -> int:
    """Number of regular fields that gives a hidden layer of an ordinary width ``width`` the same
    parameter count: ``round(width / sqrt(|G|))``, at least 1."""
    if int(width) < 1:
        raise ValueError(f"width must be a positive integer, got {width}")
    return max(1, round(int(width) / math.sqrt(group.order)))


def _point_space(group: Group):
    return gspaces.no_base_space(group.gspace.fibergroup)


def point_fields(group: Group):
    """escnn ``FieldType`` of one point of the plane: the standard representation :math:`A_g`."""
    return enn.FieldType(_point_space(group), [group.gspace.basespace_action])


def point_coordinate_fields(group: Group):
    """escnn ``FieldType`` of one point of the plane as its two coordinates, one 1-dimensional field each.

    The field of coordinate i transforms by :math:`g \mapsto (A_g)_{ii}` (``+1`` or ``-1``), so the type
    acts on ``(B, 2)`` exactly like :math:`A_g` (``Group.act_points``) when every :math:`A_g` is diagonal:
    the trivial group, :math:`C_2`, :math:`D_1` and :math:`D_2`. A coupling or an autoregressive flow
    can then split ``x = (x_1, x_2)`` (the classical Cartesian split).

    Raises:
        ValueError: a group with an :math:`A_g` that mixes the coordinates (every :math:`C_N, D_N`
            with :math:`N \ge 3`, whose rotations keep no line of the plane).
    """
    space = _point_space(group)
    elements = group.elements()
    matrices = [group.matrix(g) for g in elements]
    mixing = [g for g, a in zip(elements, matrices) if abs(a[0, 1]) > 1e-9 or abs(a[1, 0]) > 1e-9]
    if mixing:
        raise ValueError(
            f"{group.describe(mixing[0])} in {group.name} mixes the two coordinates of the plane, so they are "
            "not fields of their own and no Cartesian split is respected: couple the radius and the direction "
            "instead (gflows.flows.coupling.RadialCoupling / AngularCoupling, as models.build does for points)"
        )
    characters = [r for r in space.fibergroup.irreps() if r.size == 1]

    def field_of(i: int):
        signs = [round(float(a[i, i])) for a in matrices]
        return next(r for r in characters if [round(float(r(g)[0, 0])) for g in elements] == signs)

    return enn.FieldType(space, [field_of(0), field_of(1)])


def point_regular_fields(group: Group, n: int):
    """escnn ``FieldType`` of ``n`` regular fields on no base space (hidden features of point models)."""
    space = _point_space(group)
    return enn.FieldType(space, [space.regular_repr] * n)


def without_pointwise_nonlinearities(field_type) -> list:
    """Names of the representations in ``field_type`` on which a pointwise non-linearity is *not*
    equivariant (empty for trivial and regular fields, which the group only permutes)."""
    return sorted({rep.name for rep in field_type.representations if "pointwise" not in rep.supported_nonlinearities})
