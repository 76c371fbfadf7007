"""Interactive twins of the figures in :mod:`gflows.viz` (ipywidgets).

Each widget is a control around a :mod:`gflows.viz` function and nothing else, so the figure a reader
gets by moving a slider is exactly the static figure the book prints for the same element.

The figure is rendered to PNG and put into an ``ipywidgets.Output`` as display data. That works the
same in a live kernel, in a headless test, and in a notebook executed with its widget state stored
(the last drawn figure is then part of the saved state).
"""

from __future__ import annotations

import base64
import io
from typing import Callable, Optional, Sequence

import ipywidgets
import torch

from . import groups, viz
from .groups import Group, GroupElement


def _display_data(fig) -> dict:
    """A Jupyter ``display_data`` output holding ``fig`` as a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": repr(fig)},
        "metadata": {},
    }


def _element_slider(G: Group, elements: Sequence[GroupElement], draw: Callable[[GroupElement], object]) -> ipywidgets.VBox:
    """A ``SelectionSlider`` over ``elements`` (labelled by ``G.describe``) and an ``Output`` showing ``draw(g)``."""
    slider = ipywidgets.SelectionSlider(
        options=[(G.describe(g), i) for i, g in enumerate(elements)], value=0, description="g =",
        continuous_update=False, layout=ipywidgets.Layout(width="420px"),
        style={"description_width": "initial"},
    )
    output = ipywidgets.Output()

    def redraw(change=None) -> None:
        output.outputs = (_display_data(draw(elements[slider.value])),)

    slider.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([slider, output])


def equivariance_explorer(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, G: Group, *,
                          elements: Optional[Sequence[GroupElement]] = None, **kwargs) -> ipywidgets.VBox:
    """A slider over group elements that redraws :func:`gflows.viz.plot_equivariance` for the chosen one.

    Args:
        f, x, G: as in :func:`gflows.viz.plot_equivariance` (``x`` is one image ``(1, C, H, W)``).
        elements: the slider's stops, default ``G.elements()`` (including interpolated rotations,
            whose error the title then shows); labelled by ``G.describe``.
        **kwargs: passed to :func:`gflows.viz.plot_equivariance` (``out_field_type``, ``channels``,
            ``log_prob``).
    Returns:
        ``VBox([slider, output])``; ``.children[0]`` is the ``SelectionSlider`` (its value is the
        element's position in ``elements``), ``.children[1]`` the ``Output`` holding the figure.
    """
    elements = list(G.elements() if elements is None else elements)
    return _element_slider(G, elements, lambda g: viz.plot_equivariance(f, x, G, g, **kwargs))


def flow_explorer(model, x: torch.Tensor, G: Group, *, elements: Optional[Sequence[GroupElement]] = None,
                  mask: Optional[torch.Tensor] = None) -> ipywidgets.VBox:
    """A slider over group elements that redraws :func:`gflows.viz.plot_flow`: the input turns, and the
    split, the latent and log p are shown for it. ``elements`` default to ``G.exact_elements()``;
    returns ``VBox([slider, output])`` like :func:`equivariance_explorer`."""
    elements = list(G.exact_elements() if elements is None else elements)
    return _element_slider(G, elements, lambda g: viz.plot_flow(model, x, G, g, mask=mask))


def symmetrization_explorer(field: Callable[[torch.Tensor], torch.Tensor], *, point=(1.2, 0.5), max_order: int = 8,
                            extent: float = 2.0) -> ipywidgets.VBox:
    """Controls for the group (C_N or D_N, N = 1..``max_order``) and the point x around
    :func:`gflows.viz.plot_symmetrization`: a vector field, its Reynolds average, the orbit of x and the
    measured equivariance errors. Returns ``VBox([HBox([family, N]), HBox([x, y]), output])``: a
    ``ToggleButtons`` (``"C"``/``"D"``), an ``IntSlider`` (N), two ``FloatSlider``s (the point) and the
    ``Output`` holding the figure."""
    family = ipywidgets.ToggleButtons(options=["C", "D"], value="C", description="group")
    order = ipywidgets.IntSlider(value=4, min=1, max=max_order, description="N", continuous_update=False)
    x, y = (ipywidgets.FloatSlider(value=float(v), min=-extent, max=extent, step=0.05, description=name,
                                   continuous_update=False) for v, name in zip(point, ("x", "y")))
    output = ipywidgets.Output()

    def redraw(change=None) -> None:
        G = groups.get(f"{family.value}{order.value}")
        fig = viz.plot_symmetrization(field, G, torch.tensor([x.value, y.value], dtype=torch.float64), extent=extent)
        output.outputs = (_display_data(fig),)

    for control in (family, order, x, y):
        control.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([ipywidgets.HBox([family, order]), ipywidgets.HBox([x, y]), output])
