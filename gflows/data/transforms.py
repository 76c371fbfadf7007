r"""Random symmetry transformations of image batches: exact group elements and continuous rotations.

Moving each training image by a uniformly random element :math:`g` of a finite group :math:`G`
makes the data distribution :math:`G`-invariant: if :math:`x \sim p` and :math:`g \sim U(G)`
independently, then :math:`h\cdot(g\cdot x) = (hg)\cdot x` and :math:`hg` is again uniform on
:math:`G`, so :math:`h\cdot x'` has the same law as :math:`x' = g\cdot x` for every :math:`h`.

Only the elements that map the pixel grid onto itself (multiples of 90 degrees and the flips of
:math:`D_4`, ``Group.exact_elements()``) act exactly; they form a subgroup, and
:func:`random_exact_action` draws from it. For :math:`C_8`, :math:`D_{16}`, ... that subgroup is
:math:`G \cap D_4`: the remaining invariance can only be approximated, e.g. by
:func:`random_rotation`, which interpolates and is therefore not an exact group action.

>>> G = groups.get("C4")
>>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
>>> exact_action(x, G, torch.tensor([1]))[0, 0]          # rotation by 90 degrees, counter-clockwise
tensor([[1., 3.],
        [0., 2.]])
>>> torch.allclose(rotate(x, 90.0), exact_action(x, G, torch.tensor([1])), atol=1e-6)
True
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Union

import torch
import torch.nn.functional as F

from .. import groups
from ..groups import Group

GroupLike = Union[str, Group]


def as_group(G: GroupLike) -> Group:
    """``G`` itself, or the group of that name (``groups.get``)."""
    return groups.get(G) if isinstance(G, str) else G


def draw_exact_elements(n: int, G: GroupLike, generator: torch.Generator) -> torch.Tensor:
    """``n`` independent uniform indices into ``G.exact_elements()`` (int64, on the generator's device)."""
    order = len(_exact_elements(as_group(G).name))
    return torch.randint(0, order, (n,), generator=generator, device=generator.device)


def exact_action(x: torch.Tensor, G: GroupLike, which: torch.Tensor) -> torch.Tensor:
    """Image ``i`` of ``x`` moved by the exact element ``G.exact_elements()[which[i]]``.

    Each exact element permutes the pixels (:meth:`gflows.groups.Group.act_image` of the pixel
    numbers gives the permutation, once per group and image size), so the whole batch is moved by
    one ``gather``.

    Args:
        x: ``(B, C, H, W)`` images of any dtype (uint8 pixels or floats); channels are scalar fields.
        which: ``(B,)`` integer indices into ``G.exact_elements()``.
    Returns:
        ``(B, C, H, W)``, same dtype and device: each image with its pixels permuted.
    """
    G = as_group(G)
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"exact_action expects a (B, C, H, W) tensor, got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
    G.check_image_shape(x.shape[1:])
    which = torch.as_tensor(which, device=x.device)
    if which.shape != x.shape[:1]:
        raise ValueError(f"need one element index per image: x has {x.shape[0]} images, which has shape {tuple(which.shape)}")
    order = len(_exact_elements(G.name))
    if which.numel() and (int(which.min()) < 0 or int(which.max()) >= order):
        raise ValueError(f"element indices must be in 0..{order - 1} ({G.name} has {order} exact elements)")
    batch, channels, height, width = x.shape
    permutations = _pixel_permutations(G.name, height, width).to(x.device)
    source = permutations[which].unsqueeze(1).expand(batch, channels, height * width)
    return x.flatten(2).gather(2, source).reshape(x.shape)


@lru_cache(maxsize=None)
def _exact_elements(name: str) -> tuple:
    return tuple(groups.get(name).exact_elements())


@lru_cache(maxsize=None)
def _pixel_permutations(name: str, height: int, width: int) -> torch.Tensor:
    """``(|exact elements|, H*W)`` int64: row k holds, for each output pixel, the input pixel element k moves there."""
    G = groups.get(name)
    numbers = torch.arange(height * width).reshape(1, 1, height, width)
    return torch.stack([G.act_image(numbers, g).flatten() for g in _exact_elements(name)])


def random_exact_action(x: torch.Tensor, G: GroupLike, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (``(B, C, H, W)``) moved by its own uniformly random exact element of ``G``.

    The elements are drawn with ``generator`` (:func:`draw_exact_elements`), so the same generator
    state gives the same result; see the module docstring for why the result is G-invariant in law.
    """
    return exact_action(x, G, draw_exact_elements(len(x), G, generator).to(x.device))


def draw_angles(n: int, generator: torch.Generator, degrees: float = 180.0) -> torch.Tensor:
    """``n`` independent angles uniform in ``[-degrees, degrees]`` (float64, on the generator's device)."""
    if not degrees > 0:
        raise ValueError(f"the largest rotation angle must be positive, got {degrees}")
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
    return (2 * u - 1) * degrees


def rotate(x: torch.Tensor, degrees: Union[float, torch.Tensor]) -> torch.Tensor:
    """Rotate each image counter-clockwise about its centre by ``degrees`` (a number or one per image).

    Bilinear interpolation with zeros outside the image: only approximately a group action (two
    rotations by 45 degrees are not one by 90), exact up to float rounding at multiples of 90
    degrees, where it agrees with :meth:`gflows.groups.Group.act_image`. Values stay in the convex
    hull of the pixel values and 0.

    Args:
        x: ``(B, C, H, W)`` float tensor with ``H == W``.
    Returns:
        ``(B, C, H, W)``, same dtype and device.
    """
    if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"rotate expects a float (B, C, H, W) tensor, got {getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations need square images, got {x.shape[-2]}x{x.shape[-1]}")
    radians = torch.as_tensor(degrees, dtype=torch.float64, device=x.device).expand(len(x)) * (math.pi / 180)
    cos, sin, zero = torch.cos(radians), torch.sin(radians), torch.zeros_like(radians)
    # output pixel at normalised (u, v) (u to the right, v down) samples the input at R(-angle)(u, v)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotation(x: torch.Tensor, generator: torch.Generator, degrees: float = 180.0) -> torch.Tensor:
    """Rotate each image by its own angle uniform in ``[-degrees, degrees]`` (:func:`rotate`, interpolated)."""
    return rotate(x, draw_angles(len(x), generator, degrees).to(x.device))
