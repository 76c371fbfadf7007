r"""Equivariant linear operators with a bounded operator norm: the residual branch of a G-Residual flow.

A steerable convolution has the filter :math:`W = \sum_k w_k B_k`, a combination of escnn's
equivariant basis filters :math:`B_k`. Equivariance is a linear constraint on :math:`W`, so
:math:`W / s` is equivariant for every scalar :math:`s > 0`. That is all spectral normalisation needs:

.. math:: W \;\leftarrow\; \frac{W}{\max(1,\ \hat\sigma / c)},

where :math:`\hat\sigma` estimates :math:`\lVert \mathcal{W}\rVert_2`, the largest singular value of
the *whole* linear operator :math:`\mathcal{W}` (the convolution on the actual H x W input, with its
zero padding; or the matrix of a linear layer), and :math:`c < 1` is ``coeff``.

:math:`\hat\sigma = u^\top \mathcal{W} v` comes from power iteration
(:math:`v \leftarrow \mathcal{W}^\top u/\lVert\cdot\rVert`, :math:`u \leftarrow \mathcal{W} v/\lVert\cdot\rVert`),
with :math:`\mathcal{W}^\top` the transposed convolution. The vectors persist between calls, so a
few iterations per training step track the slowly changing weights:

* a call after the weights have changed (an optimiser step; detected by comparing the weights with
  a copy taken at the last iteration, not by the parameters' version counters, which torch's fused
  AdamW leaves unchanged) first runs up to ``n_iterations_train`` iterations, stopping early once an iteration
  changes :math:`\hat\sigma` by less than ``tolerance`` (relative): a small optimiser step moves
  the top singular vectors little, and one iteration usually suffices. Repeated calls with
  unchanged weights use the same normalisation (and a fixed-point inverse sees one fixed map);
* switching to evaluation (``.eval()``) runs ``n_iterations_eval`` more;
* the first call, or a call at a new input size, starts from random vectors and runs
  ``n_iterations_init``.

The state dict holds u, v and whether the weights changed since the last iteration, so a module
loaded from it iterates at its next call exactly when the saved one would have (training resumed
from a checkpoint repeats the uninterrupted run).

A 1x1 convolution acts on every pixel alike, so its operator norm is the norm of its
``(C_out, C_in)`` matrix whatever the input size: its vectors are ``(1, C, 1, 1)``, not ``(1, C, H, W)``.

Power iteration approaches :math:`\lVert\mathcal{W}\rVert_2` from below, so after enough iterations
:math:`\mathrm{Lip} \le c` up to the iteration's tolerance; the tests measure the true norm.
Gradients flow through :math:`\hat\sigma` (u and v are constants), as in Miyato et al. 2018.
In float64 the expanded weight is first averaged over the group (:mod:`.exact`), so that
equivariance holds to float64 precision despite escnn's float32 basis.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._escnn import enn
from .exact import expanded_weight
from .parameters import copies, parameters_of, same_values


class _NormBounded(nn.Module):
    """Shared machinery: an escnn layer whose expanded weight is divided by ``max(1, sigma/coeff)``.

    Subclasses say how to apply the operator and its transpose, and the shape of the vector ``v``
    for a given input.
    """

    def __init__(self, layer, coeff: float, n_iterations_train: int, n_iterations_eval: int, n_iterations_init: int,
                 tolerance: float) -> None:
        super().__init__()
        if not 0 < coeff:
            raise ValueError(f"coeff must be positive, got {coeff}")
        self.layer = layer
        self.in_type, self.out_type = layer.in_type, layer.out_type
        self.coeff = float(coeff)
        self.n_iterations_train, self.n_iterations_eval, self.n_iterations_init = n_iterations_train, n_iterations_eval, n_iterations_init
        self.tolerance = float(tolerance)
        #: power iterations run by the last training-time update (for measurements)
        self.last_iterations = 0
        self.register_buffer("u", torch.empty(0))
        self.register_buffer("v", torch.empty(0))
        self._iterated_weights: Optional[List[torch.Tensor]] = None   # the weights u, v belong to
        self._weights_changed_when_saved = False
        self.register_load_state_dict_post_hook(_NormBounded._loaded)

    # -- subclass interface
    def _operator(self, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _transpose(self, weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _vector_shape(self, x: torch.Tensor) -> Tuple[int, ...]:
        return (1, *x.shape[1:])

    # -- power iteration
    @torch.no_grad()
    def _iterate(self, weight: torch.Tensor, n: int, tolerance: float = 0.0) -> int:
        r"""Run at most ``n`` iterations and return how many ran. With ``tolerance > 0``, stop after an
        iteration whose two half-steps agree: :math:`\lVert\mathcal{W}^\top u\rVert \le
        \lVert\mathcal{W} v\rVert \le \sigma` are both lower bounds on the norm, the second at least the
        first (Cauchy-Schwarz), and equal at convergence; stop when they differ by at most ``tolerance``
        times the larger."""
        self._iterated_weights = copies(parameters_of(self.layer))
        for iteration in range(1, n + 1):
            v = self._transpose(weight, self.u)
            v_norm = v.norm().clamp_min(1e-12)
            self.v = v / v_norm
            u = self._operator(weight, self.v)
            u_norm = u.norm().clamp_min(1e-12)
            self.u = u / u_norm
            if tolerance > 0 and float(u_norm - v_norm) <= tolerance * float(u_norm):
                return iteration
        return n

    @torch.no_grad()
    def _start(self, weight: torch.Tensor, shape: Tuple[int, ...]) -> None:
        v = torch.randn(shape, dtype=weight.dtype, device=weight.device)
        self.v = v / v.norm()
        u = self._operator(weight, self.v)
        self.u = u / u.norm().clamp_min(1e-12)
        self._iterate(weight, self.n_iterations_init)

    def update_lipschitz(self, n_iterations: int) -> None:
        """Run ``n_iterations`` power iterations on the current weights (no-op before the first call)."""
        if self.v.numel():
            self._iterate(expanded_weight(self.layer)[0].detach(), n_iterations)

    def sigma(self, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The current estimate :math:`u^\\top \\mathcal{W} v` of the operator norm (differentiable in W)."""
        if weight is None:
            weight = expanded_weight(self.layer)[0]
        return (self.u * self._operator(weight, self.v)).sum()

    def normalized_weight(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The expanded weight divided by ``max(1, sigma / coeff)`` and the bias, for input ``x``."""
        weight, bias = expanded_weight(self.layer)
        shape = self._vector_shape(x)
        if tuple(self.v.shape) != shape or self.v.dtype != weight.dtype or self.v.device != weight.device:
            self._start(weight.detach(), shape)
        elif self.weights_changed:
            self.last_iterations = self._iterate(weight.detach(), self.n_iterations_train, self.tolerance)
        scale = torch.clamp(self.sigma(weight) / self.coeff, min=1.0)
        return weight / scale, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.input_layout.count(",") + 1 or x.shape[1] != self.in_type.size:
            raise ValueError(
                f"{type(self).__name__} expects {self.input_layout} with C = {self.in_type.size}, got shape {tuple(x.shape)}"
            )
        return self._apply_weight(x, *self.normalized_weight(x))

    def train(self, mode: bool = True):
        if self.training and not mode:
            self.update_lipschitz(self.n_iterations_eval)
        return super().train(mode)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # u and v take the input's size at the first call: adopt the saved sizes before loading.
        for name in ("u", "v"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def weights_changed(self) -> bool:
        """True when the weights changed since the last power iteration: the next call iterates first."""
        return bool(self.v.numel()) and not same_values(self._iterated_weights, parameters_of(self.layer))

    def get_extra_state(self) -> dict:
        return {"weights_changed": self.weights_changed}

    def set_extra_state(self, state: dict) -> None:
        self._weights_changed_when_saved = bool(state["weights_changed"])

    def _loaded(self, *_) -> None:
        # loaded u and v belong to the weights of their last iteration: iterate at the next call
        # exactly when the saved module would have
        self._iterated_weights = None if self._weights_changed_when_saved else copies(parameters_of(self.layer))


class LipschitzConv(_NormBounded):
    """Steerable convolution (escnn ``R2Conv``) with operator norm at most ``coeff`` on its input size.

    Args:
        in_type, out_type: escnn ``FieldType`` s of one gspace (e.g. ``G.scalar_fields(1)``,
            ``G.regular_fields(8)``).
        kernel_size: odd; padding ``kernel_size // 2`` and stride 1 keep the H x W grid and its centre,
            so 90-degree rotations and flips act exactly on odd and even sizes alike.
        coeff: bound on the operator 2-norm (Lipschitz constant), e.g. 0.98.
        n_iterations_train / n_iterations_eval / n_iterations_init: power iterations per training
            step (at most), on ``.eval()``, and from fresh vectors.
        tolerance: a training step stops iterating once the iteration's two estimates of the norm
            agree to this relative tolerance (0: always ``n_iterations_train``).
        **conv_kwargs: passed to ``R2Conv`` (e.g. ``bias=False``). ``recompute`` defaults to True: by
            default escnn shares one basis-expansion module (with its buffers) between all layers of
            the same type, so ``.double()`` or ``.cuda()`` on one model would change the others.
    Shapes: ``(B, in_type.size, H, W) -> (B, out_type.size, H, W)``. Equivariant to the group of the
    field types; Lip <= coeff once power iteration has converged.
    """

    input_layout = "(B, C, H, W)"

    def __init__(
        self,
        in_type,
        out_type,
        kernel_size: int = 3,
        *,
        coeff: float = 0.98,
        n_iterations_train: int = 5,
        n_iterations_eval: int = 200,
        n_iterations_init: int = 200,
        tolerance: float = 1e-3,
        **conv_kwargs,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (an even kernel has no centre pixel), got {kernel_size}")
        conv_kwargs.setdefault("recompute", True)  # escnn otherwise shares basis buffers between layers
        layer = enn.R2Conv(in_type, out_type, kernel_size, padding=kernel_size // 2, **conv_kwargs)
        super().__init__(layer, coeff, n_iterations_train, n_iterations_eval, n_iterations_init, tolerance)
        self.padding = kernel_size // 2

    def _operator(self, weight, v):
        return F.conv2d(v, weight, padding=self.padding)

    def _transpose(self, weight, u):
        return F.conv_transpose2d(u, weight, padding=self.padding)

    def _apply_weight(self, x, weight, bias):
        return F.conv2d(x, weight, bias, padding=self.padding)

    def _vector_shape(self, x):
        # a 1x1 convolution's norm is its matrix's, on any grid: iterate on one pixel
        return (1, x.shape[1], 1, 1) if self.padding == 0 else (1, *x.shape[1:])


class LipschitzLinear(_NormBounded):
    """Equivariant linear map between field types on no base space (escnn ``Linear``), norm <= ``coeff``.

    Used on points of the plane: e.g. from :func:`~gflows.nn.point_fields` to
    :func:`~gflows.nn.point_regular_fields`. Here the operator is the expanded matrix itself.
    Shapes: ``(B, in_type.size) -> (B, out_type.size)``. Equivariant; Lip <= coeff.
    """

    input_layout = "(B, C)"

    def __init__(
        self,
        in_type,
        out_type,
        *,
        coeff: float = 0.9,
        n_iterations_train: int = 5,
        n_iterations_eval: int = 200,
        n_iterations_init: int = 200,
        tolerance: float = 1e-3,
        **linear_kwargs,
    ) -> None:
        linear_kwargs.setdefault("recompute", True)
        layer = enn.Linear(in_type, out_type, **linear_kwargs)
        super().__init__(layer, coeff, n_iterations_train, n_iterations_eval, n_iterations_init, tolerance)

    def _operator(self, weight, v):
        return v @ weight.T

    def _transpose(self, weight, u):
        return u @ weight

    def _apply_weight(self, x, weight, bias):
        return F.linear(x, weight, bias)


def update_lipschitz(module: nn.Module, n_iterations: int) -> None:
    """Run ``n_iterations`` power iterations in every norm-bounded layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, _NormBounded):
            layer.update_lipschitz(n_iterations)
