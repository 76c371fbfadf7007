r"""G-Residual flow models for images and for points of the plane.

**Images** ``(C, H, W)``, at full resolution (as in the paper's code; no squeeze)::

    Logit -> ActNorm -> [ResidualBlock -> ActNorm] x depth

with the residual branch

.. math:: g = \mathrm{conv}_{3\times3}(C\ \text{scalar} \to F\ \text{regular}) \circ \mathrm{LipSwish}
          \circ \mathrm{conv}_{1\times1}(F \to F) \circ \mathrm{LipSwish} \circ \mathrm{conv}_{3\times3}(F \to C\ \text{scalar})

(read right to left), every convolution norm-bounded by ``coeff`` so Lip(g) <= coeff^3 < 1.

**Points** ``(2,)``: the same blocks with equivariant linear maps between the standard representation
of the plane and F regular fields (3 layers, LipSwish between), and :class:`Exact` log-dets (D = 2).

``F = hidden_fields(G, width)`` regular fields (``width`` channels for the trivial group), so the
trivial-group twin is an ordinary Residual Flow of width ``width`` with about as many parameters.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from torch import nn

from ..flows import ActNorm, FlowModel, Logit, Sequential
from ..flows.logdet import Exact, PowerSeries, RussianRoulette
from ..flows.residual import ResidualBlock
from ..groups import Group
from ..nn import LipSwish, LipschitzConv, LipschitzLinear, hidden_fields, point_fields, point_regular_fields


def image_branch(G: Group, channels: int, fields: int, *, coeff: float = 0.98) -> nn.Sequential:
    """Residual branch ``(B, C, H, W) -> (B, C, H, W)``: equivariant to G, Lip <= coeff^3."""
    scalars, hidden = G.scalar_fields(channels), G.regular_fields(fields)
    return nn.Sequential(
        LipschitzConv(scalars, hidden, 3, coeff=coeff),
        LipSwish(hidden),
        LipschitzConv(hidden, hidden, 1, coeff=coeff),
        LipSwish(hidden),
        LipschitzConv(hidden, scalars, 3, coeff=coeff),
    )


def point_branch(G: Group, fields: int, *, coeff: float = 0.9) -> nn.Sequential:
    """Residual branch ``(B, 2) -> (B, 2)`` on the standard representation: equivariant to G, Lip <= coeff^3."""
    plane, hidden = point_fields(G), point_regular_fields(G, fields)
    return nn.Sequential(
        LipschitzLinear(plane, hidden, coeff=coeff),
        LipSwish(hidden),
        LipschitzLinear(hidden, hidden, coeff=coeff),
        LipSwish(hidden),
        LipschitzLinear(hidden, plane, coeff=coeff),
    )


def _fixes_constant_vector(field_type) -> bool:
    """True when every rho(g) maps the all-ones vector to itself (then ActNorm may shift)."""
    ones = np.ones(field_type.size)
    return all(np.allclose(field_type.representation(g) @ ones, ones) for g in field_type.gspace.fibergroup.elements)


def image_flow(
    G: Group,
    data_shape: Sequence[int],
    *,
    depth: int = 16,
    width: int = 64,
    coeff: float = 0.98,
    logit_alpha: Optional[float] = 0.05,
    train_estimator=RussianRoulette(),
    eval_estimator=PowerSeries(n_terms=10),
) -> FlowModel:
    """G-Residual flow on images ``(B, C, H, W)`` in [0, 1] (``logit_alpha=None`` drops the logit).

    Equivariant to G on its exact elements, hence ``log_prob`` is G-invariant (exactly with
    :class:`Exact` log-dets, in distribution with the stochastic estimators); invertible because
    every residual branch has Lip <= coeff^3 < 1."""
    channels = data_shape[0]
    fields = hidden_fields(G, width)
    layers = [Logit(logit_alpha)] if logit_alpha is not None else []
    layers.append(ActNorm(channels))
    for _ in range(depth):
        block = ResidualBlock(image_branch(G, channels, fields, coeff=coeff), train_estimator=train_estimator, eval_estimator=eval_estimator)
        layers += [block, ActNorm(channels)]
    return FlowModel(Sequential(layers), data_shape, G)


def point_flow(G: Group, *, depth: int = 8, width: int = 64, coeff: float = 0.9, estimator=Exact()) -> FlowModel:
    """G-Residual flow on points of the plane ``(B, 2)`` acted on by the standard representation.

    Equivariant to every element of G, with exact log-dets, so ``log_prob`` is exactly G-invariant;
    invertible because every residual branch has Lip <= coeff^3 < 1."""
    fields = hidden_fields(G, width)
    shift = _fixes_constant_vector(point_fields(G))
    layers = [ActNorm(1, field_size=2, shift=shift)]
    for _ in range(depth):
        block = ResidualBlock(point_branch(G, fields, coeff=coeff), train_estimator=estimator, eval_estimator=estimator)
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
