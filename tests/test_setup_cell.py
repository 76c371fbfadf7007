"""The Colab setup cell, run for real in a fresh virtual environment that mimics Colab.

Colab ships numpy 2 and torch. The cell must install gflows with ``numpy<2`` (for lie_learn, which
escnn imports), restart the runtime (here: the process ends, killed by itself), and do nothing when
run again, after which ``import gflows`` works. gflows is installed from this repository's committed
HEAD (``git+file://``) instead of GitHub. Installing takes a minute or two and needs PyPI, so it runs
in ``.ci/run`` and where ``GFLOWS_TEST_SETUP_CELL=1``, and skips otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import book_pages

setup_cell = book_pages.tool("setup_cell")

pytestmark = pytest.mark.skipif(os.environ.get("GFLOWS_TEST_SETUP_CELL") != "1",
                                reason="installs a Colab-like venv from PyPI: set GFLOWS_TEST_SETUP_CELL=1")


def _run(python, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout)


def test_setup_cell_installs_restarts_once_then_does_nothing(tmp_path):
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    preinstalled = _run(python, "-m", "pip", "install", "-q", "numpy>=2", "torch==2.13.0")
    assert preinstalled.returncode == 0, preinstalled.stderr

    cell = tmp_path / "setup_cell.py"
    cell.write_text(setup_cell.render().replace(setup_cell.repository_url(), book_pages.ROOT.as_uri()))

    first = _run(python, cell)
    assert first.returncode == -signal.SIGKILL, f"expected a restart:\n{first.stdout}\n{first.stderr}"
    assert "restarting the runtime" in first.stdout

    second = _run(python, cell, timeout=60)
    assert (second.returncode, second.stdout) == (0, ""), second.stderr

    check = "import numpy, escnn, gflows.runtime as r; print(numpy.__version__.split('.')[0], r.profile())"
    imported = _run(python, "-c", check, timeout=120)
    assert imported.stdout.split() == ["1", "quick"], imported.stderr
