r"""G-Coupling flows: affine coupling layers whose split, shift and scale respect the group.

An affine coupling splits the state into a conditioning part :math:`x_A` and a transformed part
:math:`x_B` and maps (data to latent)

.. math:: z_A = x_A,\qquad z_B = x_B \odot e^{s(x_A)} + t(x_A),\qquad
          \log\lvert\det\rvert = \textstyle\sum s(x_A),

with the exact inverse :math:`x_B = (z_B - t(z_A))\odot e^{-s(z_A)}`. It is G-equivariant when

1. **the split is respected**: every :math:`g` maps A-coordinates to A-coordinates (a split by
   fields, never a pixel checkerboard on an even-sized image, which a 90° turn maps to its complement);
2. **the shift is equivariant**: :math:`t(g\cdot x_A) = g\cdot t(x_A)`;
3. **the scale commutes with the action on** :math:`x_B`: here :math:`s` is an equivariant map onto
   one *scalar* field per field of B, broadcast over the channels of that field; a scalar commutes
   with any :math:`\rho_f(g)` and moves with the pixels. To keep the flow stable it is bounded,
   :math:`s = c_f \tanh(\cdot)` with a learned :math:`c_f` per field.

A partition object says how to split (:class:`FieldSplit`, :class:`Checkerboard`); the conditioner
(:mod:`gflows.nn.conditioners`) returns ``(s_raw, t)``. For points of the plane, whose standard
representation cannot be split for :math:`C_N, N\ge 3`, :class:`RadialCoupling` and
:class:`AngularCoupling` couple the invariant radius and the equivariant direction instead.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from .._escnn import enn
from ..groups import Group
from .base import Flow


def _field_channels(field_type, fields) -> list:
    starts = [0]
    for rep in field_type.representations:
        starts.append(starts[-1] + rep.size)
    return [c for f in fields for c in range(starts[f], starts[f + 1])]


def _evenly_spaced(channels: list):
    """The ``slice`` selecting ``channels`` when they are evenly spaced, else ``None``. Slicing is a view:
    no copy forward, no scatter backward (index and index_put cost ~0.4 ms of a 10 ms coupling twin step)."""
    step = channels[1] - channels[0] if len(channels) > 1 else 1
    if step > 0 and channels == list(range(channels[0], channels[-1] + 1, step)):
        return slice(channels[0], channels[-1] + 1, step)
    return None


class FieldSplit(nn.Module):
    """Split the fields of ``field_type``: B = the fields with index ``% 2 == parity``, A = the others.

    Always respected by the group (it acts on each field separately). ``in_type`` / ``t_type`` are the
    field types of A and B; ``n_scales`` = number of fields in B.

    Raises:
        ValueError: fewer than 2 fields (nothing to condition on).
    """

    def __init__(self, field_type, parity: int = 0) -> None:
        super().__init__()
        n = len(field_type)
        if n < 2:
            raise ValueError(
                f"a coupling splits fields, and this input has {n} field(s) of size {field_type.size}: "
                "nothing is left to condition on. Use an image with >= 2 channels, or squeeze it first "
                "(gflows.flows.squeeze) for a group of 90-degree rotations and flips"
            )
        b_fields = [f for f in range(n) if f % 2 == parity % 2]
        a_fields = [f for f in range(n) if f % 2 != parity % 2]
        reps = field_type.representations
        self.in_type = enn.FieldType(field_type.gspace, [reps[f] for f in a_fields])
        self.t_type = enn.FieldType(field_type.gspace, [reps[f] for f in b_fields])
        self.n_scales = len(b_fields)
        a_channels, b_channels = _field_channels(field_type, a_fields), _field_channels(field_type, b_fields)
        field_of_channel = [i for i, f in enumerate(b_fields) for _ in range(reps[f].size)]
        self.register_buffer("a_index", torch.as_tensor(a_channels))
        self.register_buffer("b_index", torch.as_tensor(b_channels))
        self.register_buffer("merge_index", torch.as_tensor(a_channels + b_channels).argsort())
        self.register_buffer("scale_index", torch.as_tensor(field_of_channel))
        # scalar fields (every twin; any group's fields of one size): slices instead of the indices
        self._a_slice, self._b_slice = _evenly_spaced(a_channels), _evenly_spaced(b_channels)
        self._one_channel_per_field = field_of_channel == list(range(self.n_scales))

    def split(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self._a_slice is not None and self._b_slice is not None:
            return x[:, self._a_slice], x[:, self._b_slice]
        return x[:, self.a_index], x[:, self.b_index]

    def merge(self, x_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
        if self._a_slice is None or self._b_slice is None:
            return torch.cat([x_a, y_b], dim=1)[:, self.merge_index]
        merged = y_b.new_empty((y_b.shape[0], x_a.shape[1] + y_b.shape[1], *y_b.shape[2:]))
        merged[:, self._a_slice], merged[:, self._b_slice] = x_a, y_b
        return merged

    def restrict(self, s: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-field scales ``(B, n_scales, ...)`` broadcast to the channels of B."""
        return (s if self._one_channel_per_field else s[:, self.scale_index]), t


class Checkerboard(nn.Module):
    """The pixel checkerboard of RealNVP on scalar channels: B = pixels with ``(i + j) % 2 == parity``.

    ``group`` respects it only if every exact element maps the checkerboard to itself, e.g. for odd
    H = W under :math:`D_4`, never for even sizes (a 90° turn changes the parity of i + j by W - 1).
    ``require_respected=False`` builds it anyway, only to show in the book and the tests what breaks.
    """

    def __init__(self, field_type, group: Group, parity: int = 0, *, require_respected: bool = True) -> None:
        super().__init__()
        if any(rep.size != 1 for rep in field_type.representations):
            raise ValueError("a pixel checkerboard is defined for scalar channels only")
        self.in_type = self.t_type = field_type
        self.n_scales = len(field_type)
        self.group, self.parity, self.require_respected = group, parity % 2, require_respected

    def _pattern(self, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
        rows, columns = torch.arange(h, device=device)[:, None], torch.arange(w, device=device)[None, :]
        return ((rows + columns + self.parity) % 2 == 1).to(dtype)[None, None]

    def check_respected(self, h: int, w: int) -> None:
        """ValueError unless every exact element of the group maps the checkerboard of an ``h x w``
        image to itself (models call it when they are built, so a bad split fails there)."""
        a = self._pattern(h, w)
        moved = [g for g in self.group.exact_elements() if not torch.equal(self.group.act_image(a, g), a)]
        if moved:
            raise ValueError(
                f"{self.group.describe(moved[0])} maps the pixel checkerboard of a {h}x{w} image to its "
                f"complement, so a checkerboard coupling is not {self.group.name}-equivariant: split by "
                "fields (channels) instead"
            )

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, 1, H, W)`` 1 on A pixels, 0 on B pixels; ValueError if the group does not respect it."""
        h, w = x.shape[-2:]
        if self.require_respected:
            self.check_respected(h, w)
        return self._pattern(h, w, x.device, x.dtype)

    def split(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return x * self.mask(x), x

    def merge(self, x_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
        return y_b

    def restrict(self, s: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Zero the scale and shift on A pixels, so that they pass unchanged."""
        b = 1 - self.mask(t)
        return s * b, t * b


class AffineCoupling(Flow):
    """``z_B = x_B * exp(s(x_A)) + t(x_A)``, ``z_A = x_A``; exact inverse; ``logdet = sum s``.

    Args:
        partition: a :class:`FieldSplit` or :class:`Checkerboard`.
        conditioner: maps ``x_A`` to ``(s_raw, t)`` (``partition.n_scales`` scalar fields, ``partition.t_type``),
            e.g. :class:`gflows.nn.conditioners.EquivariantConditioner`.
    ``s = c * tanh(s_raw)`` with a learned ``c`` per scale field. Equivariant to the group when the
    partition is respected and the conditioner equivariant (module docstring). Shapes: any
    ``(B, C, ...)`` the partition accepts, in and out; ``logdet`` ``(B,)``.
    """

    def __init__(self, partition: nn.Module, conditioner: nn.Module) -> None:
        super().__init__()
        self.partition, self.conditioner = partition, conditioner
        self.scale = nn.Parameter(torch.ones(partition.n_scales))

    def _scale_and_shift(self, x_a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s_raw, t = self.conditioner(x_a)
        shape = (1, -1) + (1,) * (s_raw.dim() - 2)
        return self.partition.restrict(self.scale.view(shape) * torch.tanh(s_raw), t)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x_a, x_b = self.partition.split(x)
        s, t = self._scale_and_shift(x_a)
        return self.partition.merge(x_a, x_b * torch.exp(s) + t), s.flatten(1).sum(dim=1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        z_a, z_b = self.partition.split(z)
        s, t = self._scale_and_shift(z_a)
        return self.partition.merge(z_a, (z_b - t) * torch.exp(-s))


# ----------------------------------------------------------------------------------- points
def rotation_order(group: Group) -> int:
    """N, the number of rotations in the group (1 for the trivial group and D1)."""
    rotations = [g for g in group.elements() if group.reflection_axis(g) is None]
    return len(rotations)


def reflection_axis(group: Group):
    """The angle of one reflection axis of a dihedral group, ``None`` if the group has no reflection."""
    axes = [group.reflection_axis(g) for g in group.elements()]
    return next((a for a in axes if a is not None), None)


def polar_radius(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(r, u)`` of points ``(B, 2)``: ``r = |x|`` ``(B, 1)``, kept above the dtype's smallest normal
    number so that ``log r`` is finite at the origin, and the direction ``u = x / r`` (0 at the origin)."""
    r = x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return r, x / r


def origin_gate(log_r: torch.Tensor, log_radius: torch.Tensor) -> torch.Tensor:
    r""":math:`r^2 / (r^2 + \rho^2) = \sigma(2(\log r - \log\rho))`: 0 at the origin, 1 far from it."""
    return torch.sigmoid(2 * (log_r - log_radius))


def invert_increasing(warp, target: torch.Tensor, low: torch.Tensor, high: torch.Tensor, steps: int = 60) -> torch.Tensor:
    """The ``v`` in ``[low, high]`` with ``warp(v)[0] = target``, for a ``warp`` returning ``(value, slope)`` that
    is increasing in ``v`` (all ``(B, 1)``): bisection without gradients, then one Newton step, which
    brings the result to round-off and carries the gradients of ``warp`` and ``target`` for training."""
    with torch.no_grad():
        for _ in range(steps):
            middle = (low + high) / 2
            below = warp(middle)[0] < target
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    v = (low + high) / 2
    value, slope = warp(v)
    return v - (value - target) / slope


class RadialCoupling(Flow):
    r"""Coupling of a point :math:`x = r u` of the plane: the direction :math:`u` conditions its own radius.
    With :math:`s = \log r`,

    .. math:: s' = s + \sum_{k=1}^{K} b_k(u)\,\sigma\Big(\frac{s - c_k}{w_k}\Big),\qquad z = e^{s'} u,\qquad
              \log\lvert\det\rvert = 2(s' - s) + \log\frac{\partial s'}{\partial s},

    (in polar coordinates the map is triangular, and the area element :math:`r\,dr\,d\theta`
    contributes :math:`(r'/r)^2`). The amplitudes :math:`b_k` are G-invariant functions of :math:`u`
    (``conditioner`` maps the standard representation to ``bumps`` scalar fields), so
    :math:`z(A_g x) = r' A_g u = A_g z`: equivariant to every element. The centres :math:`c_k` and widths
    :math:`w_k \in (0, 1)` are learned, and the amplitudes are shrunk so that
    :math:`\sum_k \lvert b_k\rvert / 4w_k < 0.95`: then :math:`\partial s'/\partial s \in (0.05, 1.95)`, a
    monotone map of :math:`\log r` that moves it by at most :math:`\sum_k\lvert b_k\rvert` (inverse by
    bisection, to round-off). As :math:`r\to0` every sigmoid vanishes like :math:`r^{1/w_k}`, faster than :math:`r`, so
    :math:`z = x\,(1 + O(r))`: the map is continuously differentiable on the whole plane with
    :math:`z(0) = 0` and Jacobian :math:`I` at the origin, a diffeomorphism whose density stays finite
    there. Shapes ``(B, 2)``.
    """

    BISECTION_STEPS = 60

    def __init__(self, conditioner: nn.Module, bumps: int) -> None:
        super().__init__()
        self.conditioner, self.bumps = conditioner, bumps
        self.centres = nn.Parameter(torch.linspace(-2.0, 2.0, bumps) if bumps > 1 else torch.zeros(1))
        self.raw_widths = nn.Parameter(torch.zeros(bumps))   # w_k = sigmoid(raw) in (0, 1), 0.5 at first

    def widths(self) -> torch.Tensor:
        """:math:`w_k \in (0, 1)`, ``(K,)``."""
        return torch.sigmoid(self.raw_widths)

    def _amplitudes(self, u: torch.Tensor) -> torch.Tensor:
        raw, _ = self.conditioner(u)
        raw = raw[:, :self.bumps]
        budget = (raw.abs() / (4 * self.widths())).sum(dim=1, keepdim=True) + 1e-12
        return raw * (0.95 * torch.tanh(budget) / budget)

    def _warp(self, log_r: torch.Tensor, b: torch.Tensor):
        """s' and ds'/ds, ``(B, 1)`` each."""
        widths = self.widths()
        sig = torch.sigmoid((log_r - self.centres) / widths)
        new = log_r + (b * sig).sum(dim=1, keepdim=True)
        slope = 1 + (b * sig * (1 - sig) / widths).sum(dim=1, keepdim=True)
        return new, slope

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r, u = polar_radius(x)
        log_r = torch.log(r)
        new, slope = self._warp(log_r, self._amplitudes(u))
        return x * torch.exp(new - log_r), (2 * (new - log_r) + torch.log(slope))[:, 0]

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        r, u = polar_radius(z)
        target = torch.log(r)
        b = self._amplitudes(u)
        reach = b.abs().sum(dim=1, keepdim=True) + 1e-6   # |s' - s| <= sum |b_k|
        log_r = invert_increasing(lambda v: self._warp(v, b), target, target - reach, target + reach, self.BISECTION_STEPS)
        return z * torch.exp(log_r - target)


class AngularCoupling(Flow):
    r"""Coupling of a point :math:`x = r(\cos\theta, \sin\theta)`: the radius conditions its angle,

    .. math:: \theta' = \theta + \gamma(r)\Big[\varphi(r) + \sum_{m=1}^{M}\frac{a_m(r)\sin(mN(\theta-\alpha)) + b_m(r)\cos(mN(\theta-\alpha))}{mN}\Big],
              \qquad \log\lvert\det\rvert = \log\frac{\partial\theta'}{\partial\theta},

    with :math:`\sum_m \sqrt{a_m^2+b_m^2} < 1`, so :math:`\theta\mapsto\theta'` is an increasing
    diffeomorphism of the circle (inverse by bisection to round-off). :math:`N` is the number of
    rotations of the group: the perturbation is :math:`2\pi/N`-periodic, so the map commutes with
    :math:`C_N`. A dihedral group also needs oddness about its reflection axis :math:`\alpha`:
    :math:`b_m = \varphi = 0`. The coefficients are functions of the invariant :math:`\log r` (any
    function of it is invariant). The gate :math:`\gamma(r) = r^2/(r^2+\rho^2)` (:math:`\rho` learned)
    switches the warp off at the origin, where a map of the angle alone would not be differentiable:
    :math:`z = x + O(r^3)`, Jacobian :math:`I` at 0. Equivariant to every element of the group.
    Shapes ``(B, 2)``.
    """

    BISECTION_STEPS = 60

    def __init__(self, group: Group, conditioner: nn.Module, harmonics: int) -> None:
        super().__init__()
        self.conditioner, self.harmonics = conditioner, harmonics
        self.n = rotation_order(group)
        axis = reflection_axis(group)
        self.dihedral = axis is not None
        self.axis = 0.0 if axis is None else axis
        self.log_gate_radius = nn.Parameter(torch.tensor(math.log(0.1)))

    def _coefficients(self, x: torch.Tensor):
        log_r = torch.log(polar_radius(x)[0])
        raw, _ = self.conditioner(log_r)
        a, b, phi = raw[:, :self.harmonics], raw[:, self.harmonics:2 * self.harmonics], raw[:, -1:]
        if self.dihedral:
            b, phi = torch.zeros_like(b), torch.zeros_like(phi)
        amplitude = torch.sqrt(a ** 2 + b ** 2 + 1e-12)
        total = amplitude.sum(dim=1, keepdim=True)
        gate = origin_gate(log_r, self.log_gate_radius)
        shrink = 0.95 * torch.tanh(total) / total * gate
        return a * shrink, b * shrink, phi * gate

    def _warp(self, theta, a, b, phi):
        """theta' and d theta'/d theta."""
        m = torch.arange(1, self.harmonics + 1, dtype=theta.dtype, device=theta.device) * self.n
        angle = m * (theta - self.axis)
        new = theta + phi + ((a * torch.sin(angle) + b * torch.cos(angle)) / m).sum(dim=1, keepdim=True)
        slope = 1 + (a * torch.cos(angle) - b * torch.sin(angle)).sum(dim=1, keepdim=True)
        return new, slope

    @staticmethod
    def _turn(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """Rotate every point ``(B, 2)`` by its angle ``(B, 1)`` (exactly 0 stays 0)."""
        return x * torch.cos(angle) + torch.cat([-x[:, 1:], x[:, :1]], dim=1) * torch.sin(angle)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        a, b, phi = self._coefficients(x)
        theta = torch.atan2(x[:, 1:], x[:, :1])
        new, slope = self._warp(theta, a, b, phi)
        return self._turn(x, new - theta), torch.log(slope)[:, 0]

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        a, b, phi = self._coefficients(z)
        target = torch.atan2(z[:, 1:], z[:, :1])
        theta = invert_increasing(lambda v: self._warp(v, a, b, phi), target, target - phi - 1.0, target - phi + 1.0,
                                  self.BISECTION_STEPS)   # |theta' - theta - phi| < 1/N <= 1
        return self._turn(z, theta - target)
