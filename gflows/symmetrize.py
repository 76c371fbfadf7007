r"""Haar averaging (the Reynolds operator): turn any map into an equivariant one, any function into an invariant one.

For a finite group :math:`G` acting on inputs and outputs, the **Reynolds operator** averages a map
over the group,

.. math::
    \bar f(x) = \frac{1}{\lvert G\rvert}\sum_{g\in G} g^{-1}\cdot f(g\cdot x),

and :math:`\bar f` is equivariant, :math:`\bar f(h\cdot x) = h\cdot\bar f(x)` (re-index the sum by
:math:`gh`). It is a projection onto the equivariant maps: it fixes every equivariant map, so
applying it twice changes nothing. With a trivial action on the output it averages a function over
the orbit of its input, :math:`\bar\phi(x) = \frac{1}{\lvert G\rvert}\sum_g \phi(g\cdot x)`, which
is invariant.

* :func:`symmetrize`: maps of points ``(B, 2) -> (B, 2)`` (every element, by the standard
  representation; a vector field of the plane is such a map) and of images
  ``(B, C, H, W) -> (B, C', H, W)`` (exact elements only, with escnn field types for the channels);
* :func:`symmetrize_function`: scalar functions ``(B, ...) -> (B,)``, averaged over the orbit;
* :func:`symmetrize_log_prob`: a log-density, by averaging the *densities* over the orbit,
  :math:`\log\bar p(x) = \log\frac{1}{\lvert G\rvert}\sum_g p(g\cdot x)`; for an orthogonal action
  :math:`\bar p` is again a normalised density.

On images the average is taken only when every element of the group acts exactly on the pixel grid
(``G.exact_elements() == G.elements()``: C1, C2, C4, D1, D2, D4); an interpolated rotation is not
an action of the group on the grid, and the average over it would not be exactly equivariant.

>>> import torch
>>> from gflows import checks, groups
>>> G = groups.get("C5")
>>> wind = lambda x: x + torch.tensor([1.0, 0.0], dtype=x.dtype)   # a shift: not equivariant
>>> x = torch.randn(16, 2, dtype=torch.float64)
>>> checks.equivariance_error(wind, x, G) > 0.1
True
>>> checks.equivariance_error(symmetrize(wind, G), x, G) < 1e-12
True
>>> torch.allclose(symmetrize(wind, G)(x), x)     # the average of a shift over C5 is no shift
True
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .groups import Group

__all__ = ["symmetrize", "symmetrize_function", "symmetrize_log_prob"]


def _kind(x: torch.Tensor) -> str:
    """``"points"`` for ``(B, 2)``, ``"images"`` for ``(B, C, H, W)``; ValueError otherwise."""
    if torch.is_tensor(x) and x.dim() == 2 and x.shape[-1] == 2:
        return "points"
    if torch.is_tensor(x) and x.dim() == 4:
        return "images"
    shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
    raise ValueError(f"expected points (B, 2) or images (B, C, H, W), got {shape}")


def _check_exact_on_images(G: Group) -> None:
    inexact = G.inexact_elements()
    if inexact:
        raise ValueError(
            f"{G.name} cannot be averaged over on a pixel grid: {', '.join(inexact)} act only by "
            "interpolation, so the average would not be equivariant. On images use a group whose "
            "elements are all exact (C1, C2, C4, D1, D2, D4); on points (B, 2) every group works"
        )


def symmetrize(f: Callable[[torch.Tensor], torch.Tensor], G: Group, *, in_field_type=None,
               out_field_type=None) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The Reynolds operator: :math:`\bar f(x) = \frac{1}{\lvert G\rvert}\sum_g g^{-1}\cdot f(g\cdot x)`.

    Args:
        f: a map of points ``(B, 2) -> (B, 2)`` (e.g. a vector field of the plane) or of images
            ``(B, C, H, W) -> (B, C', H, W)``; the kind is read from each input's shape. On points
            ``f`` is called once, on the ``|G| B`` moved points stacked along the batch (so it must
            treat points independently); on images once per element.
        G: the group. Points: every element, acting by its 2x2 matrix :math:`A_g`. Images: every
            element must act exactly on the grid (ValueError otherwise, at the first call).
        in_field_type, out_field_type: escnn field types of the input / output channels of an
            image map (default: scalar fields, which only move with the pixels).
    Returns:
        :math:`\bar f`, a map with the same shapes as ``f``, equivariant to round-off for every
        element of ``G``; if ``f`` is already equivariant, :math:`\bar f = f` (up to round-off).
    """

    def averaged(x: torch.Tensor) -> torch.Tensor:
        elements = G.elements()
        if _kind(x) == "points":  # one call of f on the whole orbit batch, (|G| B, 2)
            out = f(torch.cat([G.act_points(x, g) for g in elements]))
            if not torch.is_tensor(out) or out.shape != (G.order * x.shape[0], 2):
                shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
                raise ValueError(f"a map of points must return (B, 2) like its input, got {shape} for {G.order * x.shape[0]} points")
            terms = [G.act_points(chunk, ~g) for chunk, g in zip(out.split(x.shape[0]), elements)]
        else:
            _check_exact_on_images(G)
            terms = [G.act_image(f(G.act_image(x, g, in_field_type)), ~g, out_field_type) for g in elements]
        return sum(terms) / G.order

    averaged.__doc__ = f"The {G.name}-average of {getattr(f, '__name__', repr(f))}: equivariant."
    return averaged


def _orbit_values(phi: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, G: Group) -> torch.Tensor:
    """``(|G|, B)``: ``phi(g . x)`` for every element g (points: all; images: exact groups only)."""
    if _kind(x) == "points":  # one call on the whole orbit batch, (|G| B, 2)
        outputs, per_call = [phi(torch.cat([G.act_points(x, g) for g in G.elements()]))], G.order * x.shape[0]
    else:
        _check_exact_on_images(G)
        outputs, per_call = [phi(G.act_image(x, g)) for g in G.elements()], x.shape[0]
    for values in outputs:
        if not torch.is_tensor(values) or values.shape != (per_call,):
            shape = tuple(values.shape) if torch.is_tensor(values) else type(values).__name__
            raise ValueError(f"a scalar function must return one value per sample, shape ({per_call},); got {shape}")
    return torch.cat(outputs).reshape(G.order, x.shape[0])


def symmetrize_function(phi: Callable[[torch.Tensor], torch.Tensor], G: Group) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The orbit average :math:`\bar\phi(x) = \frac{1}{\lvert G\rvert}\sum_g \phi(g\cdot x)`: an invariant function.

    Args:
        phi: a scalar function of points ``(B, 2) -> (B,)`` or of images ``(B, C, H, W) -> (B,)``
            (scalar-field images, exact groups only, as in :func:`symmetrize`).
    Returns:
        :math:`\bar\phi`, with :math:`\bar\phi(g\cdot x) = \bar\phi(x)` for all g; it equals
        ``phi`` when ``phi`` is invariant. Averaging a density gives an invariant density with the
        same total mass (the action is orthogonal).
    """
    return lambda x: _orbit_values(phi, x, G).mean(dim=0)


def symmetrize_log_prob(log_prob: Callable[[torch.Tensor], torch.Tensor], G: Group) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The log of the orbit-averaged density, :math:`\log\frac{1}{\lvert G\rvert}\sum_g p(g\cdot x)`.

    Computed stably with ``logsumexp``. Since every :math:`A_g` is orthogonal
    (:math:`\lvert\det A_g\rvert = 1`), each :math:`p(g\cdot x)` is a normalised density, and so is
    their mean: the result is a G-invariant log-density, equal to ``log_prob`` if that was invariant.
    (Averaging the *log*-densities instead, :func:`symmetrize_function`, gives an invariant function
    that is in general no longer normalised.)
    """
    return lambda x: torch.logsumexp(_orbit_values(log_prob, x, G), dim=0) - math.log(G.order)
