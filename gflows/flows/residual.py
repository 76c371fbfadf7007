r"""G-Residual flows (Behrmann et al. 2019; Chen et al. 2019; Bose et al.): :math:`z = x + g(x)`, Lip(g) < 1.

**Invertibility.** If Lip(g) < 1 then :math:`x \mapsto x + g(x)` is a bijection: for each z the map
:math:`x \mapsto z - g(x)` is a contraction, so the fixed-point iteration
:math:`x_{k+1} = z - g(x_k)` converges to the unique preimage (Banach), with error at most
:math:`\mathrm{Lip}^k/(1-\mathrm{Lip})\,\lVert x_1 - x_0\rVert`.

**Equivariance.** If g commutes with the action (:math:`g(A x) = A g(x)` for every group element,
A linear) then so do :math:`x + g(x)` and every fixed-point iterate, hence the inverse.

**Log-determinant.** :math:`\log\det(I + J_g(x))`, by one of the estimators of :mod:`.logdet`: the
block uses ``train_estimator`` in training mode (unbiased Russian roulette by default) and
``eval_estimator`` in evaluation mode (a truncated series by default); :func:`logdet_estimator`
switches every block of a model, e.g. to :class:`~gflows.flows.logdet.Exact` for exact checks.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
from torch import nn

from .base import Flow, InverseDidNotConverge
from .logdet import Exact, PowerSeries, RussianRoulette


class ResidualBlock(Flow):
    """Invertible residual block ``z = x + g(x)``.

    Args:
        g: the residual branch, a module with Lip(g) < 1 (e.g. Lipschitz convolutions and LipSwish);
            equivariant g makes the block equivariant.
        train_estimator / eval_estimator: log-det estimators for training and evaluation mode.
        inverse_tolerance: stop the fixed-point iteration when the update is below
            ``tol * (1 + max|x|)``; default: 1000 x the dtype's machine epsilon.
        max_iterations: iteration cap; :class:`~gflows.flows.base.InverseDidNotConverge` beyond it.
    Shapes: ``(B, ...) -> (B, ...)`` and ``logdet`` ``(B,)``.
    """

    def __init__(
        self,
        g: nn.Module,
        *,
        train_estimator=RussianRoulette(),
        eval_estimator=PowerSeries(),
        inverse_tolerance: Optional[float] = None,
        max_iterations: int = 2000,
    ) -> None:
        super().__init__()
        self.g = g
        self.train_estimator, self.eval_estimator = train_estimator, eval_estimator
        self.inverse_tolerance, self.max_iterations = inverse_tolerance, max_iterations

    @property
    def in_type(self):
        """The escnn ``FieldType`` of the input (that of the branch's first layer), ``None`` if unknown."""
        first = self.g[0] if isinstance(self.g, nn.Sequential) and len(self.g) else self.g
        return getattr(first, "in_type", None)

    @property
    def estimator(self):
        """The log-det estimator of the current mode."""
        return self.train_estimator if self.training else self.eval_estimator

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        gx, logdet = self.estimator(self.g, x)
        return x + gx, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The x with ``x + g(x) = z``, by fixed-point iteration ``x <- z - g(x)`` from ``x = z``."""
        x, _ = self.inverse_with_history(z)
        return x

    def inverse_with_history(self, z: torch.Tensor) -> Tuple[torch.Tensor, list]:
        """The inverse and the list of ``max |x_{k+1} - x_k|`` per iteration (for plots)."""
        tolerance = self.inverse_tolerance or 1000 * torch.finfo(z.dtype).eps
        x, changes = z, []
        for _ in range(self.max_iterations):
            updated = z - self.g(x)
            change = (updated - x).abs().max().item()
            x = updated
            changes.append(change)
            if change <= tolerance * (1 + x.abs().max().item()):
                return x, changes
        residual = (x + self.g(x) - z).abs().max().item()
        raise InverseDidNotConverge(self.max_iterations, residual)


def residual_blocks(module: nn.Module) -> Iterator[ResidualBlock]:
    """Every :class:`ResidualBlock` inside ``module``."""
    return (m for m in module.modules() if isinstance(m, ResidualBlock))


@contextlib.contextmanager
def logdet_estimator(module: nn.Module, estimator):
    """Temporarily use ``estimator`` (train and eval) in every residual block of ``module``,
    e.g. ``with logdet_estimator(model, Exact()): model.log_prob(x)``."""
    saved = [(block, block.train_estimator, block.eval_estimator) for block in residual_blocks(module)]
    try:
        for block, _, _ in saved:
            block.train_estimator = block.eval_estimator = estimator
        yield module
    finally:
        for block, train_estimator, eval_estimator in saved:
            block.train_estimator, block.eval_estimator = train_estimator, eval_estimator


__all__ = ["Exact", "PowerSeries", "ResidualBlock", "RussianRoulette", "logdet_estimator", "residual_blocks"]
