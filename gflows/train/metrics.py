r"""Evaluation of a density model on a test set: NLL or bits/dim, their group averages, the invariance gap.

For a test set :math:`\{x_i\}_{i\le n}` and the elements :math:`g` of a group (every element for
points, the exact elements ``G.exact_elements()`` for images, the identity first):

* ``test_nll`` (points) :math:`= -\frac1n\sum_i \log p(x_i)` in nats; ``test_bpd`` (images) the
  same in bits per dimension, :math:`-(\log p(x) - D\log 256)/(D\ln 2)` averaged
  (:meth:`~gflows.flows.FlowModel.bits_per_dim`);
* ``test_nll_group`` / ``test_bpd_group``: the same averaged over every :math:`g` applied to the
  test set, i.e. on the test set and all its rotated/flipped copies;
* ``invariance_gap_max`` / ``invariance_gap_mean``: :math:`\max` and mean over samples and
  :math:`g \ne e` of :math:`\lvert \log p(g x_i) - \log p(x_i)\rvert` in nats; zero up to round-off for
  an exactly invariant density.

**Stochastic log-determinants** (G-Residual flows evaluate a Hutchinson series): every pass over a
test batch uses the same random numbers (the evaluation seed and the batch index decide them,
independently of the training stream), and the probe of each residual block is moved by
:math:`g` together with the input. Moving a standard normal probe by a permutation or rotation
leaves it standard normal, so every estimate stays as good as before; and for an equivariant block
whose input transforms like the data, the estimate at :math:`g x` with probe :math:`g v` equals the
one at :math:`x` with probe :math:`v` exactly. The invariance gap then measures the model's
symmetry, not the estimator's noise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List

import torch

from ..flows import FlowModel, bits_per_dim
from ..flows.residual import residual_blocks
from ..groups import Group, GroupElement
from .distributed import World, all_max, all_sum
from .rng import derive_seed


def is_image_model(model: FlowModel) -> bool:
    """True for a model of images ``(C, H, W)``, False for one of points ``(2,)``."""
    return len(model.data_shape) == 3


def sample_loss(model: FlowModel, x: torch.Tensor) -> torch.Tensor:
    """The training objective per sample, ``(B,)``: bits/dim for images, NLL in nats for points."""
    log_prob = model.log_prob(x)
    return bits_per_dim(log_prob, model.dim) if is_image_model(model) else -log_prob


def evaluation_elements(model: FlowModel, group: Group) -> List[GroupElement]:
    """The elements averaged over: all of them on points, the exact ones on images; identity first."""
    elements = group.exact_elements() if is_image_model(model) else group.elements()
    return [group.identity] + [g for g in elements if g != group.identity]


@dataclass(frozen=True)
class _MovedProbe:
    """A log-det estimator whose Hutchinson probe is drawn as usual, then moved by ``act``."""

    estimator: Callable
    act: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, g, x, probe=None):
        # drawn in the logical order of x, whatever its memory layout (randn_like follows the strides,
        # and a rotated input's are permuted), so that the same numbers land on the same entries
        return self.estimator(g, x, probe=self.act(torch.randn(x.shape, dtype=x.dtype, device=x.device)))


@contextlib.contextmanager
def moved_probes(model: torch.nn.Module, act: Callable[[torch.Tensor, object], torch.Tensor]):
    """Within the block, every residual block's evaluation estimator moves its probe by
    ``act(probe, field_type)``, the field type being that of the block's input (a squeezed state's
    fields move differently from the data's). Estimators whose probe already moves with the input
    (``moves_with_input``, e.g. :class:`~gflows.flows.logdet.MovingProbeSeries`) are left as they are."""
    saved = [(block, block.eval_estimator) for block in residual_blocks(model)
             if not getattr(block.eval_estimator, "moves_with_input", False)]
    try:
        for block, estimator in saved:
            block.eval_estimator = _MovedProbe(estimator, lambda v, t=block.in_type: act(v, t))
        yield model
    finally:
        for block, estimator in saved:
            block.eval_estimator = estimator


def _forked_rng(x: torch.Tensor):
    return torch.random.fork_rng(devices=[x.device] if x.is_cuda else [])


@torch.no_grad()
def evaluate(model: FlowModel, batches: Iterable[torch.Tensor], group: Group, *, seed: int = 0,
             group_metrics: bool = True, current: World = World()) -> Dict[str, float]:
    """Test metrics of ``model`` (put it in eval mode first) over ``batches`` (module docstring).

    Args:
        batches: the test set in fixed batches; with several processes, batch i is evaluated by
            process ``i % world size`` and the sums are reduced, so every process gets the metrics.
        group: the group of the group-averaged metrics and the invariance gap.
        seed: decides the random numbers of stochastic log-dets (batch i uses ``derive_seed(seed, i)``);
            the caller's random generators are left as they were.
        group_metrics: ``False`` evaluates the identity only (no ``*_group``, no gap).
    Returns:
        ``{"test_bpd": ...}`` (``"test_nll"`` for points) and, with ``group_metrics``, also
        ``"test_bpd_group"`` (``"test_nll_group"``), ``"invariance_gap_max"`` and
        ``"invariance_gap_mean"``, as Python floats.
    """
    images = is_image_model(model)
    elements = evaluation_elements(model, group) if group_metrics else [group.identity]
    act = group.act_image if images else (lambda v, g, field_type=None: group.act_points(v, g))
    parameter = next(model.parameters())
    totals = dict.fromkeys(("samples", "log_prob", "group_log_prob", "gap", "gaps"), 0.0)
    gap_max = 0.0
    for index, x in enumerate(batches):
        if index % current.size != current.rank:
            continue
        x = x.to(device=parameter.device, dtype=parameter.dtype)
        log_probs = []
        for g in elements:
            with _forked_rng(x), moved_probes(model, lambda v, field_type, g=g: act(v, g, field_type)):
                torch.manual_seed(derive_seed(seed, index))
                log_probs.append(model.log_prob(act(x, g)).to(torch.float64))
        log_probs = torch.stack(log_probs)  # (|G|, B), the identity first
        gaps = (log_probs[1:] - log_probs[:1]).abs()
        totals["samples"] += x.shape[0]
        totals["log_prob"] += float(log_probs[0].sum())
        totals["group_log_prob"] += float(log_probs.mean(0).sum())
        totals["gap"] += float(gaps.sum())
        totals["gaps"] += gaps.numel()
        gap_max = max(gap_max, float(gaps.max())) if gaps.numel() else gap_max
    summed = all_sum(torch.tensor(list(totals.values()), dtype=torch.float64, device=parameter.device), current)
    totals = dict(zip(totals, summed.tolist()))
    gap_max = float(all_max(torch.tensor(gap_max, dtype=torch.float64, device=parameter.device), current))
    if totals["samples"] == 0:
        raise ValueError("the test set is empty")
    name = "test_bpd" if images else "test_nll"

    def loss(mean_log_prob: float) -> float:
        return bits_per_dim(mean_log_prob, model.dim) if images else -mean_log_prob

    metrics = {name: loss(totals["log_prob"] / totals["samples"])}
    if group_metrics:
        metrics[f"{name}_group"] = loss(totals["group_log_prob"] / totals["samples"])
        metrics["invariance_gap_max"] = gap_max
        metrics["invariance_gap_mean"] = totals["gap"] / totals["gaps"] if totals["gaps"] else 0.0
    return metrics
