"""Invertible layers (data -> latent) and the density model built on them.

``base``: the protocol, :class:`Sequential` and :class:`FlowModel`; ``actnorm`` and ``elementwise``:
layers every model needs. The flow families (residual, coupling, autoregressive) get one module each.
"""

from .actnorm import ActNorm
from .base import Flow, FlowModel, Sequential, dequantize, standard_normal_log_prob
from .elementwise import Logit

__all__ = ["ActNorm", "Flow", "FlowModel", "Logit", "Sequential", "dequantize", "standard_normal_log_prob"]
