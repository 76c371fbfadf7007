"""Shared pytest options: ``--device`` (cpu, or cuda where a GPU is lent) and ``--dtype``.

Property tests default to float64, where equivariance holds to ~1e-12 and a failure cannot hide
behind round-off; run with ``--dtype float32`` to see the float32 margins. ``built_book`` is the
built HTML book, for the tests that read it (they skip where it is not built).
"""

import pytest
import torch

import book_pages
from threads import single_thread


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for the tests (cpu, cuda)")
    parser.addoption("--dtype", default="float64", choices=["float32", "float64"], help="floating dtype")


@pytest.fixture
def device(request) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture
def dtype(request) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def built_book():
    """The folder of the built HTML book, ``_build/html``."""
    if not (book_pages.HTML / "index.html").exists():
        book_pages.unavailable("the HTML book is not built: run `make book` first")
    return book_pages.HTML


@pytest.fixture
def one_thread():
    """The test runs in :func:`single_thread`; modules of tiny models use it for every test with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with single_thread():
        yield
