r"""G-IAF models: stacks of autoregressive affine layers over the fields of an image.

``build(G, (C, H, W), depth=, width=)``: the skeleton of :mod:`gflows.models.images` (ActNorm, 2x2 squeeze into
irreducible fields where the group and the size allow it) around ``depth``
:class:`~gflows.flows.autoregressive.AutoregressiveAffine` layers, the field order reversed from
one layer to the next, each with a field-masked equivariant conditioner. ``fast="inverse"`` (the
default) is IAF, ``fast="forward"`` MAF.

Points ``(2,)``: a point has one field (the standard representation), and the only G-respecting
decomposition is into its invariant radius and its direction (chapter 4). Autoregression over these
two variables *is* a coupling, so the points model is :func:`.coupling.point_flow`.

``G = groups.get("trivial")`` gives the ordinary IAF / MAF over channels, the same code.
"""

from __future__ import annotations

from typing import Optional

from ..flows import FlowModel, Sequential
from ..flows.autoregressive import AutoregressiveAffine
from ..groups import Group
from ..nn import Hidden, hidden_fields
from ..nn.conditioners import MaskedConditioner
from .coupling import point_flow
from .images import image_stack


def image_flow(G: Group, data_shape: tuple, *, depth: int = 8, width: int = 64, hidden: Optional[Hidden] = None,
               hidden_layers: int = 1, kernel_size: int = 3, fast: str = "inverse", squeeze: Optional[bool] = None) -> Sequential:
    """The autoregressive stack for images ``(C, H, W)``; equivariant to G on exact elements."""

    def layer(field_type, i):
        n = len(field_type)
        inner = (hidden or Hidden(hidden_fields(G, width))).at_least(n - 1).image_type(G)
        order = list(range(n)) if i % 2 == 0 else list(range(n))[::-1]
        conditioner = MaskedConditioner(field_type, inner, order, hidden_layers=hidden_layers, kernel_size=kernel_size)
        return AutoregressiveAffine(field_type, conditioner, fast=fast)

    return image_stack(G, data_shape, depth, layer, squeeze=squeeze)


def build(G: Group, data_shape: tuple, **hparams) -> FlowModel:
    """A G-IAF :class:`~gflows.flows.FlowModel` for images ``(C, H, W)`` or points ``(2,)`` (then a coupling
    of radius and direction, see the module docstring). ``hparams``: ``depth``, ``width``,
    ``hidden_layers``; for images ``kernel_size``, ``fast``, ``squeeze``; for points ``harmonics`` and ``bumps``."""
    data_shape = tuple(data_shape)
    flow = point_flow(G, **hparams) if data_shape == (2,) else image_flow(G, data_shape, **hparams)
    return FlowModel(flow, data_shape, G)
