r"""Elementwise invertible maps. Acting on every number alone, they commute with any permutation of
pixels and channels, hence are equivariant for scalar and regular fields (not for a rotation of
the plane acting on points, which mixes coordinates).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from .base import Flow


class Logit(Flow):
    r"""Map images from :math:`[0,1]` to :math:`\mathbb{R}`: :math:`z = \operatorname{logit}(\alpha + (1-2\alpha)x)`.

    The squeeze by ``alpha`` keeps the logit finite at 0 and 1 (Dinh et al. 2017 use 0.05). Inputs
    outside :math:`[0, 1]` (raw 0..255 values, say) are refused with a ValueError.
    ``logdet`` :math:`= \sum_i \log(1-2\alpha) - \log s_i - \log(1-s_i)`, :math:`s=\alpha+(1-2\alpha)x`.
    Shapes: any ``(B, ...)``.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if bool(((x < 0) | (x > 1)).any()):
            raise ValueError(
                f"images must be dequantised pixels in [0, 1], x = (k + u) / 256; got values in "
                f"[{float(x.min()):.4g}, {float(x.max()):.4g}]. For 8-bit pixels k use gflows.flows.dequantize(k)"
            )
        s = self.alpha + (1 - 2 * self.alpha) * x
        z = torch.log(s) - torch.log1p(-s)
        log_derivative = math.log1p(-2 * self.alpha) + F.softplus(-z) + F.softplus(z)
        return z, log_derivative.flatten(1).sum(dim=1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
