"""Invertible layers (data -> latent) and the density model built on them.

``base``: the protocol, :class:`Sequential` and :class:`FlowModel`; ``actnorm`` and ``elementwise``:
layers every model needs. The flow families get one module each: ``residual`` (with its log-det estimators in
``logdet``), coupling, autoregressive.
"""

from .actnorm import ActNorm
from .base import Flow, FlowModel, InverseDidNotConverge, Sequential, bits_per_dim, dequantize, standard_normal_log_prob
from .elementwise import Logit
from .residual import ResidualBlock

__all__ = [
    "ActNorm",
    "Flow",
    "FlowModel",
    "InverseDidNotConverge",
    "Logit",
    "ResidualBlock",
    "Sequential",
    "bits_per_dim",
    "dequantize",
    "standard_normal_log_prob",
]
