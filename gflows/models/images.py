"""The skeleton shared by the coupling and autoregressive image models.

``Logit`` (images in [0, 1] to the real line) and ``ActNorm`` on the C data channels, a 2x2 :class:`~gflows.flows.squeeze.Squeeze` into the irreducible
fields of the corner representation where the group and the size allow it, ``depth`` layers made by
a factory, and the inverse squeeze, so that the latent has the data's shape and its scalar fields.
Every piece is equivariant, so the model is, and its density is invariant.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from ..flows import ActNorm, Flow, Logit, Sequential
from ..flows.squeeze import Squeeze, Unsqueeze
from ..groups import Group


def can_squeeze(G: Group, data_shape: Sequence[int]) -> bool:
    """True when every element of G maps a 2x2 block onto itself and H, W are even."""
    _, height, width = data_shape
    return height % 2 == 0 and width % 2 == 0 and not G.inexact_elements()


def image_stack(G: Group, data_shape: Sequence[int], depth: int, make_layer: Callable[[object, int], Flow], *,
                squeeze: Optional[bool] = None) -> Sequential:
    """``Logit -> ActNorm -> [Squeeze] -> make_layer(field_type, i) for i < depth -> [Unsqueeze]``.

    Args:
        make_layer: ``(field_type of the state, layer index) -> Flow``.
        squeeze: ``None`` squeezes when :func:`can_squeeze`; ``True`` insists (ValueError otherwise).
    """
    G.check_image_shape(data_shape)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    channels = data_shape[0]
    if squeeze is None:
        squeeze = can_squeeze(G, data_shape)
    layers = [Logit(), ActNorm(channels)]
    field_type = G.scalar_fields(channels)
    if squeeze:
        if data_shape[1] % 2 or data_shape[2] % 2:
            raise ValueError(f"a 2x2 squeeze needs even H and W, got {tuple(data_shape)}")
        layers.append(Squeeze(G, channels))
        field_type = layers[-1].out_type
    layers += [make_layer(field_type, i) for i in range(depth)]
    if squeeze:
        layers.append(Unsqueeze(G, channels))
    return Sequential(layers)
