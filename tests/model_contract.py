"""The check every built model passes (used by the coupling and autoregressive tests): a few optimiser
steps on maximum likelihood, then equivariance of the flow, invariance of log p and the inverse, to
dtype-aware tolerances."""

import torch

from gflows import checks


def train_briefly_then_check(model, x: torch.Tensor, G, steps: int = 2) -> None:
    __tracebackhide__ = True
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = -model.log_prob(x).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    exact = x.dtype == torch.float64
    with torch.no_grad():
        checks.assert_equivariant(model, x, G)
        assert checks.invariance_error(model.log_prob, x, G) < (1e-8 if exact else 1e-3)
        assert checks.inverse_error(model, x) < (1e-10 if exact else 1e-4)
