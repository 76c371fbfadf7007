r"""Exponential moving average (EMA) of a model's weights, the weights every evaluation uses.

After optimiser step :math:`t = 0, 1, \dots`,
:math:`\bar\theta \leftarrow \beta_t\,\bar\theta + (1-\beta_t)\,\theta` for every parameter, with
:math:`\beta_t = \min\big(\beta, \tfrac{1+t}{10+t}\big)`: early averages forget the initial weights
fast (the average of a 500-step run with :math:`\beta = 0.999` would otherwise still weigh them by
:math:`0.999^{500} \approx 0.6`); ``decay`` :math:`\beta = 0` copies the weights. Buffers are not averaged:
the copy keeps its own, set when it is made (e.g. ActNorm's initialisation flag) or refreshed when
it is evaluated (the power-iteration vectors of Lipschitz layers, which switching the copy to
``.eval()`` re-runs on the averaged weights).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """An averaged copy ``.model`` of ``model`` (made now, so after any data-dependent initialisation)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model``'s parameters after optimiser step ``step`` (0-based)."""
        decay = self.decay_at(step)
        for averaged, current in zip(self.model.parameters(), model.parameters()):
            if decay == 0.0:
                averaged.copy_(current)
            else:
                averaged.lerp_(current, 1.0 - decay)

    def decay_at(self, step: int) -> float:
        """:math:`\\beta_t = \\min(\\beta, (1 + t) / (10 + t))`."""
        return min(self.decay, (1 + step) / (10 + step))
