r"""Estimators of :math:`\log\det(I + J_g(x))` for a residual map :math:`x \mapsto x + g(x)` with Lip(g) < 1.

With :math:`\lVert J_g\rVert_2 < 1` the logarithm has the convergent power series

.. math:: \log\det(I + J_g) = \operatorname{tr}\log(I + J_g) = \sum_{k\ge 1} \frac{(-1)^{k+1}}{k}\operatorname{tr}(J_g^k),

and each trace is estimated by Hutchinson's :math:`\operatorname{tr}(A) = \mathbb{E}_v[v^\top A v]`,
:math:`v\sim\mathcal{N}(0, I)`, with :math:`v^\top J^k` computed by :math:`k` vector-Jacobian products.

* :class:`Exact`: the full Jacobian and ``slogdet`` (D backward passes; small inputs, toy points).
* :class:`PowerSeries`: the first ``n_terms`` terms (biased by the truncation; deterministic given v).
* :class:`MovingProbeSeries`: the same with one fixed probe per sample that moves with the input
  (a canonical group element of the sample picks it), so the estimate is a deterministic function of
  x and exactly invariant on exact elements: the evaluation default of G-Residual image flows.
* :class:`RussianRoulette`: the unbiased estimator of Chen et al. (2019). Draw
  :math:`N\sim\mathrm{Geometric}(p)` on :math:`\{0, 1, \dots\}`, keep ``n_exact_terms`` terms and
  :math:`N` more, and divide term :math:`k` by :math:`P(N \ge k - n_\text{exact}) = (1-p)^{k-n_\text{exact}}`.
  Each term then has the right expectation, so the estimate is unbiased for the whole series.

**Neumann-series gradient.** Instead of backpropagating through k products, use
:math:`\partial_\theta \log\det(I+J) = \operatorname{tr}\big((I+J)^{-1}\partial_\theta J\big)
= \sum_{m\ge 0}(-1)^m \operatorname{tr}(J^m\,\partial_\theta J)`, estimated with the same truncation
as :math:`\psi^\top(\partial_\theta J)v` where :math:`\psi = \sum_m (-1)^m w_{m+1} J^{m\top}v` is computed
without a graph. **Memory-efficient backward**: the gradient of the log-det is computed during the
forward pass and stored, so the graph of the vector-Jacobian products is freed at once.

**Denormal numbers.** The products :math:`v^\top J^k` shrink like :math:`\lVert J\rVert^k` along
contracting directions and, after tens of terms, reach float32's subnormal range (below
:math:`1.2\cdot10^{-38}`), where x86 CPUs compute many times more slowly (measured: a 20-term
evaluation of a D4 flow on 28x28 images took 2.5x longer). The estimators therefore run with
subnormals flushed to zero (:func:`flushing_subnormals`), which changes each term by less than
:math:`10^{-38}`.

Each estimator is called as ``estimator(g, x)`` and returns ``(g(x), logdet)`` with ``logdet`` of
shape ``(B,)``. With an equivariant g and an orthogonal action, ``logdet`` is invariant for
:class:`Exact`; the stochastic estimates are invariant *in distribution* (the Gaussian probe is),
and exactly when the probe is transformed with the input (``probe=`` argument).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..groups import Group
from ..nn.parameters import parameters_of

Residual = Callable[[torch.Tensor], torch.Tensor]


def _sample_dims(x: torch.Tensor) -> Tuple[int, ...]:
    return tuple(range(1, x.dim()))


def _flushing() -> bool:
    """Whether this thread flushes float32 subnormals to zero (tested on a subnormal number)."""
    return bool(torch.tensor([1e-39]).mul(1.0)[0] == 0)


@contextlib.contextmanager
def flushing_subnormals():
    """Flush subnormal floats to zero on the CPU inside the block (``torch.set_flush_denormal``), then
    restore the setting found on entry. The setting concerns CPU threads only (GPUs compute subnormals at full speed)."""
    if _flushing():
        yield
        return
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def _evaluate(g: Residual, x: torch.Tensor, logdet_of: Callable) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``g`` with autograd on (the estimators need vector-Jacobian products even under
    ``torch.no_grad``) and return detached results when the caller did not want gradients."""
    grad_wanted = torch.is_grad_enabled()
    with torch.enable_grad(), flushing_subnormals():
        x_in = x if x.requires_grad else x.detach().requires_grad_(True)
        gx = g(x_in)
        logdet = logdet_of(gx, x_in, grad_wanted)
    if not grad_wanted:
        return gx.detach(), logdet.detach()
    return gx, logdet


def jacobian_logdet(g: Residual, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """:math:`\log|\det(I + J_g(x))|` per sample from the full Jacobian, ``(B,)``.

    The Jacobian comes from one backward pass through a batch of D copies of each sample (row i of
    J_g is the gradient of output i), so g must not mix samples; ``slogdet`` runs in float64.
    """
    batch, dim = x.shape[0], x[0].numel()
    copies = x.repeat_interleave(dim, dim=0)
    basis = torch.eye(dim, dtype=x.dtype, device=x.device).repeat(batch, 1).reshape(copies.shape)
    rows = torch.autograd.grad(g(copies), copies, basis, create_graph=create_graph)[0]
    jacobian = rows.reshape(batch, dim, dim).to(torch.float64)
    identity = torch.eye(dim, dtype=torch.float64, device=x.device)
    return torch.linalg.slogdet(identity + jacobian).logabsdet.to(x.dtype)


def series_logdet(
    gx: torch.Tensor,
    x: torch.Tensor,
    probe: torch.Tensor,
    weights: Sequence[float],
    *,
    neumann_gradient: bool,
    create_graph: bool,
) -> torch.Tensor:
    r"""Hutchinson estimate :math:`\sum_{k=1}^{K} \frac{(-1)^{k+1}}{k} w_k\, v^\top J^k v` per sample, ``(B,)``.

    Args:
        gx, x: ``g(x)`` and ``x`` (with ``x.requires_grad``).
        probe: v, same shape as x.
        weights: :math:`w_1..w_K` (all 1 for a truncated series, inverse survival probabilities for
            Russian roulette).
        neumann_gradient: value without a graph, gradient from the Neumann-series surrogate.
        create_graph: whether the result must be differentiable.
    """
    dims = _sample_dims(x)
    if neumann_gradient and create_graph and weights:
        return _series_with_neumann_gradient(gx, x, probe, weights, dims)
    value, w = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device), probe
    for k, weight in enumerate(weights, start=1):
        w = torch.autograd.grad(gx, x, w, retain_graph=True, create_graph=create_graph)[0]
        value = value + (-1) ** (k + 1) / k * weight * (w * probe).sum(dims)
    return value if create_graph else value.detach()


def _series_with_neumann_gradient(gx, x, probe, weights, dims) -> torch.Tensor:
    r""":func:`series_logdet` with the Neumann-series gradient, in K vector-Jacobian products, not K + 1.

    With :math:`u_k = v^\top J^k` and :math:`c_k = (-1)^{k-1} w_k` (:math:`w_k` the weights), the
    surrogate's product is :math:`\psi^\top J = \sum_{k=1}^{K} c_k u_k` for
    :math:`\psi = \sum_{k=1}^{K} c_k u_{k-1}`, which needs only :math:`u_0..u_{K-1}`. So the K-th term is
    not computed separately: :math:`u_K v = (\psi^\top J v - \sum_{k<K} c_k\, u_k v) / c_K`, from the
    surrogate's own value (the same number up to float round-off).
    """
    signed = [(-1) ** (k - 1) * weight for k, weight in enumerate(weights, start=1)]   # c_k
    value, known, psi, w = 0.0, 0.0, torch.zeros_like(probe), probe
    for k, weight in enumerate(weights[:-1], start=1):
        psi = psi + signed[k - 1] * w
        w = torch.autograd.grad(gx, x, w, retain_graph=True)[0]
        term = (w * probe).sum(dims)                                   # w_k v, per sample
        value, known = value + term * (weight / k) * (-1) ** (k + 1), known + signed[k - 1] * term
    psi = psi + signed[-1] * w
    vjp = torch.autograd.grad(gx, x, psi.detach(), retain_graph=True, create_graph=True)[0]
    surrogate = (vjp * probe).sum(dims)                                # psi^T J v = sum_k c_k w_k v
    K = len(weights)
    last = (surrogate.detach() - known) / signed[-1]                   # w_K v
    value = value + last * (weights[-1] / K) * (-1) ** (K + 1)
    return value.detach() + surrogate - surrogate.detach()


def _probe_for(x: torch.Tensor, probe: Optional[torch.Tensor]) -> torch.Tensor:
    if probe is None:  # in the logical order of x, whatever its memory layout (randn_like follows strides)
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    if probe.shape != x.shape:
        raise ValueError(f"probe must have the shape of x {tuple(x.shape)}, got {tuple(probe.shape)}")
    return probe.to(x)


@dataclass(frozen=True)
class Exact:
    """Brute-force :math:`\\log|\\det(I+J_g(x))|` from the full D x D Jacobian; differentiable.

    Cost: D vector-Jacobian products per batch. Refuses inputs with more than ``max_dim`` numbers per sample.
    """

    max_dim: int = 4096

    def __call__(self, g: Residual, x: torch.Tensor, probe: Optional[torch.Tensor] = None):
        if x[0].numel() > self.max_dim:
            raise ValueError(f"Exact log-det builds a {x[0].numel()}^2 Jacobian per sample; max_dim is {self.max_dim}")
        return _evaluate(g, x, lambda gx, xi, create_graph: jacobian_logdet(g, xi, create_graph))


@dataclass(frozen=True)
class PowerSeries:
    """The first ``n_terms`` terms of the series with one Hutchinson probe per sample (biased by
    :math:`O(\\mathrm{Lip}^{n+1}/(n+1))`); gradients through the products."""

    n_terms: int = 10

    def __call__(self, g: Residual, x: torch.Tensor, probe: Optional[torch.Tensor] = None):
        probe = _probe_for(x, probe)
        weights = [1.0] * self.n_terms
        return _evaluate(g, x, lambda gx, xi, cg: series_logdet(gx, xi, probe, weights, neumann_gradient=False, create_graph=cg))


@lru_cache(maxsize=64)
def _fixed_normal(seed: int, shape: Tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)


class _CanonicalInputs:
    """The data batch of a model's evaluation pass, and (computed once, when a block asks) the
    canonical element and the seed key of each sample (:func:`canonical_keys`)."""

    def __init__(self, group: Group, x: torch.Tensor) -> None:
        self.group, self.x, self._keys = group, x, None

    def keys(self):
        if self._keys is None:
            self._keys = canonical_keys(self.group, self.x)
        return self._keys


_CANONICAL: contextvars.ContextVar = contextvars.ContextVar("gflows_canonical_inputs", default=None)


@contextlib.contextmanager
def canonical_inputs(group: Group, x: torch.Tensor):
    """Within the block, :class:`MovingProbeSeries` takes every sample's canonical element and seed from
    the data batch ``x`` (on which ``group`` acts exactly, by permuting pixels) rather than from its
    own input. :class:`~gflows.flows.base.FlowModel` does this in evaluation mode."""
    token = _CANONICAL.set(_CanonicalInputs(group, x.detach()))
    try:
        yield
    finally:
        _CANONICAL.reset(token)


def canonical_keys(group: Group, x: torch.Tensor, field_type=None):
    r"""``(elements, best, keys)``: the exact elements of ``group``, and for every sample of ``x`` the
    index of the element g maximising :math:`\langle w, g\cdot x\rangle` (w a fixed standard normal
    tensor) and the exact bits of that maximum. For ``h x`` (h exact) the scores are the same numbers
    permuted, so the key is the same and the element is :math:`g^* h^{-1}`."""
    elements = group.exact_elements()
    w = _fixed_normal(0, tuple(x.shape[1:]), x.dtype, str(x.device))
    scores = torch.stack([(group.act_image(x, g, field_type) * w).flatten(1).sum(1) for g in elements]).double()
    best = scores.argmax(0).tolist()
    keys = [int.from_bytes(struct.pack("<d", value), "little") for value in scores.max(0).values.tolist()]
    return elements, best, keys


@dataclass(frozen=True, eq=False)
class MovingProbeSeries:
    r"""The first ``n_terms`` terms of the series with a probe that moves with the input.

    Every sample x of the data batch gets a canonical element :math:`g^*(x)` of the exact elements of
    ``group`` and a key :math:`s^*(x)` (:func:`canonical_keys`); the probe of this block is
    :math:`v(x) = g^*(x)^{-1}\cdot v_0`, :math:`v_0` a standard normal tensor seeded by the key and
    ``seed`` (one per block). For an exact element h, :math:`s^*(h x) = s^*(x)` and
    :math:`g^*(h x) = g^*(x) h^{-1}` exactly (the data's action permutes numbers), so
    :math:`v(h x) = h\cdot v(x)`: for an equivariant flow, where the block's input at :math:`h x` is h
    applied to its input at x and its Jacobian :math:`A_h J A_h^{-1}`, every term :math:`v^\top J^k v`,
    hence the estimate, is **the same at x and at h x** (to float round-off), and the same x always
    gets the same number. Different inputs get different, independent-looking probes, so over a data
    set the single-probe errors average out as with fresh probes (unbiased up to the truncation,
    :math:`O(\mathrm{Lip}^{n+1}/(n+1))` per dimension) instead of repeating one probe's error.

    The canonical keys come from the data batch inside :func:`canonical_inputs` (which
    :class:`~gflows.flows.base.FlowModel` opens in evaluation mode); a block used on its own takes them
    from its own input, which is as good when that input is acted on exactly.

    Args:
        group: the group the branch is equivariant to; its exact elements are used.
        field_type: escnn ``FieldType`` of the branch's input (how a group element moves the probe).
        n_terms: terms of the series.
        seed: this block's probes (with the keys).
    A ``probe=`` given at the call is used as it is (e.g. the trainer's moved probes).
    """

    group: Group
    field_type: object
    n_terms: int = 20
    seed: int = 0

    #: the estimate at g x equals the one at x by construction (the trainer need not move the probe)
    moves_with_input = True

    def probe(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)``: the probe of every sample of ``x``."""
        context = _CANONICAL.get()
        if context is not None and context.group is self.group and len(context.x) == len(x):
            elements, best, keys = context.keys()
        else:
            elements, best, keys = canonical_keys(self.group, x, self.field_type)
        shape, probe = tuple(x.shape[1:]), torch.empty_like(x)
        for k, g in enumerate(elements):
            chosen = [b for b, index in enumerate(best) if index == k]
            if chosen:
                start = torch.stack([_normal_of(self.seed, keys[b], shape, x) for b in chosen])
                probe[chosen] = self.group.act_image(start, ~g, self.field_type)
        return probe

    def __call__(self, g: Residual, x: torch.Tensor, probe: Optional[torch.Tensor] = None):
        probe = self.probe(x.detach()) if probe is None else probe
        return PowerSeries(self.n_terms)(g, x, probe)


def _normal_of(seed: int, key: int, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A standard normal tensor decided by ``seed`` and ``key``."""
    generator = torch.Generator().manual_seed((key ^ ((seed + 1) * 0x9E3779B97F4A7C15)) % 2**63)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class RussianRoulette:
    """Unbiased estimate: ``n_exact_terms`` terms plus N ~ Geometric(p) more, reweighted.

    Args:
        n_exact_terms: terms always computed.
        p: success probability of the geometric distribution (expected extra terms (1-p)/p).
        neumann_gradient: gradient from the Neumann series (memory O(1) in the number of terms).
        memory_efficient: compute the log-det's gradient in the forward pass and free its graph.
    """

    n_exact_terms: int = 2
    p: float = 0.5
    neumann_gradient: bool = True
    memory_efficient: bool = True

    def weights(self, n_extra: int) -> List[float]:
        """:math:`w_k` for :math:`k = 1..n_\\text{exact}+N`: 1, then :math:`(1-p)^{-(k-n_\\text{exact})}`."""
        return [1.0] * self.n_exact_terms + [(1 - self.p) ** -j for j in range(1, n_extra + 1)]

    def sample_extra_terms(self) -> int:
        """N ~ Geometric(p) on {0, 1, ...}: P(N >= m) = (1 - p)^m (global torch RNG)."""
        u = float(torch.rand(()))
        return int(math.floor(math.log1p(-u) / math.log1p(-self.p))) if self.p < 1 else 0

    def __call__(self, g: Residual, x: torch.Tensor, probe: Optional[torch.Tensor] = None):
        probe = _probe_for(x, probe)
        weights = self.weights(self.sample_extra_terms())

        def logdet_of(gx, xi, create_graph):
            return series_logdet(gx, xi, probe, weights, neumann_gradient=self.neumann_gradient, create_graph=create_graph)

        if self.memory_efficient and self.neumann_gradient and torch.is_grad_enabled() and isinstance(g, nn.Module):
            parameters = [p for p in parameters_of(g) if p.requires_grad]
            return _MemoryEfficientLogdet.apply(g, logdet_of, x, *parameters)
        return _evaluate(g, x, logdet_of)


class _MemoryEfficientLogdet(torch.autograd.Function):
    """``(g(x), logdet)`` whose log-det gradient is computed in the forward pass (Chen et al. 2019).

    The backward pass adds ``dL/dlogdet * dlogdet/d(x, theta)`` to the ordinary backward of g. For the
    parameters this needs the same ``dL/dlogdet`` for every sample (a mean or sum of log-likelihoods);
    anything else raises rather than returning a wrong gradient.
    """

    @staticmethod
    def forward(ctx, g, logdet_of, x, *parameters):
        with torch.enable_grad(), flushing_subnormals():
            x_in = x.detach().requires_grad_(True)
            gx = g(x_in)
            logdet = logdet_of(gx, x_in, True)
            grads = torch.autograd.grad(logdet.sum(), [x_in, *parameters], retain_graph=True, allow_unused=True)
        ctx.gx, ctx.x_in, ctx.parameters, ctx.logdet_grads = gx, x_in, parameters, grads
        return gx.detach(), logdet.detach()

    @staticmethod
    def backward(ctx, grad_gx, grad_logdet):
        with torch.enable_grad(), flushing_subnormals():
            grads = torch.autograd.grad(ctx.gx, [ctx.x_in, *ctx.parameters], grad_gx, allow_unused=True)
        if not torch.allclose(grad_logdet, grad_logdet[:1].expand_as(grad_logdet)):
            raise RuntimeError(
                "the memory-efficient log-det backward needs a loss that weights every sample's log-det "
                "equally (a mean or sum); use RussianRoulette(memory_efficient=False)"
            )
        shape = (-1,) + (1,) * (ctx.x_in.dim() - 1)
        combined = [_add(grads[0], ctx.logdet_grads[0], grad_logdet.reshape(shape))]
        combined += [_add(a, b, grad_logdet[0]) for a, b in zip(grads[1:], ctx.logdet_grads[1:])]
        ctx.gx = ctx.x_in = ctx.logdet_grads = None
        return (None, None, *combined)


def _add(grad: Optional[torch.Tensor], logdet_grad: Optional[torch.Tensor], scale) -> Optional[torch.Tensor]:
    if logdet_grad is None:
        return grad
    scaled = scale * logdet_grad
    return scaled if grad is None else grad + scaled
