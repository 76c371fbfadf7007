r"""Flows that act on some fields of the state and pass the others through: the factor-out of a
multiscale flow.

A multiscale flow (Dinh et al. 2017; Chen et al. 2019) stops transforming part of its state after
each scale: those numbers are already "latent". :class:`OnFields` runs a flow on a chosen set of
*fields* of the state and leaves the other channels unchanged. The group acts on each field by its own
matrix and moves the pixels of all of them alike, so a flow that is equivariant on the chosen fields
gives an equivariant map of the whole state (block-diagonal Jacobian; the log-det is the flow's).
Choosing channels inside a field would break this: the group mixes the channels of a field.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from .._escnn import enn
from .base import Flow


def sub_type(field_type, fields: Sequence[int]):
    """The escnn ``FieldType`` of the chosen fields of ``field_type``, in their order."""
    return enn.FieldType(field_type.gspace, [field_type.representations[i] for i in fields])


class OnFields(Flow):
    """``flow`` applied to the fields ``fields`` of a state of type ``field_type``; the rest passes unchanged.

    Equivariant when ``flow`` is equivariant on :func:`sub_type` (module docstring). Shapes: the state's,
    ``(B, C, ...)`` in and out; ``logdet`` ``(B,)``.
    """

    def __init__(self, flow: Flow, field_type, fields: Sequence[int]) -> None:
        super().__init__()
        self.flow = flow
        self.in_type = self.out_type = field_type
        self.fields = list(fields)
        starts = [0]
        for rep in field_type.representations:
            starts.append(starts[-1] + rep.size)
        channels = [c for i in self.fields for c in range(starts[i], starts[i + 1])]
        self.register_buffer("channels", torch.tensor(channels), persistent=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        z_part, logdet = self.flow(x[:, self.channels])
        z = x.clone()
        z[:, self.channels] = z_part
        return z, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = z.clone()
        x[:, self.channels] = self.flow.inverse(z[:, self.channels])
        return x
