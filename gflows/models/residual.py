r"""G-Residual flow models for images and for points of the plane.

**Images** ``(C, H, W)``, multiscale by default (as the Residual Flow of Chen et al. 2019)::

    Logit -> ActNorm -> { PixelSqueeze -> [ResidualBlock -> ActNorm] x depth } x squeezes -> unsqueezes

Every :class:`~gflows.flows.squeeze.PixelSqueeze` cuts the state into 2x2 blocks and stacks their
pixels as channels, in the pixel basis: each field becomes the orbit fields of the corner
permutation (one regular field of 4 channels for :math:`C_4`, a 4-channel quotient field for
:math:`D_4`, then orbits of 4 and 8 channels, ...). A residual branch maps the state's fields to
themselves through ``hidden`` fields,

.. math:: g = \mathrm{conv}_{3\times3}(\text{state} \to \text{hidden}) \circ \mathrm{LipSwish}
          \circ \mathrm{conv}_{1\times1}(\text{hidden} \to \text{hidden}) \circ \mathrm{LipSwish} \circ \mathrm{conv}_{3\times3}(\text{hidden} \to \text{state})

(read right to left), every convolution norm-bounded by ``coeff``, so Lip(g) <= coeff^3 < 1. With
``factor_out=True`` the second half of the fields (by channels) stops changing after each scale but
the last (:class:`~gflows.flows.multiscale.OnFields`). The squeezes are undone at the end, so the
latent has the data's layout. ``squeezes=0`` is the full-resolution flow of the paper's code, whose
branches end in a convolution into the C scalar data channels: a narrow bottleneck for one-channel
images, where the :math:`D_4`-invariant 3x3 filters have only three free numbers.

Groups with elements that do not map a 2x2 block onto itself (:math:`C_8`, :math:`D_8`, ...) have no
equivariant squeeze: for them the default is full resolution, and ``squeezes >= 1`` is refused.

**Evaluation** uses :class:`~gflows.flows.logdet.MovingProbeSeries`: a deterministic, exactly
invariant log-determinant (a probe that moves with the input); training the unbiased Russian roulette.

**Points** ``(2,)``: the same blocks with equivariant linear maps between the standard representation
of the plane and the hidden fields (3 layers, LipSwish between), and :class:`Exact` log-dets (D = 2).

``hidden`` defaults to ``hidden_fields(G, width)`` regular fields; :func:`gflows.models.build` instead
chooses it so that the model has its trivial twin's parameter count.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np
from torch import nn

from ..flows import ActNorm, FlowModel, Logit, Sequential
from ..flows.logdet import Exact, MovingProbeSeries, RussianRoulette
from ..flows.multiscale import OnFields, sub_type
from ..flows.residual import ResidualBlock
from ..flows.squeeze import PixelSqueeze, PixelUnsqueeze, check_squeezable
from ..groups import Group
from ..nn import Hidden, LipSwish, LipschitzConv, LipschitzLinear, hidden_fields, point_fields

#: Squeezes when ``squeezes=None``: as many as the size allows, at most this many.
DEFAULT_SQUEEZES = 2


def _hidden(G: Group, hidden: Union[Hidden, int, None], width: int) -> Hidden:
    if hidden is None:
        return Hidden(hidden_fields(G, width))
    return Hidden(hidden) if isinstance(hidden, int) else hidden


def image_branch(G: Group, state: Union[int, object], hidden: Union[Hidden, int], *, coeff: float = 0.98) -> nn.Sequential:
    """Residual branch ``(B, C, H, W) -> (B, C, H, W)``: equivariant to G, Lip <= coeff^3.

    ``state``: the escnn ``FieldType`` of the input (and output), or an int C for C scalar fields;
    ``hidden``: a :class:`~gflows.nn.Hidden` or a number of regular fields."""
    state = G.scalar_fields(state) if isinstance(state, int) else state
    inner = (Hidden(hidden) if isinstance(hidden, int) else hidden).image_type(G)
    return nn.Sequential(
        LipschitzConv(state, inner, 3, coeff=coeff),
        LipSwish(inner),
        LipschitzConv(inner, inner, 1, coeff=coeff),
        LipSwish(inner),
        LipschitzConv(inner, state, 3, coeff=coeff),
    )


def point_branch(G: Group, hidden: Union[Hidden, int], *, coeff: float = 0.9) -> nn.Sequential:
    """Residual branch ``(B, 2) -> (B, 2)`` on the standard representation: equivariant to G, Lip <= coeff^3."""
    plane, inner = point_fields(G), (Hidden(hidden) if isinstance(hidden, int) else hidden).point_type(G)
    return nn.Sequential(
        LipschitzLinear(plane, inner, coeff=coeff),
        LipSwish(inner),
        LipschitzLinear(inner, inner, coeff=coeff),
        LipSwish(inner),
        LipschitzLinear(inner, plane, coeff=coeff),
    )


def _fixes_constant_vector(field_type) -> bool:
    """True when every rho(g) maps the all-ones vector to itself (then ActNorm may shift)."""
    ones = np.ones(field_type.size)
    return all(np.allclose(field_type.representation(g) @ ones, ones) for g in field_type.gspace.fibergroup.elements)


def possible_squeezes(G: Group, data_shape: Sequence[int]) -> int:
    """How many 2x2 squeezes ``(C, H, W)`` allows: H and W halve while they are even; 0 for groups
    with elements that do not map a 2x2 block onto itself."""
    if G.inexact_elements():
        return 0
    _, height, width = data_shape
    count = 0
    while height % 2 == 0 and width % 2 == 0:
        height, width, count = height // 2, width // 2, count + 1
    return count


def _factored(field_type, active: List[int]) -> List[int]:
    """The first fields of ``active`` holding about half of its channels (at least one field)."""
    sizes = [field_type.representations[i].size for i in active]
    kept, total = [], 0
    for field, size in zip(active, sizes):
        if kept and total + size > sum(sizes) / 2:
            break
        kept.append(field)
        total += size
    return kept


def image_flow(
    G: Group,
    data_shape: Sequence[int],
    *,
    depth: int = 4,
    width: int = 64,
    hidden: Optional[Hidden] = None,
    squeezes: Optional[int] = None,
    factor_out: bool = False,
    coeff: float = 0.98,
    logit_alpha: Optional[float] = 0.05,
    eval_terms: int = 20,
    train_estimator=RussianRoulette(),
    eval_estimator=None,
) -> FlowModel:
    """G-Residual flow on images ``(B, C, H, W)`` in [0, 1] (module docstring).

    Args:
        depth: residual blocks at each scale (``max(1, squeezes)`` scales).
        width: the trivial twin's hidden channels; ``hidden`` (default ``hidden_fields(G, width)``
            regular fields) says the hidden fields of this model.
        squeezes: 2x2 squeezes (scales); ``None``: as many as the size allows, at most
            :data:`DEFAULT_SQUEEZES`; 0: full resolution.
        factor_out: stop transforming half of the fields after every scale but the last.
        coeff: bound on each convolution's operator norm.
        logit_alpha: the first layer's logit squeeze (``None``: no logit).
        eval_terms: terms of the evaluation series (:class:`~gflows.flows.logdet.MovingProbeSeries`),
            unless ``eval_estimator`` is given.
    Equivariant to G on its exact elements, hence ``log_prob`` is G-invariant (exactly in evaluation
    mode and with :class:`Exact` log-dets, in distribution with the training estimator); invertible
    because every residual branch has Lip <= coeff^3 < 1.
    """
    channels = data_shape[0]
    hidden = _hidden(G, hidden, width)
    available = possible_squeezes(G, data_shape)
    if squeezes is None:
        squeezes = min(DEFAULT_SQUEEZES, available)
    elif squeezes > available:
        check_squeezable(G)
        raise ValueError(f"{tuple(data_shape)} allows {available} 2x2 squeezes (H and W must stay even), not {squeezes}")
    layers = [Logit(logit_alpha)] if logit_alpha is not None else []
    layers.append(ActNorm(channels))
    state = G.scalar_fields(channels)
    active = list(range(channels))
    squeezed = []
    for scale in range(max(1, squeezes)):
        if squeezes:
            squeeze = PixelSqueeze(G, state)
            active = [i for i, parent in enumerate(squeeze.parents) if parent in set(active)]
            state = squeeze.out_type
            layers.append(squeeze)
            squeezed.append(squeeze)
        part = sub_type(state, active)
        shift = _fixes_constant_vector(part)
        for number in range(scale * depth, (scale + 1) * depth):   # number: the block's, seeds its probes
            block = ResidualBlock(image_branch(G, part, hidden, coeff=coeff), train_estimator=train_estimator,
                                  eval_estimator=eval_estimator or MovingProbeSeries(G, part, n_terms=eval_terms, seed=number))
            for layer in (block, ActNorm.for_fields(part, shift=shift)):
                layers.append(layer if len(active) == len(state) else OnFields(layer, state, active))
        if factor_out and scale < max(1, squeezes) - 1 and len(active) > 1:
            active = _factored(state, active)
    layers += [PixelUnsqueeze(squeeze) for squeeze in reversed(squeezed)]
    return FlowModel(Sequential(layers), data_shape, G)


def point_flow(G: Group, *, depth: int = 8, width: int = 64, hidden: Optional[Hidden] = None, coeff: float = 0.9,
               estimator=Exact()) -> FlowModel:
    """G-Residual flow on points of the plane ``(B, 2)`` acted on by the standard representation.

    Equivariant to every element of G, with exact log-dets, so ``log_prob`` is exactly G-invariant;
    invertible because every residual branch has Lip <= coeff^3 < 1."""
    hidden = _hidden(G, hidden, width)
    shift = _fixes_constant_vector(point_fields(G))
    layers = [ActNorm(1, field_size=2, shift=shift)]
    for _ in range(depth):
        block = ResidualBlock(point_branch(G, hidden, coeff=coeff), train_estimator=estimator, eval_estimator=estimator)
        layers += [block, ActNorm(1, field_size=2, shift=shift)]
    return FlowModel(Sequential(layers), (2,), G)


def build(G: Group, data_shape: Sequence[int], **hparams) -> FlowModel:
    """:func:`image_flow` for ``(C, H, W)``, :func:`point_flow` for ``(2,)``."""
    data_shape = tuple(data_shape)
    if data_shape == (2,):
        return point_flow(G, **hparams)
    if len(data_shape) != 3:
        raise ValueError(f"data_shape is (C, H, W) for images or (2,) for points, got {data_shape}")
    G.check_image_shape(data_shape)
    return image_flow(G, data_shape, **hparams)
