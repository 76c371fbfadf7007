"""Shared pytest options: ``--device`` (cpu, or cuda where a GPU is lent) and ``--dtype``.

Under pytest-xdist (``make test`` runs ``-n auto``) the cores are shared out between the workers:
each worker, and every notebook kernel or process it starts, gets ``cores // workers`` threads.
Without this, every worker's torch would spin up a thread per core and they would fight for them
(a test that takes 40 s alone took over 15 minutes that way).

Property tests default to float64, where equivariance holds to ~1e-12 and a failure cannot hide
behind round-off; run with ``--dtype float32`` to see the float32 margins. ``built_book`` is the
built HTML book, for the tests that read it (they skip where it is not built).
"""

import os

import pytest
import torch

import book_pages
from threads import single_thread


def _share_the_cores_between_workers() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)   # inherited by notebook kernels and subprocesses
        torch.set_num_threads(threads)


_share_the_cores_between_workers()


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
