r"""Moser's construction on a square: an equivariant map that pushes one invariant density onto another.

Let :math:`p, q` be smooth positive densities on the square :math:`\Omega = [-L, L]^2`. Along the
straight path :math:`\rho_t = (1-t)\,p + t\,q`, a velocity field :math:`v_t` whose flux solves

.. math::
    \operatorname{div}(\rho_t v_t) = p - q \ \text{ in } \Omega, \qquad
    \rho_t v_t\cdot n = 0 \ \text{ on } \partial\Omega,

moves the mass of :math:`\rho_t` along with it (continuity equation
:math:`\partial_t\rho_t + \operatorname{div}(\rho_t v_t) = 0`), so the time-1 map :math:`T` of
:math:`\dot x = v_t(x)` pushes :math:`p` onto :math:`q` (Moser 1965). The flux need not depend on
:math:`t`: with the gradient ansatz :math:`\rho_t v_t = \nabla\varphi`, :math:`\varphi` solves one
Poisson problem with Neumann boundary conditions, :math:`\Delta\varphi = p - q`,
:math:`\partial_n\varphi = 0`.

Discretisation (:class:`MoserTransport`):

* :math:`p, q` are evaluated at the centres of an :math:`n\times n` grid of square cells and
  normalised by the midpoint rule (the masses are kept as ``mass_p``, ``mass_q``);
* the 5-point Neumann Laplacian is diagonalised by the type-II discrete cosine transform
  (``scipy.fft.dctn``): one exact solve, ``poisson_residual`` reports its round-off;
* :math:`\nabla\varphi` is taken at the :math:`(n+1)^2` cell corners (the gradient of the bilinear
  interpolant of :math:`\varphi` there; its normal component is exactly zero on the boundary) and
  interpolated bilinearly (``torch.nn.functional.grid_sample``), so the flux stays tangent to the
  boundary and the points never leave the square;
* :math:`\dot x = \nabla\varphi(x)/\rho_t(x)` is integrated from :math:`t = 0` to 1 with ``n_steps``
  steps of the classical Runge-Kutta method (RK4).

The cell-centred grid is mapped onto itself by every element of :math:`D_4`, the 5-point stencil and
bilinear interpolation commute with those maps, and the Neumann solution is unique up to a constant:
for :math:`D_4`-invariant :math:`p, q` the field, and so the map, are :math:`D_4`-equivariant to
round-off. An optional ``stream_function`` :math:`\psi` (vanishing on the boundary) adds the
divergence-free, flux-free part :math:`\nabla^\perp\psi = (-\partial_y\psi, \partial_x\psi)`: another
solution of the same equation, in general not equivariant; ``group`` then averages the flux over the
group with :func:`gflows.symmetrize.symmetrize` (the Reynolds operator), which keeps it a solution
and makes it equivariant.

The discretisation error is measured, not assumed: :meth:`MoserTransport.change_of_variables_residual`
returns :math:`\log q(T(x)) + \log\lvert\det DT(x)\rvert - \log p(x)`, zero for an exact transport,
with the Jacobian of the computed map :math:`T` itself (autograd through the RK4 steps).

>>> import torch
>>> from gflows import checks, groups
>>> D4 = groups.get("D4")
>>> p = gaussian_bumps([[0.5, 0.2]], width=0.3, group=D4)
>>> q = gaussian_bumps([[0.0, 0.0]], width=0.5, group=D4)
>>> T = MoserTransport(p, q, half_width=1.0, grid_size=32, n_steps=8)
>>> x = torch.rand(64, 2, dtype=torch.float64) * 1.8 - 0.9
>>> checks.equivariance_error(T, x, D4) < 1e-12
True
>>> bool(T.change_of_variables_residual(x).abs().max() < 0.1)
True
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from .checks import invariance_error
from .groups import Group
from .symmetrize import symmetrize

__all__ = ["MoserTransport", "gaussian_bumps"]

Density = Callable[[torch.Tensor], torch.Tensor]
"""A positive function of points, ``(B, 2) float64 -> (B,)``, not necessarily normalised."""


def gaussian_bumps(centres: Sequence[Sequence[float]], width: float, *, floor: float = 0.05,
                   group: Optional[Group] = None) -> Density:
    r"""A smooth positive density :math:`\phi(x) = \text{floor} + \sum_c \exp(-\lVert x-c\rVert^2/2w^2)`.

    Args:
        centres: ``(K, 2)`` bump centres; width: their standard deviation :math:`w`.
        floor: a constant added everywhere, which keeps the density positive on the whole square.
        group: if given, the density is averaged over the group,
            :math:`\frac{1}{\lvert G\rvert}\sum_g\phi(g\cdot x)` (as
            :func:`gflows.symmetrize.symmetrize_function` would, but with the bumps moved instead
            of the points: one evaluation), which makes it G-invariant.
    Returns:
        A function ``(B, 2) -> (B,)`` (unnormalised; :class:`MoserTransport` normalises it).
    """
    centres = torch.as_tensor(centres, dtype=torch.float64).reshape(-1, 2)
    if group is not None:  # the orbit average of the bumps: every bump moved by every element, weight 1/|G|
        centres = torch.cat([group.act_points(centres, g) for g in group.elements()])
    weight = 1.0 if group is None else 1.0 / group.order

    def density(x: torch.Tensor) -> torch.Tensor:
        squared = (x[:, None, :] - centres.to(x)[None]).pow(2).sum(-1)
        return floor + weight * torch.exp(-squared / (2 * width ** 2)).sum(-1)

    return density


def _rotated_gradient(psi: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    r""":math:`\nabla^\perp\psi(x) = (-\partial_y\psi, \partial_x\psi)` by autograd, ``(B, 2)``; differentiable in x."""
    with torch.enable_grad():
        inp = x if x.requires_grad else x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(psi(inp).sum(), inp, create_graph=x.requires_grad)
    return torch.stack([-grad[:, 1], grad[:, 0]], dim=-1)


class MoserTransport:
    r"""The map :math:`T` of Moser's flow from :math:`p` to :math:`q` on the square :math:`[-L, L]^2`.

    Args:
        p, q: positive densities on the square, ``(B, 2) -> (B,)`` (normalised here on the grid).
        half_width: :math:`L`.
        grid_size: :math:`n`, cells per side of the Poisson grid (cell size :math:`h = 2L/n`).
        n_steps: RK4 steps from :math:`t = 0` to 1.
        stream_function: optional :math:`\psi`, ``(B, 2) -> (B,)``, zero on the boundary: adds
            :math:`\nabla^\perp\psi` to the flux (another solution, usually not equivariant).
        group: optional subgroup of :math:`D_4` (``C1, C2, C4, D1, D2, D4``); the flux is then
            averaged over it. ``p`` and ``q`` must be invariant under it.
    Raises:
        ValueError: a group that does not map the square onto itself, densities that are not
            positive or not invariant under ``group``, a stream function that does not vanish on
            the boundary, or (at call time) points outside the square.

    Calling ``T(x)`` on ``(B, 2)`` points of the square returns :math:`T(x)`, ``(B, 2)``.
    Attributes: ``mass_p``, ``mass_q`` (midpoint-rule integrals of the given p and q),
    ``potential`` (:math:`\varphi` at the cell centres, ``(n, n)``, rows = y),
    ``poisson_residual`` (:math:`\max\lvert\Delta_h\varphi - (p - q)\rvert`, round-off).
    """

    def __init__(self, p: Density, q: Density, *, half_width: float = 1.0, grid_size: int = 128,
                 n_steps: int = 32, stream_function: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 group: Optional[Group] = None) -> None:
        if grid_size < 2 or n_steps < 1 or half_width <= 0:
            raise ValueError("need grid_size >= 2, n_steps >= 1 and half_width > 0")
        self.half_width, self.grid_size, self.n_steps = float(half_width), int(grid_size), int(n_steps)
        self.group, self.stream_function = group, stream_function
        self._p, self._q = p, q
        h = 2 * self.half_width / self.grid_size
        centres = self._grid_points(self.grid_size, offset=0.5)
        p_values, q_values = self._positive(p, centres, "p"), self._positive(q, centres, "q")
        self.mass_p, self.mass_q = h * h * float(p_values.sum()), h * h * float(q_values.sum())
        if group is not None:
            self._check_group(group, centres)
        if stream_function is not None:
            self._check_stream_function(stream_function)
        rhs = (p_values / self.mass_p - q_values / self.mass_q).reshape(self.grid_size, self.grid_size).numpy()
        self.potential = torch.as_tensor(self._solve_neumann_poisson(rhs, h))
        self.poisson_residual = float(np.abs(self._laplacian(self.potential.numpy(), h) - rhs).max())
        self._corner_gradient = self._gradient_at_corners(self.potential.numpy(), h)
        self.flux = self._raw_flux if group is None else symmetrize(self._raw_flux, group)

    # ------------------------------------------------------------------------------ the grid
    def _grid_points(self, m: int, offset: float) -> torch.Tensor:
        """``(m*m, 2)`` points ``-L + (i + offset) h`` in row-major order (rows = y), h = 2L / grid_size."""
        ticks = -self.half_width + (torch.arange(m, dtype=torch.float64) + offset) * (2 * self.half_width / self.grid_size)
        x, y = torch.meshgrid(ticks, ticks, indexing="xy")
        return torch.stack([x, y], dim=-1).reshape(-1, 2)

    @staticmethod
    def _positive(density: Density, points: torch.Tensor, name: str) -> torch.Tensor:
        values = density(points)
        if values.shape != points.shape[:1]:
            raise ValueError(f"{name} must map (B, 2) points to (B,) values, got shape {tuple(values.shape)}")
        if not bool(torch.all(values > 0)):
            raise ValueError(f"{name} must be positive on the square; its smallest value on the grid is {float(values.min()):.3g}")
        return values

    def _check_group(self, group: Group, centres: torch.Tensor) -> None:
        inexact = group.inexact_elements()
        if inexact:
            raise ValueError(f"{group.name} does not map the square onto itself ({', '.join(inexact)}); "
                             "use a subgroup of D4: C1, C2, C4, D1, D2 or D4")
        for name, density in (("p", self._p), ("q", self._q)):
            change = invariance_error(density, centres, group)
            if change > 1e-9 * float(density(centres).abs().max()):
                raise ValueError(f"{name} is not {group.name}-invariant (it changes by {change:.2g} on the grid): "
                                 f"averaging the field over {group.name} would no longer transport p onto q")

    def _check_stream_function(self, psi: Callable[[torch.Tensor], torch.Tensor]) -> None:
        corners = self._grid_points(self.grid_size + 1, offset=0.0)
        on_boundary = corners.abs().max(dim=-1).values >= self.half_width * (1 - 1e-12)
        values = psi(corners)
        if float(values[on_boundary].abs().max()) > 1e-9 * max(float(values.abs().max()), 1e-300):
            raise ValueError("the stream function must vanish on the boundary of the square; "
                             "otherwise its flux crosses the boundary and mass leaves the square")

    # --------------------------------------------------------------------- the Poisson solve
    @staticmethod
    def _solve_neumann_poisson(rhs: np.ndarray, h: float) -> np.ndarray:
        r"""The zero-mean :math:`\varphi` with :math:`\Delta_h\varphi = ` rhs (5-point stencil, mirrored ghost cells).

        The type-II DCT diagonalises that Laplacian, with eigenvalues
        :math:`-4\sin^2(\pi k/2n)/h^2` per axis; the constant mode (eigenvalue 0) is dropped, which
        is allowed because rhs has zero sum (both densities have unit mass on the grid).
        """
        n = rhs.shape[0]
        eigenvalues = -4 * np.sin(np.pi * np.arange(n) / (2 * n)) ** 2 / h ** 2
        denominator = eigenvalues[:, None] + eigenvalues[None, :]
        denominator[0, 0] = 1.0
        coefficients = scipy.fft.dctn(rhs, type=2, norm="ortho") / denominator
        coefficients[0, 0] = 0.0
        return scipy.fft.idctn(coefficients, type=2, norm="ortho")

    @staticmethod
    def _laplacian(phi: np.ndarray, h: float) -> np.ndarray:
        """5-point Laplacian with mirrored ghost cells (zero normal derivative), ``(n, n)``."""
        padded = np.pad(phi, 1, mode="edge")
        return (padded[1:-1, 2:] + padded[1:-1, :-2] + padded[2:, 1:-1] + padded[:-2, 1:-1] - 4 * phi) / h ** 2

    @staticmethod
    def _gradient_at_corners(phi: np.ndarray, h: float) -> torch.Tensor:
        r""":math:`\nabla\varphi` at the ``(n+1)^2`` cell corners, ``(1, 2, n+1, n+1)`` (component, y, x).

        At a corner, the mean of the two differences across it in each direction; with mirrored
        ghost cells the normal component is exactly zero on the boundary.
        """
        padded = np.pad(phi, 1, mode="edge")
        d_x = (padded[:-1, 1:] - padded[:-1, :-1] + padded[1:, 1:] - padded[1:, :-1]) / (2 * h)
        d_y = (padded[1:, :-1] - padded[:-1, :-1] + padded[1:, 1:] - padded[:-1, 1:]) / (2 * h)
        return torch.as_tensor(np.stack([d_x, d_y]))[None]

    # ------------------------------------------------------------------------- the field
    def _check_points(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[-1] != 2:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected points of shape (B, 2), got {shape}")
        if x.numel() and float(x.detach().abs().max()) > self.half_width * (1 + 1e-9):
            raise ValueError(f"the map is defined on the square [-{self.half_width:g}, {self.half_width:g}]^2; "
                             f"got a point at max-norm distance {float(x.detach().abs().max()):.3g} from the centre")

    def _raw_flux(self, x: torch.Tensor) -> torch.Tensor:
        r"""The flux :math:`\rho_t v_t = \nabla\varphi + \nabla^\perp\psi` at ``x``, ``(B, 2)`` (not symmetrised)."""
        where = (x / self.half_width).clamp(-1, 1)[None, None]            # (1, 1, B, 2), grid_sample's (x, y) order
        gradient = F.grid_sample(self._corner_gradient.to(x), where, mode="bilinear",
                                 padding_mode="border", align_corners=True)[0, :, 0].T
        if self.stream_function is None:
            return gradient
        return gradient + _rotated_gradient(self.stream_function, x)

    def log_p(self, x: torch.Tensor) -> torch.Tensor:
        """log of the normalised p at ``x``, ``(B,)``."""
        return torch.log(self._p(x)) - np.log(self.mass_p)

    def log_q(self, x: torch.Tensor) -> torch.Tensor:
        """log of the normalised q at ``x``, ``(B,)``."""
        return torch.log(self._q(x)) - np.log(self.mass_q)

    def density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        r""":math:`\rho_t(x) = (1-t)\,p(x) + t\,q(x)` (normalised), ``(B,)``."""
        return (1 - t) * self._p(x) / self.mass_p + t * self._q(x) / self.mass_q

    def velocity(self, x: torch.Tensor, t: float) -> torch.Tensor:
        r""":math:`v_t(x) = \text{flux}(x)/\rho_t(x)`, ``(B, 2)``: equivariant when the flux is and :math:`\rho_t` is invariant."""
        return self.flux(x) / self.density(x, t)[:, None]

    # ------------------------------------------------------------------------------- the map
    def step(self, x: torch.Tensor, k: int) -> torch.Tensor:
        r"""The k-th RK4 step, from :math:`t_k = k/K` to :math:`t_{k+1}`: a near-identity map ``(B, 2) -> (B, 2)``."""
        dt, t = 1.0 / self.n_steps, k / self.n_steps
        k1 = self.velocity(x, t)
        k2 = self.velocity(x + dt / 2 * k1, t + dt / 2)
        k3 = self.velocity(x + dt / 2 * k2, t + dt / 2)
        k4 = self.velocity(x + dt * k3, t + dt)
        return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def trajectory(self, x: torch.Tensor) -> torch.Tensor:
        """The points at the times :math:`t_k = k/K`, ``(K + 1, B, 2)`` (first: ``x``, last: ``T(x)``)."""
        self._check_points(x)
        positions = [x]
        for k in range(self.n_steps):
            positions.append(self.step(positions[-1], k))
        return torch.stack(positions)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`T(x)`, ``(B, 2)``: the composition of the ``n_steps`` RK4 steps."""
        self._check_points(x)
        for k in range(self.n_steps):
            x = self.step(x, k)
        return x

    def transport_with_log_det(self, x: torch.Tensor):
        r"""``(T(x), log|det DT(x)|)``, shapes ``(B, 2)`` and ``(B,)``; the Jacobian of the computed map by autograd."""
        moved = []

        def summed(v: torch.Tensor) -> torch.Tensor:  # T summed over the points, which do not mix: (2,)
            out = self(v)
            moved.append(out.detach())
            return out.sum(0)

        jacobian = torch.autograd.functional.jacobian(summed, x.detach())   # (2, B, 2), one integration
        return moved[0], torch.linalg.slogdet(jacobian.permute(1, 0, 2)).logabsdet

    def change_of_variables_residual(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log q(T(x)) + \log\lvert\det DT(x)\rvert - \log p(x)`, ``(B,)``: zero iff :math:`T` pushes p onto q at x."""
        moved, log_det = self.transport_with_log_det(x)
        with torch.no_grad():
            return self.log_q(moved) + log_det - self.log_p(x)
