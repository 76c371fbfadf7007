"""The widgets of :mod:`gflows.widgets` redraw their figure when a control moves (no browser needed:
the figure is the PNG in the ``Output``'s outputs). ``tests/test_setup_cell.py`` runs the same on
ipywidgets 7.7.1, the version Colab ships."""

import matplotlib
import pytest
import torch

from gflows import groups, models, widgets

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")


def _png(output):
    (shown,) = output.outputs
    return shown["data"]["image/png"]


def test_the_element_sliders_redraw_for_each_element():
    G = groups.get("C4")
    x = torch.rand(1, 1, 8, 8)
    model = models.build("coupling", group=G, data_shape=(1, 8, 8), depth=1, width=4)
    model(torch.rand(4, 1, 8, 8))
    for widget in (widgets.equivariance_explorer(lambda t: t ** 2, x, G), widgets.flow_explorer(model.eval(), x, G)):
        slider, output = widget.children
        first = _png(output)
        slider.value = 1
        assert _png(output) != first, "moving the slider redraws the figure"


def test_the_symmetrization_explorer_redraws_for_each_group_and_point():
    widget = widgets.symmetrization_explorer(lambda p: p + torch.tensor([1.0, 0.0], dtype=p.dtype), max_order=4)
    (family, order), (x, _), output = widget.children[0].children, widget.children[1].children, widget.children[2]
    seen = {_png(output)}
    for control, value in ((order, 3), (family, "D"), (x, 0.5)):
        control.value = value
        seen.add(_png(output))
    assert len(seen) == 4
