r"""Symmetric densities in the plane: exact samplers and exact log-densities, each with its symmetry group.

Every density :math:`p` here is invariant under a group of rotations and reflections of the plane,
:math:`p(A_g x) = p(x)`, and says which (``symmetry``): ``"D8"``, ``"C5"``, or ``"O2"`` for every
rotation and reflection. :meth:`ToyDensity.check_group` accepts exactly the groups whose every element
is such a symmetry (the subgroups), and refuses the others with the reason, so an experiment cannot
ask a :math:`C_3`-equivariant flow to fit a density with 8-fold symmetry by mistake.

* :class:`RingOfGaussians`: ``modes`` isotropic Gaussians on a circle; :math:`D_N`, N = ``modes``.
* :class:`Pinwheel`: ``blades`` elongated Gaussians on a circle, swirled by the angle
  :math:`\alpha\lvert x\rvert`; the swirl keeps every rotation and breaks every reflection, so
  :math:`C_N` only. It preserves area, so the log-density is the unswirled one at the unswirled point.
* :class:`DihedralCheckerboard`: uniform on the dark cells of an odd-sized board centred at the origin; :math:`D_4`.
  (An even-sized board is *not* invariant under 90° rotations, which map it to its complement.)
* :class:`ConcentricRings`: Gaussian profiles in the radius, uniform angle; :math:`O(2)`.

>>> ring = get("ring", modes=8)
>>> ring.symmetry, ring.sample(4, generator=torch.Generator().manual_seed(0)).shape
('D8', torch.Size([4, 2]))
>>> ring.check_group(groups.get("C4")) is None     # C4 is a subgroup of D8
True
>>> ring.check_group(groups.get("C3"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: ring (8 modes) is D8-symmetric; C3 is not: rotation by 120° is not a symmetry of it ...
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Type

import numpy as np
import torch

from .. import groups
from ..groups import Group

LOG_2PI = math.log(2 * math.pi)
#: The reflection axis of the first reflection of escnn's D_N (a vertical line); centres of modes sit
#: at this angle plus multiples of 2 pi / N, so every reflection axis of D_N is a symmetry axis.
FIRST_AXIS = math.pi / 2


class ToyDensity:
    """A probability density on the plane with an exact sampler, an exact log-density and its symmetry.

    Subclasses set ``name``, ``symmetry`` (a group name, or ``"O2"``) and ``extent`` (the square
    ``[-extent, extent]^2`` holds all but a negligible part of the mass; plots and quadrature use it),
    and implement ``_sample`` (float64) and ``log_prob``.
    """

    name: str = ""
    symmetry: str = "trivial"
    extent: float = 4.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, symmetry={self.symmetry!r})"

    def sample(self, n: int, *, generator: Optional[torch.Generator] = None,
               dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """``n`` independent samples, ``(n, 2)``, in ``dtype`` (default: torch's default dtype)."""
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return self._sample(int(n), generator).to(dtype or torch.get_default_dtype())

    def _sample(self, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Natural-log density at points ``x`` of shape ``(B, 2)``, ``(B,)``; invariant under ``symmetry``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------- symmetry
    def symmetry_group(self) -> Optional[Group]:
        """The declared symmetry as a :class:`~gflows.groups.Group`; ``None`` for ``"O2"`` (every
        rotation and reflection, not a finite group)."""
        return None if self.symmetry == "O2" else groups.get(self.symmetry)

    def has_symmetry(self, G: Group) -> bool:
        """True when every element of ``G`` leaves this density invariant (G is a subgroup of its symmetry)."""
        return self._first_broken(G) is None

    def check_group(self, G: Group) -> None:
        """Raise ValueError, naming an element that breaks the symmetry, unless ``has_symmetry(G)``."""
        broken = self._first_broken(G)
        if broken is not None:
            raise ValueError(
                f"{self.name} is {self.symmetry}-symmetric; {G.name} is not: {G.describe(broken)} is not a "
                f"symmetry of it (choose a subgroup of {self.symmetry}, e.g. {self._example_subgroups()})"
            )

    def _first_broken(self, G: Group):
        declared = self.symmetry_group()
        if declared is None:
            return None
        allowed = [declared.matrix(h) for h in declared.elements()]
        for g in G.elements():
            if not any(np.allclose(G.matrix(g), a, atol=1e-9) for a in allowed):
                return g
        return None

    def _example_subgroups(self) -> str:
        declared = self.symmetry_group()
        kind, n = declared.name[0], declared.order if declared.name[0] == "C" else declared.order // 2
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        names = ["trivial"] + [f"C{d}" for d in divisors if d > 1]
        if kind == "D":
            names += [f"D{d}" for d in divisors]
        return ", ".join(names)


def _angles(n: int) -> torch.Tensor:
    return FIRST_AXIS + 2 * math.pi * torch.arange(n, dtype=torch.float64) / n


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    """``(..., 2, 2)`` rotation matrices by the angles ``theta``."""
    c, s = theta.cos(), theta.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


class _GaussianMixtureOnCircle(ToyDensity):
    """Equal-weight Gaussians centred at radius ``radius`` and angles ``FIRST_AXIS + 2 pi k / n``, each
    with standard deviations ``(radial, tangential)`` along and across its own radius (so the mixture is
    D_n-invariant)."""

    def __init__(self, n: int, radius: float, radial: float, tangential: float) -> None:
        if int(n) < 1 or radius < 0 or radial <= 0 or tangential <= 0:
            raise ValueError("need n >= 1 modes, radius >= 0 and positive standard deviations")
        self.n, self.radius, self.scales = int(n), float(radius), torch.tensor([radial, tangential], dtype=torch.float64)
        angles = _angles(self.n)
        self.frames = _rotation(angles)                          # (n, 2, 2): columns = radial, tangential directions
        self.centres = self.radius * torch.stack([angles.cos(), angles.sin()], -1)
        self.extent = self.radius + 4.5 * float(self.scales.max())

    def _sample(self, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        k = torch.randint(0, self.n, (n,), generator=generator)
        local = torch.randn(n, 2, generator=generator, dtype=torch.float64) * self.scales
        return self.centres[k] + torch.einsum("nij,nj->ni", self.frames[k], local)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_points(x)
        frames, centres, scales = (t.to(x) for t in (self.frames, self.centres, self.scales))
        local = torch.einsum("kji,bkj->bki", frames, x[:, None, :] - centres)      # (B, n, 2) in each frame
        per_mode = -0.5 * ((local / scales) ** 2).sum(-1) - LOG_2PI - scales.log().sum()
        return torch.logsumexp(per_mode, dim=1) - math.log(self.n)


class RingOfGaussians(_GaussianMixtureOnCircle):
    """``modes`` isotropic Gaussians (std ``sigma``) on the circle of radius ``radius``; symmetry D_modes."""

    def __init__(self, modes: int = 8, radius: float = 2.0, sigma: float = 0.25) -> None:
        super().__init__(modes, radius, sigma, sigma)
        self.name, self.symmetry = f"ring ({self.n} modes)", f"D{self.n}"


class Pinwheel(ToyDensity):
    r"""``blades`` Gaussians elongated along their radius, swirled by :math:`S(x) = R(\alpha\lvert x\rvert)\,x`.

    The swirl commutes with every rotation but not with reflections, so the symmetry is C_blades. It keeps
    :math:`\lvert x\rvert` and shifts the polar angle by :math:`\alpha r`, a shear of polar coordinates with
    determinant 1: :math:`\log p(x) = \log q(S^{-1}x)` with q the unswirled mixture.
    """

    def __init__(self, blades: int = 5, radius: float = 1.6, radial: float = 0.5, tangential: float = 0.12,
                 twist: float = 0.9) -> None:
        if twist == 0:
            raise ValueError("a pinwheel needs twist != 0 (else it is a D_N-symmetric ring)")
        self.blades = _GaussianMixtureOnCircle(blades, radius, radial, tangential)
        self.twist = float(twist)
        self.name, self.symmetry, self.extent = f"pinwheel ({self.blades.n} blades)", f"C{self.blades.n}", self.blades.extent

    def swirl(self, x: torch.Tensor, direction: float = 1.0) -> torch.Tensor:
        """``S(x)`` (``direction=1``) or ``S^{-1}(x)`` (``direction=-1``) for points ``(B, 2)``."""
        rotation = _rotation(direction * self.twist * x.norm(dim=-1))
        return torch.einsum("bij,bj->bi", rotation, x)

    def _sample(self, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        return self.swirl(self.blades._sample(n, generator))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_points(x)
        return self.blades.log_prob(self.swirl(x, -1.0))


class DihedralCheckerboard(ToyDensity):
    """Uniform on the dark cells of a ``cells x cells`` board of side ``side`` centred at the origin
    (dark = the corners' colour); ``cells`` odd, symmetry D4. Outside the dark cells the log-density is -inf."""

    def __init__(self, cells: int = 5, side: float = 5.0) -> None:
        if int(cells) < 1 or int(cells) % 2 == 0:
            raise ValueError(
                f"cells must be odd, got {cells}: a 90° rotation maps an even-sized board to its "
                "complement (the checkerboard trap of chapter 4), so it would not be D4-symmetric"
            )
        self.cells, self.side = int(cells), float(side)
        self.cell = self.side / self.cells
        index = torch.arange(self.cells)
        dark = [(i, j) for i in index.tolist() for j in index.tolist() if (i + j) % 2 == 0]
        self.dark = torch.tensor(dark, dtype=torch.float64)              # (n_dark, 2) cell indices
        self.log_density = -math.log(len(dark) * self.cell ** 2)
        self.name, self.symmetry, self.extent = f"checkerboard ({self.cells}x{self.cells})", "D4", self.side / 2

    def _sample(self, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        k = torch.randint(0, len(self.dark), (n,), generator=generator)
        offsets = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return (self.dark[k] + offsets) * self.cell - self.side / 2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_points(x)
        position = (x + self.side / 2) / self.cell
        inside = ((position >= 0) & (position < self.cells)).all(-1)
        dark = position.floor().sum(-1).remainder(2) == 0
        full = torch.full(x.shape[:1], self.log_density, dtype=x.dtype, device=x.device)
        return torch.where(inside & dark, full, torch.full_like(full, -math.inf))


class ConcentricRings(ToyDensity):
    r"""Rings at ``radii`` with Gaussian radial profiles of width ``width``, uniform angle; symmetry O(2).

    The radius r >= 0 has the folded-normal mixture density
    :math:`p_r(r) = \frac1K\sum_k [\mathcal N(r; R_k, s^2) + \mathcal N(-r; R_k, s^2)]`, and
    :math:`p(x) = p_r(\lvert x\rvert) / (2\pi\lvert x\rvert)`.
    """

    def __init__(self, radii=(1.0, 2.0, 3.0), width: float = 0.12) -> None:
        if not radii or min(radii) <= 0 or width <= 0:
            raise ValueError("need positive radii and a positive width")
        self.radii, self.width = torch.tensor(radii, dtype=torch.float64), float(width)
        self.name, self.symmetry, self.extent = f"{len(radii)} concentric rings", "O2", max(radii) + 4.5 * width

    def _sample(self, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        k = torch.randint(0, len(self.radii), (n,), generator=generator)
        r = (self.radii[k] + self.width * torch.randn(n, generator=generator, dtype=torch.float64)).abs()
        theta = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        return r[:, None] * torch.stack([theta.cos(), theta.sin()], -1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_points(x)
        r = x.norm(dim=-1, keepdim=True)
        radii = self.radii.to(x)
        normal = lambda u: -0.5 * ((u - radii) / self.width) ** 2 - 0.5 * LOG_2PI - math.log(self.width)
        radial = torch.logsumexp(torch.cat([normal(r), normal(-r)], -1), -1) - math.log(len(self.radii))
        return radial - math.log(2 * math.pi) - r[:, 0].log()


def _check_points(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[-1] != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"expected a float tensor of points of shape (B, 2), got {shape}")


#: The densities by name, for :func:`get`.
DENSITIES: Dict[str, Type[ToyDensity]] = {
    "ring": RingOfGaussians,
    "pinwheel": Pinwheel,
    "checkerboard": DihedralCheckerboard,
    "rings": ConcentricRings,
}


def get(name: str, **kwargs) -> ToyDensity:
    """The density called ``name`` (a key of :data:`DENSITIES`), built with ``kwargs``."""
    if name not in DENSITIES:
        raise ValueError(f"unknown toy density {name!r}; choose one of {', '.join(DENSITIES)}")
    return DENSITIES[name](**kwargs)
