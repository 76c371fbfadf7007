"""Bad input at the public boundary (``models.build``, ``FlowModel``) is refused with an error that
says what is wrong and what to do, instead of NaN or a message from deep inside torch or escnn."""

import copy
import math

import pytest
import torch

from gflows import models
from gflows.flows import dequantize

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGES = (1, 8, 8)


def _model(kind, shape=IMAGES, group="C4"):
    torch.manual_seed(0)
    model = models.build(kind, group=group, data_shape=shape, depth=1, width=4)
    model(torch.rand(4, *shape) if len(shape) == 3 else torch.randn(4, *shape))  # data-dependent initialisation
    return model.eval()


@pytest.mark.parametrize("kind", models.KINDS)
@pytest.mark.parametrize("bad, error, message", [
    (torch.full((2, *IMAGES), math.nan), ValueError, "NaN or infinite"),
    (torch.full((2, *IMAGES), math.inf), ValueError, "NaN or infinite"),
    (torch.full((2, *IMAGES), 1.5), ValueError, r"pixels in \[0, 1\].*got values in \[1.5, 1.5\]"),
    (torch.arange(2 * 64, dtype=torch.float32).reshape(2, *IMAGES) % 256, ValueError, r"dequantize"),
    (torch.zeros((2, *IMAGES), dtype=torch.uint8), TypeError, "floating-point tensor, got torch.uint8.*dequantise"),
    (torch.rand((2, *IMAGES), dtype=torch.float64), TypeError, r"float64 but the model is torch.float32"),
    (torch.rand(2, 1, 8, 7), ValueError, r"shape \(B, 1, 8, 8\)"),
])
def test_bad_images_are_refused_at_the_boundary(kind, bad, error, message):
    model = _model(kind)
    for method in (model.log_prob, model.bits_per_dim):
        with pytest.raises(error, match=message):
            method(bad)


def test_good_images_still_work_and_dequantised_pixels_pass():
    model = _model("coupling")
    pixels = torch.randint(0, 256, (3, *IMAGES), dtype=torch.uint8)
    bpd = model.bits_per_dim(dequantize(pixels))
    assert bpd.shape == (3,) and torch.isfinite(bpd).all()
    assert torch.isfinite(model.log_prob(torch.tensor([0.0, 1.0]).repeat(32).reshape(1, *IMAGES))).all()  # the ends of [0, 1]


@pytest.mark.parametrize("kind", models.KINDS)
@pytest.mark.parametrize("shape", [IMAGES, (2,)], ids=["images", "points"])
def test_empty_batches_and_zero_samples_give_empty_results(kind, shape):
    model = _model(kind, shape)
    assert model.log_prob(torch.empty(0, *shape)).shape == (0,)
    assert model.sample(0).shape == (0, *shape)
    z, logdet = model(torch.empty(0, *shape))
    assert z.shape == (0, *shape) and logdet.shape == (0,)


@pytest.mark.parametrize("kind", models.KINDS)
def test_an_evaluation_mode_model_deep_copies(kind):
    model = _model(kind)
    twin = copy.deepcopy(model)
    x = torch.rand(3, *IMAGES)
    with torch.no_grad():
        if kind != "residual":  # the residual flow's series log-det draws a fresh random probe per call
            torch.testing.assert_close(twin.log_prob(x), model.log_prob(x), rtol=0, atol=0)
        assert torch.isfinite(twin.log_prob(x)).all()
    assert all(not buffer.requires_grad for buffer in model.buffers()), "evaluation mode caches filters without a graph"


@pytest.mark.parametrize("value, message", [(-1, "temperature"), (math.nan, "temperature"), (-3, "number of samples"),
                                            (2.5, "number of samples")])
def test_sample_refuses_meaningless_arguments(value, message):
    model = _model("coupling")
    with pytest.raises(ValueError, match=message):
        model.sample(value) if message == "number of samples" else model.sample(2, temperature=value)


def test_temperature_zero_is_the_image_of_the_base_mode():
    model = _model("coupling")
    samples = model.sample(2, temperature=0)
    torch.testing.assert_close(samples[0], samples[1])
    torch.testing.assert_close(samples, model.inverse(torch.zeros(2, *IMAGES)))


@pytest.mark.parametrize("arguments, error, message", [
    (dict(data_shape="1,8,8"), ValueError, r"tuple of positive integers.*'1,8,8'"),
    (dict(data_shape="188"), ValueError, r"tuple of positive integers.*'188'"),
    (dict(data_shape=(1, 8)), ValueError, r"\(C, H, W\) for images or \(2,\) for points"),
    (dict(data_shape=(0, 8, 8)), ValueError, r"\(C, H, W\)"),
    (dict(data_shape=IMAGES, depth="2"), TypeError, r"depth must be an int, got '2'"),
    (dict(data_shape=IMAGES, width=2.7), TypeError, r"width must be an int, got 2.7"),
    (dict(data_shape=IMAGES, depth=True), TypeError, r"depth must be an int, got True"),
    (dict(data_shape=IMAGES, depth=0), ValueError, r"depth must be a positive integer"),
    (dict(data_shape=IMAGES, widht=8), TypeError, r"no hyperparameter 'widht' \(did you mean 'width'\?\)"),
    (dict(data_shape=IMAGES, split="checkerboard"), ValueError, r"rotation by 90° maps the pixel checkerboard of a 8x8"),
])
def test_models_build_refuses_bad_arguments_before_building(arguments, error, message):
    with pytest.raises(error, match=message):
        models.build("coupling", group="C4", **arguments)


def test_a_checkerboard_that_the_group_respects_still_builds():
    model = models.build("coupling", group="D4", data_shape=(1, 7, 7), depth=2, width=4, split="checkerboard")
    assert torch.isfinite(model.log_prob(torch.rand(2, 1, 7, 7))).all()
