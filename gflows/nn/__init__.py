"""Equivariant building blocks on plain tensors, each built from escnn field types.

* :mod:`.fields`: the field types of this book (scalar and regular fields on images; for points in
  the plane the standard representation, its two coordinates where the group keeps them apart, and
  regular fields) and the width rule that gives an equivariant network the parameter count of an
  ordinary one;
* :mod:`.lipschitz`: steerable convolutions and equivariant linear maps rescaled so that their
  operator norm stays below a chosen ``coeff`` (the residual branch of a G-Residual flow);
* :mod:`.activations`: LipSwish, a 1-Lipschitz pointwise non-linearity for fields that allow one.

Every module takes and returns ``torch.Tensor``; its ``in_type`` / ``out_type`` say how the channels
transform, so :func:`gflows.checks.equivariance_error` can act on inputs and outputs.
"""

from .activations import LipSwish
from .fields import Hidden, hidden_fields, point_coordinate_fields, point_fields, point_regular_fields
from .lipschitz import LipschitzConv, LipschitzLinear, update_lipschitz

__all__ = [
    "Hidden",
    "LipSwish",
    "LipschitzConv",
    "LipschitzLinear",
    "hidden_fields",
    "point_coordinate_fields",
    "point_fields",
    "point_regular_fields",
    "update_lipschitz",
]
