"""Tests of gflows.viz (figures) and gflows.widgets (their interactive twins)."""

import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gflows import groups, viz, widgets
from gflows._escnn import enn

ERROR = re.compile(r"max \|f\(g·x\) − g·f\(x\)\| = ([0-9.e+-]+)")


def title_error(container) -> float:
    """The error printed in a (sub)figure's title."""
    return float(ERROR.search(container.get_suptitle()).group(1))


@pytest.fixture(scope="module")
def D4():
    return groups.get("D4")


@pytest.fixture(scope="module")
def steerable(D4):
    """A D4-steerable conv from one scalar field to two regular fields (16 channels), as plain tensors."""
    torch.manual_seed(0)
    in_type, out_type = D4.scalar_fields(1), D4.regular_fields(2)
    conv = enn.R2Conv(in_type, out_type, kernel_size=5, padding=2).eval()
    return (lambda x: conv(enn.GeometricTensor(x, in_type)).tensor), out_type


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.rand(1, 1, 9, 9)


def test_plot_equivariance_steerable_conv_error_is_round_off(D4, steerable, image):
    f, out_type = steerable
    fig = viz.plot_equivariance(f, image, D4, D4.elements()[1], out_field_type=out_type)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    assert [ax.get_title().split(",")[0] for ax in fig.axes] == list(viz.PANELS)
    assert "rotation by 90°" in fig.get_suptitle()
    assert title_error(fig) < 1e-5


def test_plot_equivariance_plain_conv_error_is_large(D4, image):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 5, padding=2)
    fig = viz.plot_equivariance(conv, image, D4, D4.elements()[1])
    assert title_error(fig) > 1e-2


def test_ignoring_the_fibre_permutation_is_not_the_group_action(D4, steerable, image):
    f, _ = steerable
    fig = viz.plot_equivariance(f, image, D4, D4.elements()[1], channels=[0, 1])
    assert title_error(fig) > 1e-2
    assert fig.axes[2].get_title() == "f(x), ch. 0..1"


def test_equivariance_grid_has_one_row_per_element(D4, steerable, image):
    f, out_type = steerable
    fig = viz.equivariance_grid(f, image, D4, out_field_type=out_type)
    assert len(fig.subfigs) == D4.order == 8
    assert len(fig.axes) == 5 * D4.order
    assert max(title_error(row) for row in fig.subfigs) < 1e-5
    chosen = D4.elements()[:3]
    assert len(viz.equivariance_grid(f, image, D4, elements=chosen, out_field_type=out_type).subfigs) == 3


def test_equivariance_figures_reject_a_batch(D4, steerable):
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        viz.plot_equivariance(steerable[0], torch.rand(2, 1, 9, 9), D4, D4.identity)


def test_plot_orbit_points_one_scatter_per_element():
    G = groups.get("D8")
    fig = viz.plot_orbit_points([[1.0, 0.5], [0.0, -2.0]], G)
    (ax,) = fig.axes
    assert len(ax.collections) == G.order
    assert all(len(c.get_offsets()) == 2 for c in ax.collections)
    radii = {round(float(r), 9) for c in ax.collections for r in torch.as_tensor(c.get_offsets()).norm(dim=1)}
    assert len(radii) == 2  # orthogonal matrices keep each orbit on its circle


def test_plot_orbit_points_over_a_density_into_given_axes():
    G = groups.get("C4")
    fig = Figure()
    ax = fig.add_subplot()
    returned = viz.plot_orbit_points(torch.tensor([1.0, 1.0]), G, ax=ax, legend=False, resolution=20,
                                     log_prob=lambda p: -0.5 * p.pow(2).sum(-1))
    assert returned is fig
    assert len(ax.collections) > G.order  # contour sets plus one scatter per element
    assert ax.get_legend() is None


def test_explorer_redraws_when_the_slider_moves(D4, steerable, image):
    f, out_type = steerable
    box = widgets.equivariance_explorer(f, image, D4, out_field_type=out_type)
    slider, output = box.children
    assert [label for label, _ in slider.options] == [D4.describe(g) for g in D4.elements()]
    first = output.outputs[0]["data"]["image/png"]
    slider.value = 1
    (shown,) = output.outputs
    assert shown["data"]["image/png"] != first
    assert shown["output_type"] == "display_data"


def test_plot_flow_and_its_widget_show_latents_log_p_and_the_split(D4):
    from gflows import models

    torch.manual_seed(0)
    model = models.build("coupling", group="D4", data_shape=(1, 6, 6), depth=2, width=4).eval()
    x = torch.rand(1, 1, 6, 6)
    mask = (torch.arange(6)[:, None] + torch.arange(6)[None, :]).remainder(2).float()[None, None]
    fig = viz.plot_flow(model, x, D4, D4.elements()[1], mask=mask)
    assert [ax.get_title() for ax in fig.axes] == list(viz.FLOW_PANELS)
    assert "log p(x)" in fig.get_suptitle() and float(fig.get_suptitle().split("= ")[-1]) < 1e-4
    assert len(viz.flow_grid(model, x, D4).subfigs) == 8
    explorer = widgets.flow_explorer(model, x, D4)
    slider, output = explorer.children
    slider.value = 3
    assert output.outputs[0]["data"]["image/png"]


def test_titles_print_log_p_of_x_and_of_its_image(D4, steerable, image):
    f, out_type = steerable
    invariant = lambda v: v.double().pow(2).flatten(1).sum(1)  # noqa: E731
    shifted = lambda v: v.flatten(1)[:, :1].sum(1)  # noqa: E731  (a pixel value: not invariant)
    values = re.compile(r"log p\(x\) = ([0-9.e+-]+),  log p\(g·x\) = ([0-9.e+-]+)")
    rotation = D4.elements()[1]
    same = values.search(viz.plot_equivariance(f, image, D4, rotation, out_field_type=out_type, log_prob=invariant).get_suptitle())
    assert same.group(1) == same.group(2)
    fig = viz.equivariance_grid(f, image, D4, out_field_type=out_type, log_prob=shifted)
    pairs = [values.search(sub.get_suptitle()).groups() for sub in fig.subfigs]
    assert any(a != b for a, b in pairs)


SYMMETRY_ERRORS = re.compile(r"max \|f\(g·x\) − g·f\(x\)\|: ([0-9.e+-]+) at x, ([0-9.e+-]+) on the grid")


def breeze(x):
    """A vector field of the plane with no symmetry, (B, 2) -> (B, 2)."""
    return torch.stack([0.6 + 0.5 * torch.sin(1.5 * x[:, 1]), 0.2 + 0.4 * x[:, 0] ** 2 - 0.3 * x[:, 1]], dim=-1)


def test_plot_symmetrization_measures_the_field_and_its_average():
    fig = viz.plot_symmetrization(breeze, groups.get("D5"), [1.2, 0.5], arrows=7)
    raw, averaged = (tuple(map(float, SYMMETRY_ERRORS.search(ax.get_title()).groups())) for ax in fig.axes)
    assert min(raw) > 0.1 and max(averaged) < 1e-12
    assert len(fig.axes[0].patches) == 0 and len(fig.axes[0].texts) == 2 * 10  # two arrows per orbit point
    grid = viz.symmetrization_grid(breeze, [groups.get("C3"), groups.get("D4")], [1.0, 0.2], arrows=5)
    assert len(grid.subfigs) == 2 and "D4 (8 elements)" in grid.subfigs[1].get_suptitle()


def test_symmetrization_explorer_redraws_for_the_chosen_group():
    box = widgets.symmetrization_explorer(breeze)
    (family, order), (x, y), output = box.children[0].children, box.children[1].children, box.children[2]
    first = output.outputs[0]["data"]["image/png"]
    family.value, order.value = "D", 5
    assert output.outputs[0]["data"]["image/png"] != first
    x.value = -0.7
    assert output.outputs[0]["output_type"] == "display_data"


def test_transport_snapshots_and_animation():
    from gflows.transport import MoserTransport, gaussian_bumps

    D4 = groups.get("D4")
    transport = MoserTransport(gaussian_bumps([[0.8, 0.3]], 0.25, group=D4), gaussian_bumps([[0.0, 0.0]], 0.5),
                               half_width=1.5, grid_size=16, n_steps=4)
    points = torch.rand(50, 2, dtype=torch.float64) * 2 - 1
    fig = viz.plot_transport(transport, points, times=(0.0, 0.5, 1.0), resolution=20)
    assert [ax.get_title() for ax in fig.axes] == ["t = 0.00", "t = 0.50", "t = 1.00"]
    final = torch.as_tensor(fig.axes[-1].collections[0].get_offsets())
    assert (final - transport(points)).abs().max() < 1e-12
    animation = viz.transport_animation(transport, points, n_frames=3, resolution=10, dpi=20)
    html = viz.animation_html(animation)
    assert html.count("data:image/png;base64") == 3
    assert "https://" not in html and "font-awesome" not in html      # plays in an offline book
    assert "\u25b6" in html                                             # the play button has a label

def test_image_grid_tiles_every_image_in_place():
    images = torch.rand(5, 1, 4, 3)
    fig = viz.image_grid(images, columns=3, title="five")
    (shown,) = fig.axes[0].get_images()
    canvas = shown.get_array()
    assert canvas.shape == (2 * 5 - 1, 3 * 4 - 1)                     # 2 rows, 3 columns, 1-pixel gaps
    for i, image in enumerate(images):
        r, q = divmod(i, 3)
        assert torch.allclose(torch.as_tensor(canvas[r * 5:r * 5 + 4, q * 4:q * 4 + 3]).double(), image[0].double())
    assert fig.axes[0].get_title() == "five"


def test_image_grid_draws_colour_images_and_refuses_other_shapes():
    images = torch.rand(4, 3, 2, 2)
    canvas = viz.image_grid(images).axes[0].get_images()[0].get_array()
    assert canvas.shape == (5, 5, 3)                                   # 2 x 2 tiles, RGB
    assert torch.allclose(torch.as_tensor(canvas[3:5, 3:5]).double(), images[3].permute(1, 2, 0).double())
    for bad in (torch.rand(2, 2, 4, 4), torch.rand(4, 4), torch.rand(0, 1, 4, 4)):
        with pytest.raises(ValueError, match="expected images"):
            viz.image_grid(bad)


def test_plot_curves_lines_and_bands():
    fig = viz.plot_curves({"mean of 3": ([0, 10, 20], [5.0, 4.0, 3.5], [0.1, 0.1, 0.2]), "one run": ([0, 10], [6.0, 5.0], None)},
                          xlabel="step")
    ax = fig.axes[0]
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[0, 10, 20], [0, 10]]
    assert list(ax.get_lines()[0].get_ydata()) == [5.0, 4.0, 3.5]
    assert len(ax.collections) == 1                                    # a band only where deviations are given
    assert ax.get_xlabel() == "step"
    sizes = [75, 150, 300]
    ax = viz.plot_curves({"a": (sizes, [3.0, 2.5, 2.0], [0.1, 0.2, 0.0])}, xlabel="training images", logx=True, xticks=sizes).axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["75", "150", "300"]


def _standard_normal(p):
    return -0.5 * p.pow(2).sum(-1) - torch.log(torch.tensor(2 * torch.pi, dtype=p.dtype))


def test_density_image_integrates_a_normal_to_one_with_rows_along_y():
    image = viz.density_image(_standard_normal, 6.0, resolution=120)
    assert image.shape == (120, 120)
    assert abs(image.sum() * (12.0 / 120) ** 2 - 1) < 1e-6
    upper = viz.density_image(lambda p: torch.where(p[:, 1] > 0, 0.0, -torch.inf), 1.0, resolution=4)
    assert (upper[:2] == 0).all() and (upper[2:] == 1).all()   # row i is height y_i; -inf gives 0


def test_density_image_calls_log_prob_in_chunks_of_the_given_dtype():
    seen = []

    def log_prob(p):
        seen.append((len(p), p.dtype))
        return _standard_normal(p)

    viz.density_image(log_prob, 2.0, resolution=10, dtype=torch.float32, chunk=30)
    assert seen == [(30, torch.float32)] * 3 + [(10, torch.float32)]
    with pytest.raises(ValueError, match=r"\(N,\)"):
        viz.density_image(lambda p: p, 2.0, resolution=4)


def test_density_grid_shares_one_colour_scale_per_row():
    wide = lambda p: _standard_normal(p / 2) - 2 * torch.log(torch.tensor(2.0, dtype=p.dtype))  # noqa: E731
    fig = viz.density_grid({"normal": {"truth": _standard_normal, "model": wide},
                            "wide": {"truth": wide, "model": _standard_normal}},
                           {"normal": 3.0, "wide": 5.0}, resolution=30)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["normal: truth", "normal: model", "wide: truth", "wide: model"]
    for row in (axes[:2], axes[2:]):
        first = row[0].images[0]
        assert all(ax.images[0].get_clim() == (0.0, first.get_array().max()) for ax in row)
    assert axes[2].images[0].get_extent() == [-5.0, 5.0, -5.0, 5.0]
    with pytest.raises(ValueError, match="same columns"):
        viz.density_grid({"a": {"truth": wide}, "b": {"model": wide}}, {"a": 1.0, "b": 1.0})


def test_plot_spread_draws_the_mean_and_the_standard_deviation_over_runs():
    runs = np.array([[1.0, 2.0, 4.0], [3.0, 2.0, 6.0]])
    fig = viz.plot_spread([32, 64, 128], {"model": runs, "one run": np.array([0.5, 0.4, 0.3])},
                          reference=0.25, reference_label="entropy", log_x=True)
    (ax,) = fig.axes
    mean_line = ax.containers[0].lines[0]
    assert np.allclose(mean_line.get_ydata(), [2.0, 2.0, 5.0])
    bars = ax.containers[0].lines[2][0].get_segments()
    assert np.allclose([seg[1, 1] - seg[0, 1] for seg in bars], 2 * runs.std(axis=0, ddof=1))
    assert ax.containers[1].has_yerr is False
    assert ax.get_xscale() == "log" and ax.lines[-1].get_ydata()[0] == 0.25
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["entropy", "model", "one run"]
    with pytest.raises(ValueError, match="3 points"):
        viz.plot_spread([1, 2], {"model": runs})


def test_plot_spread_marks_means_above_the_top_of_the_axis():
    runs = np.array([[2.0, 300.0], [2.2, 500.0]])
    fig = viz.plot_spread([32, 64], {"twin": runs}, top=3.0, colors=["tab:orange"], linestyle="--", reference=1.5)
    (ax,) = fig.axes
    assert ax.get_ylim()[0] < 1.5 and ax.get_ylim()[1] == 3.0   # the reference line stays in view
    (label,) = ax.texts
    assert label.get_text() == "400" and label.xy == (64.0, 3.0)
    mean_line = ax.containers[0].lines[0]
    assert mean_line.get_ydata()[0] == 2.1 and np.isnan(mean_line.get_ydata()[1])  # off the axis: no line
    assert ax.containers[0].lines[0].get_linestyle() == "--"
    with pytest.raises(ValueError, match="colours"):
        viz.plot_spread([1, 2], {"a": runs, "b": runs}, colors=["red"])
