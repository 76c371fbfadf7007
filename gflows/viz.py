r"""Figures of the book: pure functions that take tensors and a group and return a matplotlib figure.

Nothing here shows or saves a figure or touches pyplot's global state (figures are built with
``matplotlib.figure.Figure``), so a notebook displays the returned figure, a test inspects it, and
:mod:`gflows.widgets` redraws it when a slider moves: the interactive and the static versions are the
same code.

* :func:`plot_equivariance`: one group element, the five panels :math:`x`, :math:`g\cdot x`,
  :math:`f(x)`, :math:`f(g\cdot x)`, :math:`g\cdot f(x)` and the measured error;
* :func:`equivariance_grid`: the same row for every element (the static twin of the widget);
* :func:`plot_orbit_points`: orbits of points of the plane, optionally over a density;
* :func:`plot_flow`: a flow on :math:`x` and on :math:`g\cdot x`: the split it uses, the latents and
  :math:`\log p`; :func:`flow_grid` is its static twin over the group;
* :func:`plot_symmetrization`: a vector field of the plane and its Reynolds average, with the arrows
  :math:`f(g\cdot x)` and :math:`g\cdot f(x)` along an orbit; :func:`symmetrization_grid` is its
  static twin over several groups;
* :func:`plot_transport`, :func:`transport_animation`: snapshots and an animation of a transport
  flow (:class:`gflows.transport.MoserTransport`) moving points while the density changes;
  :func:`animation_html` turns an animation into self-contained HTML for the offline book;
* :func:`image_grid`: a batch of images (data or samples) as one tiled picture;
* :func:`plot_curves`: a metric against steps, seconds or training-set sizes, one line per model, with
  a band of plus or minus one standard deviation over seeds, from summaries (each model with its own
  abscissae, e.g. seconds);
* :func:`density_image` and :func:`density_grid`: densities of the plane on a grid, e.g. learned
  densities next to the truth;
* :func:`plot_spread`: the raw values of several runs (seeds) on shared abscissae, drawn as mean and
  standard deviation, with means beyond the axis marked (e.g. a model that overfits).
"""

from __future__ import annotations

import re
from typing import Callable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.animation import FuncAnimation
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import checks
from .groups import Group, GroupElement
from .symmetrize import symmetrize

#: Column titles of an equivariance row.
PANELS = ("x", "g·x", "f(x)", "f(g·x)", "g·f(x)")
_TILE = 1.1  # inches per image tile
_IMAGE_CMAP = "gray_r"
_FEATURE_CMAP = "RdBu_r"


def _error_title(G: Group, row: "_Row") -> str:
    title = f"{G.name}, {G.describe(row.g)}: max |f(g·x) − g·f(x)| = {row.error:.1e}"
    if row.log_probs is not None:
        title += "\nlog p(x) = {:.6f},  log p(g·x) = {:.6f}".format(*row.log_probs)
    return title


def _grid_shape(n: int) -> tuple:
    """(rows, columns) of the mosaic of ``n`` channels: as square as possible."""
    columns = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / columns)), columns


def _mosaic(t: torch.Tensor, channels: Sequence[int]) -> np.ndarray:
    """Channels ``channels`` of one sample ``(C, H, W)`` tiled in a near-square grid, one blank (NaN)
    pixel between tiles."""
    rows, columns = _grid_shape(len(channels))
    h, w = t.shape[-2:]
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan)
    for i, c in enumerate(channels):
        r, q = divmod(i, columns)
        canvas[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = t[c].detach().to(torch.float64).cpu().numpy()
    return canvas


def _show(ax: Axes, image: np.ndarray, title: str, cmap: str, vmin: float, vmax: float) -> None:
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


class _Row(NamedTuple):
    """What one row shows: input mosaics (x, g·x), feature mosaics (f(x), f(g·x), g·f(x)), the error."""

    g: GroupElement
    images: Tuple[np.ndarray, np.ndarray]
    features: Tuple[np.ndarray, np.ndarray, np.ndarray]
    channels: List[int]
    error: float
    log_probs: Optional[Tuple[float, float]]


@torch.no_grad()
def _measure_row(f: Callable, x: torch.Tensor, G: Group, g: GroupElement, out_field_type,
                 channels: Optional[Sequence[int]], log_prob: Optional[Callable] = None) -> _Row:
    gx = G.act_image(x, g)
    fx, fgx = f(x), f(gx)
    if not torch.is_tensor(fx) or fx.dim() != 4:
        raise ValueError("f must map (B, C, H, W) images to (B, C', H, W) feature fields")
    gfx = G.act_image(fx, g, out_field_type)
    error = float((fgx.to(torch.float64) - gfx.to(torch.float64)).abs().max())
    channels = list(range(min(fx.shape[1], 4))) if channels is None else list(channels)
    in_channels = list(range(min(x.shape[1], 4)))
    log_probs = None if log_prob is None else (float(log_prob(x)[0]), float(log_prob(gx)[0]))
    return _Row(g, tuple(_mosaic(t[0], in_channels) for t in (x, gx)),
                tuple(_mosaic(t[0], channels) for t in (fx, fgx, gfx)), channels, error, log_probs)


def _draw_row(container, row: _Row, G: Group) -> None:
    """The five panels of ``row`` in ``container`` (a Figure or SubFigure), titled with the error."""
    ratios = [m.shape[1] / m.shape[0] for m in row.images + row.features]
    axes = container.subplots(1, len(PANELS), width_ratios=ratios)
    top = max(float(np.nanmax(np.abs(m))) for m in row.images) or 1.0
    for ax, title, image in zip(axes[:2], PANELS[:2], row.images):
        _show(ax, image, title, _IMAGE_CMAP, min(0.0, float(np.nanmin(image))), top)
    limit = max(float(np.nanmax(np.abs(m))) for m in row.features) or 1.0
    label = f"ch. {row.channels[0]}" if len(row.channels) == 1 else f"ch. {row.channels[0]}..{row.channels[-1]}"
    for ax, title, image in zip(axes[2:], PANELS[2:], row.features):
        _show(ax, image, f"{title}, {label}", _FEATURE_CMAP, -limit, limit)
    container.suptitle(_error_title(G, row), fontsize=10)


def _row_size(row: _Row) -> Tuple[float, float]:
    """(width, height) in inches of one row: about ``_TILE`` inches per tile of the mosaics."""
    height = max(m.shape[0] for m in row.images + row.features)
    tiles_high = max(1.0, height / (row.images[0].shape[0] + 1))
    width = sum(m.shape[1] / m.shape[0] for m in row.images + row.features)
    return _TILE * tiles_high * width + 0.4, _TILE * tiles_high + (1.0 if row.log_probs else 0.7)


def _check_single_image(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"expected one image of shape (1, C, H, W), got {shape}")


def plot_equivariance(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, G: Group, g: GroupElement, *,
                      out_field_type=None, channels: Optional[Sequence[int]] = None,
                      log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Figure:
    r"""One row of five panels showing whether ``f`` commutes with the action of ``g``.

    Panels: :math:`x`, :math:`g\cdot x`, :math:`f(x)`, :math:`f(g\cdot x)`, :math:`g\cdot f(x)`; the
    title names the element and prints :math:`\max\lvert f(g\cdot x) - g\cdot f(x)\rvert`.
    Feature panels tile the chosen channels and share one symmetric colour scale, so equal panels
    look equal.

    Args:
        f: maps images ``(B, C, H, W)`` (scalar fields) to feature fields ``(B, C', H, W)``; called
            under ``torch.no_grad()`` in whatever train/eval mode it is in.
        x: one image, ``(1, C, H, W)``.
        G: the group; ``g`` one of its elements.
        out_field_type: escnn ``FieldType`` of the ``C'`` output channels (e.g. ``G.regular_fields(n)``);
            ``None`` means scalar fields, i.e. ``g`` only moves pixels.
        channels: which output channels to show (default: the first four).
        log_prob: optional density model ``(B, C, H, W) -> (B,)``; the title then also prints
            :math:`\log p(x)` and :math:`\log p(g\cdot x)`, which an invariant density keeps equal.
    Returns:
        A ``matplotlib.figure.Figure`` with five axes (not shown, not registered with pyplot).
    """
    _check_single_image(x)
    row = _measure_row(f, x, G, g, out_field_type, channels, log_prob)
    fig = Figure(figsize=_row_size(row), layout="constrained")
    _draw_row(fig, row, G)
    return fig


def equivariance_grid(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, G: Group, *,
                      elements: Optional[Sequence[GroupElement]] = None, out_field_type=None,
                      channels: Optional[Sequence[int]] = None,
                      log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Figure:
    """:func:`plot_equivariance` for several elements, one row each: the static twin of the widget.

    Args:
        elements: the rows, default ``G.exact_elements()``; other arguments as in :func:`plot_equivariance`.
    Returns:
        A figure of ``len(elements)`` subfigures (``fig.subfigs``) with five axes each.
    """
    _check_single_image(x)
    elements = list(G.exact_elements() if elements is None else elements)
    rows = [_measure_row(f, x, G, g, out_field_type, channels, log_prob) for g in elements]
    width, height = _row_size(rows[0])
    fig = Figure(figsize=(width, height * len(rows)), layout="constrained")
    for container, row in zip(fig.subfigures(len(rows), 1, squeeze=False)[:, 0], rows):
        _draw_row(container, row, G)
    return fig


def _as_points(points) -> torch.Tensor:
    points = torch.as_tensor(points, dtype=torch.float64)
    if points.dim() == 1:
        points = points[None]
    if points.dim() != 2 or points.shape[-1] != 2:
        raise ValueError(f"expected points of shape (P, 2), got {tuple(points.shape)}")
    return points


@torch.no_grad()
def plot_orbit_points(points, G: Group, *, log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                      extent: float = 3.0, resolution: int = 200, legend: bool = True,
                      ax: Optional[Axes] = None) -> Figure:
    r"""The orbits :math:`\{A_g p : g \in G\}` of points :math:`p` of the plane, one colour per element.

    Rotations are drawn as discs, reflections as crosses; the reflection axes of a dihedral group are
    dashed. With ``log_prob``, the density :math:`\exp(\log p)` is drawn underneath as filled
    contours: for a G-invariant density every point of an orbit lies on the same contour.

    Args:
        points: ``(P, 2)`` (or ``(2,)``) array or tensor.
        G: the group acting by its 2x2 matrices (``G.act_points``).
        log_prob: optional map ``(N, 2) float64 tensor -> (N,)`` log densities.
        extent: the square ``[-extent, extent]^2`` is drawn.
        resolution: grid points per side for the density.
        legend: label the elements (by ``G.describe``) in a legend.
        ax: draw into this axes instead of a new figure.
    Returns:
        The figure holding the axes.
    """
    points = _as_points(points)
    if ax is None:
        fig = Figure(figsize=(5.6 if legend else 4.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
    if log_prob is not None:
        ticks = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
        grid = _square_grid(ticks)
        density = log_prob(grid).exp().reshape(resolution, resolution).cpu().numpy()
        ax.contourf(ticks.numpy(), ticks.numpy(), density, levels=14, cmap="Blues")
    colours = [_element_colour(i, G.order) for i in range(G.order)]
    for i, g in enumerate(G.elements()):
        moved = G.act_points(points, g).numpy()
        t = G.reflection_axis(g)
        reflection = t is not None
        if reflection:
            ax.plot([-extent * np.cos(t), extent * np.cos(t)], [-extent * np.sin(t), extent * np.sin(t)],
                    ls="--", lw=0.7, color="0.6", zorder=1)
        ax.scatter(moved[:, 0], moved[:, 1], s=60 if i == 0 else 36, marker="X" if reflection else "o",
                   color=colours[i], edgecolors="black" if i == 0 else "none", zorder=3, label=G.describe(g))
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    if legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    return _root_figure(ax)


def _square_grid(ticks: torch.Tensor) -> torch.Tensor:
    """``(n*n, 2)`` points ``(x, y)`` of the grid ``ticks`` x ``ticks``, row by row along y (the order of
    ``imshow(..., origin="lower")`` after a reshape to ``(n, n)``)."""
    return torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), dim=-1).reshape(-1, 2)


def _root_figure(ax: Axes) -> Figure:
    figure = ax.figure
    while getattr(figure, "figure", figure) is not figure:  # a SubFigure's parent chain ends at the Figure
        figure = figure.figure
    return figure


def _element_colour(i: int, n: int):
    return colormaps["tab20" if n > 10 else "tab10"](i % 20)


#: Column titles of :func:`plot_flow` (the two partition panels only with ``mask``).
FLOW_PANELS = ("x", "g·x", "split: B pixels", "g·split", "z = f(x)", "f(g·x)", "g·f(x)")


@torch.no_grad()
def _flow_row(container, model, x: torch.Tensor, G: Group, g: GroupElement, mask: Optional[torch.Tensor]) -> None:
    gx = G.act_image(x, g)
    z, z_moved = model(x)[0], model(gx)[0]
    g_z = G.act_image(z, g)
    log_p, log_p_moved = float(model.log_prob(x)[0]), float(model.log_prob(gx)[0])
    error = float((z_moved.to(torch.float64) - g_z.to(torch.float64)).abs().max())
    panels = [(x, _IMAGE_CMAP), (gx, _IMAGE_CMAP)]
    titles = list(FLOW_PANELS[:2])
    if mask is not None:  # the flow splits g·x by the same mask; it should have been moved along (g·mask)
        panels += [(mask, "Greys"), (G.act_image(mask, g), "Greys")]
        titles += list(FLOW_PANELS[2:4])
    panels += [(z, _FEATURE_CMAP), (z_moved, _FEATURE_CMAP), (g_z, _FEATURE_CMAP)]
    titles += list(FLOW_PANELS[4:])
    axes = container.subplots(1, len(panels))
    limit = max(float(t.abs().max()) for t in (z, z_moved, g_z)) or 1.0
    for ax, (t, cmap), title in zip(axes, panels, titles):
        image = t[0, 0].detach().to(torch.float64).cpu().numpy()
        low, high = (-limit, limit) if cmap == _FEATURE_CMAP else (min(0.0, float(image.min())), max(1.0, float(image.max())))
        _show(ax, image, title, cmap, low, high)
    container.suptitle(
        f"{G.name}, {G.describe(g)}: log p(x) = {log_p:.2f}, log p(g·x) = {log_p_moved:.2f}; "
        f"max |f(g·x) − g·f(x)| = {error:.1e}", fontsize=10,
    )


def plot_flow(model, x: torch.Tensor, G: Group, g: GroupElement, *, mask: Optional[torch.Tensor] = None) -> Figure:
    r"""A flow on an image and on its transform: does the latent follow, does :math:`\log p` stay?

    Panels: :math:`x`, :math:`g\cdot x`, optionally the split (``mask``, 1 on the transformed pixels
    B) and :math:`g\cdot` mask (the flow splits :math:`g\cdot x` by the same mask; an equivariant
    flow needs :math:`g\cdot` mask = mask), then :math:`f(x)`, :math:`f(g\cdot x)`,
    :math:`g\cdot f(x)` (channel 0). The title prints both log-densities and the equivariance error.

    Args:
        model: a :class:`~gflows.flows.FlowModel` of images (called under ``torch.no_grad()``).
        x: one image ``(1, C, H, W)``; ``mask``: ``(1, 1, H, W)`` or ``None``.
    """
    _check_single_image(x)
    n = len(FLOW_PANELS) - (0 if mask is not None else 2)
    fig = Figure(figsize=(1.45 * n + 0.4, 2.1), layout="constrained")
    _flow_row(fig, model, x, G, g, mask)
    return fig


def flow_grid(model, x: torch.Tensor, G: Group, *, elements: Optional[Sequence[GroupElement]] = None,
              mask: Optional[torch.Tensor] = None) -> Figure:
    """:func:`plot_flow` for several elements (default ``G.exact_elements()``), one row each: the static
    twin of :func:`gflows.widgets.flow_explorer`."""
    _check_single_image(x)
    elements = list(G.exact_elements() if elements is None else elements)
    n = len(FLOW_PANELS) - (0 if mask is not None else 2)
    fig = Figure(figsize=(1.45 * n + 0.4, 2.1 * len(elements)), layout="constrained")
    for container, g in zip(fig.subfigures(len(elements), 1, squeeze=False)[:, 0], elements):
        _flow_row(container, model, x, G, g, mask)
    return fig


# ------------------------------------------------------------------------------ Haar averaging
def _field_panel(ax: Axes, field: Callable[[torch.Tensor], torch.Tensor], G: Group, point: torch.Tensor,
                 grid: torch.Tensor, title: str) -> None:
    """Quiver of ``field`` on ``grid``; at each orbit point g·x the arrows f(g·x) (colour) and g·f(x) (outline)."""
    values = field(grid)
    ax.quiver(grid[:, 0].numpy(), grid[:, 1].numpy(), values[:, 0].numpy(), values[:, 1].numpy(),
              color="0.7", angles="xy", scale_units="xy", scale=None, width=0.004)
    at_point = field(point)
    scale = float(torch.cat([field(G.act_points(point, g)) for g in G.elements()]).norm(dim=-1).max()) or 1.0
    length = 0.6 / scale                                          # the longest orbit arrow is 0.6 long
    for i, g in enumerate(G.elements()):
        where = G.act_points(point, g)[0].numpy()
        colour = _element_colour(i, G.order)
        moved_then_f = field(G.act_points(point, g))[0].numpy() * length
        f_then_moved = G.act_points(at_point, g)[0].numpy() * length
        ax.annotate("", where + f_then_moved, where, zorder=4,
                    arrowprops=dict(arrowstyle="-|>", lw=2.6, color="black", fill=False, shrinkA=0, shrinkB=0))
        ax.annotate("", where + moved_then_f, where, zorder=5,
                    arrowprops=dict(arrowstyle="-|>", lw=1.4, color=colour, shrinkA=0, shrinkB=0))
        ax.scatter(*where, s=30, color=colour, edgecolors="black" if i == 0 else "none", zorder=6)
    extent = float(grid.abs().max()) * 1.1
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


@torch.no_grad()
def _symmetrization_row(container, field: Callable[[torch.Tensor], torch.Tensor], G: Group, point,
                        extent: float, arrows: int) -> None:
    point = _as_points(point)[:1]
    ticks = torch.linspace(-extent, extent, arrows, dtype=torch.float64)
    grid = _square_grid(ticks)
    averaged = symmetrize(field, G)
    axes = container.subplots(1, 2)
    for ax, f, name in zip(axes, (field, averaged), ("f", "f̄ (average over the group)")):
        at_point = checks.equivariance_error(f, point, G)
        on_grid = checks.equivariance_error(f, grid, G)
        _field_panel(ax, f, G, point, grid,
                     f"{name}\nmax |f(g·x) − g·f(x)|: {at_point:.1e} at x, {on_grid:.1e} on the grid")
    container.suptitle(f"{G.name} ({G.order} element{'s' if G.order > 1 else ''}): colour f(g·x), black outline g·f(x)", fontsize=10)


def plot_symmetrization(field: Callable[[torch.Tensor], torch.Tensor], G: Group, point, *, extent: float = 2.0,
                        arrows: int = 15) -> Figure:
    r"""A vector field of the plane and its Reynolds average over ``G``, side by side.

    Each panel draws the field on a grid (grey) and, at every point :math:`g\cdot x` of the orbit of
    ``point``, two arrows: :math:`f(g\cdot x)` in the element's colour and :math:`g\cdot f(x)` as a
    black outline (same scale). They coincide for every element exactly when the field is
    equivariant at ``x``; the titles print the measured errors
    :math:`\max_g\lvert f(g\cdot x) - g\cdot f(x)\rvert` at ``x`` and on the grid
    (:func:`gflows.checks.equivariance_error`). The right panel is
    :func:`gflows.symmetrize.symmetrize` of the left one: always equivariant.

    Args:
        field: a map of points ``(B, 2) float64 -> (B, 2)``.
        G: the group, acting by its 2x2 matrices (every element; any C_N or D_N).
        point: the point x, ``(2,)``.
        extent: the square ``[-extent, extent]^2`` is drawn; arrows: grid arrows per side.
    Returns:
        A figure with two axes.
    """
    fig = Figure(figsize=(9.0, 4.9), layout="constrained")
    _symmetrization_row(fig, field, G, point, extent, arrows)
    return fig


def symmetrization_grid(field: Callable[[torch.Tensor], torch.Tensor], groups_: Sequence[Group], point, *,
                        extent: float = 2.0, arrows: int = 15) -> Figure:
    """:func:`plot_symmetrization` for several groups, one row each (``fig.subfigs``): the static twin of
    :func:`gflows.widgets.symmetrization_explorer`."""
    fig = Figure(figsize=(9.0, 4.9 * len(groups_)), layout="constrained")
    for container, G in zip(fig.subfigures(len(groups_), 1, squeeze=False)[:, 0], groups_):
        _symmetrization_row(container, field, G, point, extent, arrows)
    return fig


# ------------------------------------------------------------------------------ transport maps
def _transport_frame(ax: Axes, transport, positions: torch.Tensor, colours: np.ndarray, t: float,
                     resolution: int) -> None:
    """The density rho_t of a :class:`~gflows.transport.MoserTransport` and the moved points at time t."""
    half = transport.half_width
    ticks = torch.linspace(-half, half, resolution, dtype=torch.float64)
    grid = _square_grid(ticks)
    density = transport.density(grid, t).reshape(resolution, resolution).numpy()
    ax.imshow(density, origin="lower", extent=(-half, half, -half, half), cmap="Blues", interpolation="bilinear")
    ax.scatter(positions[:, 0].numpy(), positions[:, 1].numpy(), c=colours, cmap="hsv", s=4,
               vmin=-np.pi, vmax=np.pi, linewidths=0)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t = {t:.2f}", fontsize=9)


@torch.no_grad()
def _trajectory_and_colours(transport, points) -> Tuple[torch.Tensor, np.ndarray]:
    points = _as_points(points)
    return transport.trajectory(points), torch.atan2(points[:, 1], points[:, 0]).numpy()


def plot_transport(transport, points, *, times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                   resolution: int = 120) -> Figure:
    r"""Snapshots of a transport flow: :math:`\rho_t` (blue) and the points :math:`X_t(x)` at several times.

    Args:
        transport: a :class:`gflows.transport.MoserTransport` (``trajectory``, ``density``,
            ``half_width``, ``n_steps``).
        points: ``(P, 2)`` starting points in the square, coloured by their initial angle (so an
            equivariant flow keeps the colour pattern symmetric).
        times: snapshot times, rounded to the nearest RK4 step :math:`k/K`.
    Returns:
        A figure with one axes per time.
    """
    path, colours = _trajectory_and_colours(transport, points)
    fig = Figure(figsize=(2.3 * len(times), 2.5), layout="constrained")
    for ax, t in zip(fig.subplots(1, len(times), squeeze=False)[0], times):
        k = int(round(t * transport.n_steps))
        _transport_frame(ax, transport, path[k], colours, k / transport.n_steps, resolution)
    return fig


def transport_animation(transport, points, *, n_frames: int = 17, resolution: int = 80, size: float = 3.6,
                        dpi: int = 60):
    r"""The flow of :func:`plot_transport` as a ``matplotlib.animation.FuncAnimation`` of ``n_frames`` frames.

    For the book: ``IPython.display.HTML(animation_html(transport_animation(...)))`` embeds the
    frames as PNGs with a player, so the animation plays without a kernel or a network; ``size``
    (inches) and ``dpi`` keep it small (roughly 50-100 KB per frame).
    """
    path, colours = _trajectory_and_colours(transport, points)
    steps = np.unique(np.round(np.linspace(0, transport.n_steps, n_frames)).astype(int))
    fig = Figure(figsize=(size, size), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()

    def draw(k: int) -> None:
        ax.clear()
        _transport_frame(ax, transport, path[k], colours, k / transport.n_steps, resolution)

    return FuncAnimation(fig, draw, frames=list(steps), interval=250)


#: Text for the player buttons of ``FuncAnimation.to_jshtml``, whose icons otherwise come from a CDN.
_PLAYER_ICONS = {
    "fa fa-minus": "\u2212", "fa fa-fast-backward": "|\u25c2", "fa fa-step-backward": "\u25c2",
    "fa fa-play fa-flip-horizontal": "\u25c0", "fa fa-pause": "\u275a\u275a", "fa fa-play": "\u25b6",
    "fa fa-step-forward": "\u25b8", "fa fa-fast-forward": "\u25b8|", "fa fa-plus": "+",
}


def animation_html(animation) -> str:
    """``animation.to_jshtml()`` made self-contained: the frames and player as HTML, with no request
    to another host (matplotlib's player loads Font Awesome from a CDN for its button icons; the
    buttons get plain-text symbols instead), so it plays in an offline book."""
    html = re.sub(r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">', "", animation.to_jshtml())
    for icon, text in _PLAYER_ICONS.items():
        html = html.replace(f'<i class="{icon}"></i>', text)
    if "://" in re.sub(r"data:image/\w+;base64,[^\"']*", "", html):
        raise RuntimeError("matplotlib's animation player changed: it still refers to another host")
    return html


def _tiles(images: torch.Tensor, columns: int) -> np.ndarray:
    """``(N, C, H, W)`` images tiled ``columns`` to a row, one blank pixel between tiles:
    ``(rows*(H+1)-1, columns*(W+1)-1)`` for C = 1, with a trailing axis of 3 for C = 3 (RGB)."""
    n, channels, h, w = images.shape
    rows = -(-n // columns)
    pictures = images.detach().to(torch.float64).cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, channels), np.nan if channels == 1 else 1.0)
    for i, picture in enumerate(pictures):
        r, q = divmod(i, columns)
        canvas[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = picture
    return canvas[..., 0] if channels == 1 else canvas


def image_grid(images: torch.Tensor, *, columns: Optional[int] = None, title: Optional[str] = None,
               ax: Optional[Axes] = None) -> Figure:
    """A batch of images as one picture, ``columns`` tiles to a row (default: as square as possible).

    Args:
        images: ``(N, C, H, W)`` with C = 1 (drawn dark on light, like ink) or C = 3 (RGB), values
            in [0, 1] (values outside are clipped).
        title: the axes' title.
        ax: draw into this axes instead of a new figure.
    Returns:
        The figure holding the axes; its one image is the tiled canvas (blank pixels between tiles).
    """
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"expected images (N, C, H, W) with N >= 1 and C = 1 or 3, got {shape}")
    columns = columns or _grid_shape(len(images))[1]
    canvas = _tiles(images, columns)
    if ax is None:
        height, width = canvas.shape[:2]
        scale = min(0.09, 7.0 / width)  # inches per pixel: about 7 inches wide at most
        fig = Figure(figsize=(width * scale + 0.2, height * scale + (0.45 if title else 0.2)), layout="constrained")
        ax = fig.add_subplot()
    ax.imshow(canvas, cmap=_IMAGE_CMAP if canvas.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return _root_figure(ax)


def plot_curves(curves: Mapping[str, Tuple[Sequence[float], Sequence[float], Optional[Sequence[float]]]], *,
                xlabel: str, ylabel: str = "test bits/dim", title: Optional[str] = None, logx: bool = False,
                xticks: Optional[Sequence[float]] = None, ax: Optional[Axes] = None) -> Figure:
    """Curves of several models: one line each, with a band of plus or minus one deviation where given.

    Each model has its own abscissae (e.g. seconds of training, which differ between models).

    Args:
        curves: ``{label: (xs, means, stds or None)}``, e.g. steps, seconds or numbers of training
            images, and the mean test bits/dim over seeds with its standard deviation.
        xlabel, ylabel, title: the axes' labels.
        logx: a logarithmic x-axis.
        xticks: ticks at these values, labelled with them (e.g. the training-set sizes).
        ax: draw into this axes instead of a new figure.
    Returns:
        The figure; each model is one line (and one band where deviations are given).
    """
    if ax is None:
        fig = Figure(figsize=(6.0, 3.8), layout="constrained")
        ax = fig.add_subplot()
    for label, (xs, means, stds) in curves.items():
        (line,) = ax.plot(xs, means, marker=".", label=label)
        if stds is not None:
            low = np.asarray(means, dtype=float) - np.asarray(stds, dtype=float)
            ax.fill_between(xs, low, low + 2 * np.asarray(stds, dtype=float), color=line.get_color(), alpha=0.2, lw=0)
    if logx:
        ax.set_xscale("log")
    if xticks is not None:
        ax.set_xticks(list(xticks), [f"{t:g}" for t in xticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _root_figure(ax)


@torch.no_grad()
def density_image(log_prob: Callable[[torch.Tensor], torch.Tensor], extent: float, *, resolution: int = 200,
                  dtype: torch.dtype = torch.float64, chunk: int = 16384) -> np.ndarray:
    r"""The density :math:`\exp(\log p)` at the cell midpoints of a ``resolution`` x ``resolution`` grid of
    :math:`[-\text{extent}, \text{extent}]^2`: an array of shape ``(resolution, resolution)``, row ``i`` at
    height :math:`y_i` (draw it with ``origin="lower"``). Points outside the support (``log p = -inf``)
    give 0.

    Args:
        log_prob: map ``(N, 2) -> (N,)`` natural-log densities, called on chunks of ``chunk`` points
            of dtype ``dtype`` (``torch.float32`` for a float32 model).
    """
    if resolution < 1 or extent <= 0:
        raise ValueError(f"need resolution >= 1 and extent > 0, got {resolution} and {extent}")
    ticks = (torch.arange(resolution, dtype=torch.float64) + 0.5) * (2 * extent / resolution) - extent
    grid = _square_grid(ticks).to(dtype)
    values = torch.cat([log_prob(part).detach().to(torch.float64).cpu() for part in grid.split(chunk)])
    if values.shape != (resolution * resolution,):
        raise ValueError(f"log_prob must map (N, 2) points to (N,) values, got shape {tuple(values.shape)}")
    return values.exp().reshape(resolution, resolution).numpy()


def density_grid(rows: Mapping[str, Mapping[str, Callable[[torch.Tensor], torch.Tensor]]],
                 extents: Mapping[str, float], *, resolution: int = 150, dtype: torch.dtype = torch.float64,
                 panel: float = 2.3) -> Figure:
    r"""Densities of the plane in a grid of panels: one row per data set, one column per model.

    Every row shares one colour scale, set by its first entry (e.g. the true density): a model that
    puts too little mass somewhere looks paler there, one that spreads it looks washed out.

    Args:
        rows: ``{row title: {column title: log_prob}}``; every row has the same column titles, in order.
        extents: half-width of the square drawn in each row (e.g. ``ToyDensity.extent``).
        resolution, dtype: as in :func:`density_image`.
        panel: width and height of one panel in inches.
    Returns:
        A figure with ``len(rows) * len(columns)`` axes, titled ``"row: column"``.
    """
    columns = [list(r) for r in rows.values()]
    if not columns or any(c != columns[0] for c in columns):
        raise ValueError("every row needs the same columns in the same order")
    columns = columns[0]
    fig = Figure(figsize=(panel * len(columns), panel * len(rows) + 0.2), layout="constrained")
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for ax_row, (row, entries) in zip(axes, rows.items()):
        extent = float(extents[row])
        images = [density_image(f, extent, resolution=resolution, dtype=dtype) for f in entries.values()]
        top = float(images[0].max()) or 1.0
        for ax, column, image in zip(ax_row, columns, images):
            ax.imshow(image, origin="lower", extent=(-extent, extent, -extent, extent), cmap="Blues",
                      vmin=0.0, vmax=top, interpolation="nearest")
            ax.set_title(f"{row}: {column}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def plot_spread(x: Sequence[float], curves: Mapping[str, np.ndarray], *, ax: Optional[Axes] = None,
                reference: Optional[float] = None, reference_label: str = "", log_x: bool = False,
                xlabel: str = "", ylabel: str = "", colors: Optional[Sequence] = None, linestyle: str = "-",
                top: Optional[float] = None) -> Figure:
    r"""Curves measured over several runs: the mean as a line with markers, :math:`\pm` one standard
    deviation over the runs as error bars (none for a single run).

    Args:
        x: the ``P`` abscissae.
        curves: ``{label: values}`` with values of shape ``(runs, P)`` (or ``(P,)`` for one run).
        ax: draw into this axes instead of a new figure (call again with the same axes to add curves).
        reference: a horizontal line, e.g. the entropy that bounds a test NLL from below.
        log_x: logarithmic x axis (base 2).
        colors: one colour per curve (default: the ``tab10`` colours in order); ``linestyle`` for all.
        top: upper limit of the y axis. A mean above it (e.g. a model that overfits a tiny training
            set) is marked by a triangle on the upper edge, labelled with its value.
    Returns:
        The figure holding the axes.
    """
    x = np.asarray(x, dtype=float)
    if ax is None:
        fig = Figure(figsize=(5.5, 3.6), layout="constrained")
        ax = fig.add_subplot()
    colors = list(colors) if colors is not None else [_element_colour(i, 10) for i in range(len(curves))]
    if len(colors) < len(curves):
        raise ValueError(f"{len(curves)} curves need as many colours, got {len(colors)}")
    for color, (label, values) in zip(colors, curves.items()):
        values = np.atleast_2d(np.asarray(values, dtype=float))
        if values.shape[1] != len(x):
            raise ValueError(f"curve {label!r} has {values.shape[1]} points, x has {len(x)}")
        mean = values.mean(axis=0)
        spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
        above = mean > top if top is not None else np.zeros(len(x), dtype=bool)
        shown = np.where(above, np.nan, mean)          # the line breaks where a mean is off the axis
        ax.errorbar(x, shown, yerr=np.where(above, np.nan, spread) if len(values) > 1 else None, marker="o", ms=3.5,
                    capsize=3, lw=1.4, ls=linestyle, label=label, color=color)
        for xi, value in zip(x[above], mean[above]):
            ax.plot([xi], [top], marker="^", ms=8, color=color, clip_on=False)
            ax.annotate(f"{value:.3g}", (xi, top), xytext=(5, -11), textcoords="offset points", fontsize=7, color=color)
    if reference is not None:
        ax.axhline(reference, ls="--", lw=1, color="0.3", label=reference_label or None)
    if top is not None:  # after the reference line, so that the lower limit still shows it
        ax.set_ylim(top=top)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, frameon=False)
    return _root_figure(ax)
