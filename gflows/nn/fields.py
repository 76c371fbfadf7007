r"""Field types used by the models of this book, and the width rule.

On **images** (see :meth:`gflows.groups.Group.scalar_fields` / ``regular_fields``) data channels are
scalar fields and hidden features are regular fields, whose :math:`|G|` channels the group permutes.

On **points** of the plane there is no pixel grid: a point is one vector transforming by the standard
representation :math:`A_g` (escnn's ``basespace_action``), and hidden features are regular fields of
the same group on a zero-dimensional base space.

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

from .._escnn import enn, gspaces
from ..groups import Group


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


def point_regular_fields(group: Group, n: int):
    """escnn ``FieldType`` of ``n`` regular fields on no base space (hidden features of point models)."""
    space = _point_space(group)
    return enn.FieldType(space, [space.regular_repr] * n)


def without_pointwise_nonlinearities(field_type) -> list:
    """Names of the representations in ``field_type`` on which a pointwise non-linearity is *not*
    equivariant (empty for trivial and regular fields, which the group only permutes)."""
    return sorted({rep.name for rep in field_type.representations if "pointwise" not in rep.supported_nonlinearities})
