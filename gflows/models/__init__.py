"""Full architectures: image flows and toy flows on points of the plane, each with its ordinary twin.

:func:`build` is the one entry point::

    model = models.build("residual", group="D4", data_shape=(1, 28, 28), depth=4, width=32)

``group="trivial"`` gives the non-equivariant twin of the same code; hidden widths follow
:func:`gflows.nn.hidden_fields`, so parameter counts stay comparable across groups.
"""

from __future__ import annotations

from typing import Sequence

from ..flows import FlowModel
from ..groups import Group, get
from . import autoregressive, coupling, residual

KINDS = ("residual", "coupling", "iaf")


def build(kind: str, *, group: "str | Group" = "trivial", data_shape: Sequence[int], **hparams) -> FlowModel:
    """Build a :class:`~gflows.flows.FlowModel` of family ``kind`` for ``data_shape`` equivariant to ``group``.

    Args:
        kind: one of :data:`KINDS`.
        group: a group name (``"trivial"``, ``"C4"``, ``"D4"``, ...) or :class:`~gflows.groups.Group`.
        data_shape: ``(C, H, W)`` for images or ``(2,)`` for points in the plane.
        **hparams: ``depth=`` and ``width=`` for every kind, plus the kind's own options (see the
            ``image_flow`` / ``point_flow`` functions of its module).
    """
    G = get(group) if isinstance(group, str) else group
    data_shape = tuple(int(s) for s in data_shape)
    if kind == "residual":
        return residual.build(G, data_shape, **hparams)
    if kind == "coupling":
        return coupling.build(G, data_shape, **hparams)
    if kind == "iaf":
        return autoregressive.build(G, data_shape, **hparams)
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
