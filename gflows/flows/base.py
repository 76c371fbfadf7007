r"""The flow protocol, composition, and a density model with a standard normal base.

**Sign convention.** A flow maps data :math:`x` to latent :math:`z=f(x)`. Every layer implements

* ``forward(x) -> (z, logdet)`` with ``logdet`` of shape ``(B,)`` equal to
  :math:`\log\lvert\det \partial z/\partial x\rvert` (the data-to-latent direction);
* ``inverse(z) -> x``.

so that the change of variables reads :math:`\log p(x) = \log \mathcal{N}(f(x); 0, I) + \text{logdet}`.
The tests check the convention on every layer: ``logdet`` equals the brute-force log-determinant
of ``forward``, and the brute-force log-determinant of ``inverse`` is its negative.

**Invariance.** If every layer is G-equivariant for an orthogonal (or permutation) action and the
base is the isotropic normal, then :math:`\log p(g\cdot x) = \log p(x)`: the Jacobian of an
equivariant map at :math:`g x` is :math:`A_g J A_g^{-1}`, with the same determinant, and
:math:`\lVert A_g z\rVert = \lVert z\rVert`.
"""

from __future__ import annotations

import math
import operator
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ..groups import Group, get
from .logdet import canonical_inputs

LOG_2PI = math.log(2 * math.pi)


class InverseDidNotConverge(RuntimeError):
    """An iterative inverse stopped at its iteration cap; ``residual`` is ``max |f(x) - z|`` there."""

    def __init__(self, iterations: int, residual: float) -> None:
        super().__init__(
            f"the inverse did not converge in {iterations} iterations (residual {residual:.3g}); "
            "is the Lipschitz constant of the residual branch below 1?"
        )
        self.iterations, self.residual = iterations, residual


class Flow(nn.Module):
    """Base class of invertible layers: ``forward(x) -> (z, logdet)``, ``inverse(z) -> x``.

    ``logdet`` is :math:`\\log|\\det \\partial z/\\partial x|` per sample, shape ``(B,)``.
    """

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Sequential(Flow):
    """Composition ``f_n o ... o f_1``: forward applies the layers in order and sums log-dets;
    inverse undoes them in reverse order. Equivariant whenever every layer is."""

    def __init__(self, *layers: Flow) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Flow:
        return self.layers[index]


def as_data_shape(data_shape) -> Tuple[int, ...]:
    """``data_shape`` as a tuple of positive ints: ``(C, H, W)`` for images, ``(2,)`` for points;
    ValueError for anything else (a string such as ``"1,8,8"`` included)."""
    try:
        if isinstance(data_shape, (str, bytes)):
            raise TypeError
        shape = tuple(operator.index(s) for s in data_shape)
    except TypeError:
        raise ValueError(f"data_shape is a tuple of positive integers, (C, H, W) for images or (2,) for points, "
                         f"got {data_shape!r}") from None
    if not (len(shape) == 3 and min(shape) >= 1 or shape == (2,)):
        raise ValueError(f"data_shape is (C, H, W) for images or (2,) for points, got {shape}")
    return shape


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_i \\log \\mathcal{N}(z_i; 0, 1)` per sample: ``(B, ...) -> (B,)``; invariant to any
    orthogonal map of z."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(dim=1)


def bits_per_dim(log_prob, dim: int):
    """Bits per dimension of 8-bit data from the log-density (tensor or number) of its dequantised
    version in :math:`[0, 1)^D`, ``D = dim``: ``-(log p(x) - D log 256) / (D ln 2)``."""
    return -(log_prob - dim * math.log(256)) / (dim * math.log(2))


def dequantize(pixels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform dequantisation of 8-bit images: ``x = (k + u) / 256`` with ``u`` uniform in ``[0, 1)``.

    ``u`` takes the :math:`2^{16}` equally likely values :math:`j/2^{16}`: the finest grid on which
    ``k + u`` is exact in float32 (8 integer and 16 fractional bits fill the 24-bit significand), so
    ``x < 1`` and ``floor(256 x) == k`` hold exactly. (A float32 ``torch.rand`` would round
    ``255 + u`` up to 256 whenever :math:`u > 1 - 2^{-17}`.)

    Args:
        pixels: integer tensor with values in ``0..255`` (any shape).
    Returns:
        float32 tensor of the same shape with values in ``[0, 1)``. A density on these values
        lower-bounds the discrete likelihood: :math:`P(k) \\ge 256^{-D} p(x)` on average
        (Theis et al. 2016), which :meth:`FlowModel.bits_per_dim` reports.
    """
    if pixels.is_floating_point():
        raise ValueError("dequantize expects integer pixel values 0..255 (e.g. uint8), got floats")
    if pixels.numel() and (int(pixels.min()) < 0 or int(pixels.max()) > 255):
        raise ValueError("dequantize expects pixel values in 0..255")
    steps = torch.randint(0, 2**16, pixels.shape, generator=generator, device=pixels.device)
    return (pixels.float() + steps.float() / 2**16) / 256.0


class FlowModel(nn.Module):
    """A normalizing flow with a standard normal base: the density model of this book.

    Args:
        flow: a :class:`Flow` from data to latent.
        data_shape: ``(C, H, W)`` for images or ``(2,)`` for points in the plane.
        group: the symmetry group name or :class:`~gflows.groups.Group` the flow is equivariant to
            (``"trivial"`` for an ordinary flow); checked against ``data_shape``.

    ``log_prob`` is G-invariant when ``flow`` is G-equivariant (see the module docstring).

    Inputs are checked at this boundary: a batch ``(B, *data_shape)`` of finite floating-point
    numbers of the model's dtype, on its device (images: dequantised pixels in [0, 1], checked by the
    first layer, :class:`~gflows.flows.elementwise.Logit`). An empty batch (``B = 0``) gives empty
    results without running the layers; ``sample(0)`` is an empty batch. In evaluation mode escnn
    caches every expanded filter; they are computed without autograd, so an evaluation-mode model
    holds no graph and can be deep-copied.
    """

    def __init__(self, flow: Flow, data_shape: Sequence[int], group: "str | Group" = "trivial") -> None:
        super().__init__()
        self.flow = flow
        self.data_shape = as_data_shape(data_shape)
        self.group = get(group) if isinstance(group, str) else group
        if len(self.data_shape) == 3:
            self.group.check_image_shape(self.data_shape)
        # follows .to(), .double() and .cuda() like the weights: the dtype and device inputs must have
        # (a flow without weights, such as Logit alone, takes any floating dtype on any device)
        floating = (t for t in (*flow.parameters(), *flow.buffers()) if t.is_floating_point())
        reference = next(floating, None)
        self._has_weights = reference is not None
        self.register_buffer("_placement", torch.empty(0) if reference is None else reference.new_empty(0), persistent=False)

    @property
    def dim(self) -> int:
        """D, the number of numbers in one sample."""
        return math.prod(self.data_shape)

    def _check(self, x: torch.Tensor, name: str = "x") -> None:
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.data_shape or x.dim() != len(self.data_shape) + 1:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected a batch of shape (B, {', '.join(map(str, self.data_shape))}), got {shape}")
        placement = self._placement
        if not x.is_floating_point():
            advice = " (8-bit pixels: dequantise them first, gflows.flows.dequantize)" if len(self.data_shape) == 3 else ""
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}{advice}")
        if self._has_weights and x.dtype != placement.dtype:
            raise TypeError(f"{name} is {x.dtype} but the model is {placement.dtype}: convert one to the other "
                            f"(x.to({placement.dtype}), or model.to({x.dtype}))")
        if self._has_weights and x.device != placement.device:
            raise ValueError(f"{name} is on {x.device} but the model on {placement.device}: move one to the other")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or infinite values")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Data ``(B, *data_shape)`` -> latent of the same shape and ``logdet`` ``(B,)``.

        In evaluation mode the stochastic log-dets that can (:class:`~gflows.flows.logdet.MovingProbeSeries`)
        draw their probes from canonical forms of this data batch, so ``log_prob`` is a deterministic,
        exactly invariant function of x."""
        self._check(x)
        if len(x) == 0:
            return x.clone(), x.new_zeros(0)
        if self.training or len(self.data_shape) != 3:
            return self.flow(x)
        with canonical_inputs(self.group, x):
            return self.flow(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> data."""
        self._check(z, "z")
        if len(z) == 0:
            return z.clone()
        return self.flow.inverse(z)

    def train(self, mode: bool = True) -> "FlowModel":
        with torch.no_grad():  # escnn expands and caches its filters when switched to evaluation mode
            return super().train(mode)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Natural-log density of x, ``(B,)``: ``log N(f(x)) + log|det df/dx|``."""
        z, logdet = self(x)
        return standard_normal_log_prob(z) + logdet

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bits per dimension of dequantised 8-bit images ``x`` in [0, 1]:
        ``-(log p(x) - D log 256) / (D ln 2)``."""
        if len(self.data_shape) != 3:
            raise ValueError("bits_per_dim is defined for images; use log_prob for points")
        return bits_per_dim(self.log_prob(x), self.dim)

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples, ``(n, *data_shape)``: the inverse flow applied to ``temperature * N(0, I)``
        (``temperature >= 0``; 0 gives the image of the base's mode ``z = 0``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n is the number of samples, an integer >= 0, got {n!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature scales the base's standard deviation: a finite number >= 0, got {temperature!r}")
        placement = self._placement
        z = torch.randn((n, *self.data_shape), generator=generator, device=placement.device, dtype=placement.dtype)
        return self.inverse(temperature * z)

