r"""G-Coupling models: RealNVP-style stacks of equivariant affine couplings, for images and for points.

``build(G, (C, H, W), depth=, width=)``: ActNorm, a 2x2 squeeze into irreducible fields (groups of
90° rotations and flips, even sizes), ``depth`` couplings whose split alternates between the even and
the odd fields, and the inverse squeeze (:mod:`gflows.models.images`). ``split="checkerboard"`` gives RealNVP's
pixel checkerboard instead (no squeeze; refused where the group does not respect it).
``build(G, (2,), ...)``: couplings of the radius and the direction of a point, alternating
(:class:`~gflows.flows.coupling.RadialCoupling`, :class:`~gflows.flows.coupling.AngularCoupling`).

``G = groups.get("trivial")`` gives the ordinary RealNVP twin of the same code; ``hidden`` (a
:class:`~gflows.nn.Hidden`, default ``hidden_fields(G, width)`` regular fields) the hidden fields of
the conditioners, which :func:`gflows.models.build` chooses to match the twin's parameter count.
"""

from __future__ import annotations

from typing import Optional

from .._escnn import enn
from ..flows import FlowModel, Sequential
from ..flows.coupling import AffineCoupling, AngularCoupling, Checkerboard, FieldSplit, RadialCoupling
from ..groups import Group
from ..nn import Hidden, hidden_fields, point_fields
from ..nn.conditioners import EquivariantConditioner
from .images import image_stack

SPLITS = ("fields", "checkerboard")


def image_flow(G: Group, data_shape: tuple, *, depth: int = 8, width: int = 64, hidden: Optional[Hidden] = None,
               hidden_layers: int = 1, kernel_size: int = 3, split: str = "fields", squeeze: Optional[bool] = None) -> Sequential:
    """The coupling stack for images ``(C, H, W)`` (module docstring); equivariant to G on exact elements."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    hidden = (hidden or Hidden(hidden_fields(G, width))).image_type(G)

    def coupling(field_type, i):
        if split == "checkerboard":
            partition = Checkerboard(field_type, G, parity=i)
            partition.check_respected(*data_shape[1:])   # at build time, not at the first forward pass
        else:
            partition = FieldSplit(field_type, parity=i)
        conditioner = EquivariantConditioner(partition.in_type, partition.t_type, partition.n_scales, hidden,
                                             hidden_layers=hidden_layers, kernel_size=kernel_size)
        return AffineCoupling(partition, conditioner)

    return image_stack(G, data_shape, depth, coupling, squeeze=False if split == "checkerboard" else squeeze)


def point_flow(G: Group, *, depth: int = 4, width: int = 64, hidden: Optional[Hidden] = None, hidden_layers: int = 1,
               harmonics: int = 2, bumps: int = 4) -> Sequential:
    """Alternating radial (``bumps`` sigmoids in log r) and angular (``harmonics`` harmonics) couplings of
    points ``(B, 2)``; equivariant to every element of G, identity to first order at the origin."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    standard = point_fields(G)
    space = standard.gspace
    scalars = enn.FieldType(space, [space.trivial_repr])
    direction_net = dict(hidden_type=(hidden or Hidden(hidden_fields(G, width))).point_type(G), hidden_layers=hidden_layers)
    radius_net = dict(hidden_type=enn.FieldType(space, [space.trivial_repr] * width), hidden_layers=hidden_layers)
    layers = []
    for i in range(depth):
        if i % 2 == 0:
            layers.append(RadialCoupling(EquivariantConditioner(standard, None, bumps, **direction_net), bumps))
        else:
            layers.append(AngularCoupling(G, EquivariantConditioner(scalars, None, 2 * harmonics + 1, **radius_net), harmonics))
    return Sequential(layers)


def build(G: Group, data_shape: tuple, **hparams) -> FlowModel:
    """A G-Coupling :class:`~gflows.flows.FlowModel` for images ``(C, H, W)`` or points ``(2,)``.

    ``hparams``: ``depth``, ``width``, ``hidden_layers`` and, for images, ``kernel_size``, ``split``,
    ``squeeze``; for points, ``harmonics`` and ``bumps``.
    """
    data_shape = tuple(data_shape)
    flow = point_flow(G, **hparams) if data_shape == (2,) else image_flow(G, data_shape, **hparams)
    return FlowModel(flow, data_shape, G)
