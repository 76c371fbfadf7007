"""The Colab setup cell, run for real in fresh virtual environments that mimic Colab.

Colab ships numpy 2, torch and ipywidgets 7.7.1 preinstalled. The cell must install escnn and gflows
next to them in one go: no numpy, torch or ipywidgets change, no restart of the runtime, ``import gflows`` working in the same
process right after it, and nothing done at all when run again. The cell installs the tag
``v<version>``; here that tag is made on a clone of this repository's committed HEAD, and the cell
installs from the clone (``git+file://``) instead of GitHub.

Each environment takes a minute or two to install and needs PyPI, so these tests run in ``.ci/run``
and where ``GFLOWS_TEST_SETUP_CELL=1``, and skip otherwise. They run on this interpreter, with
numpy 2 (as on Colab) and with numpy 1.26 (older runtimes); ``GFLOWS_SETUP_CELL_PYTHONS`` adds
further interpreters, e.g. ``GFLOWS_SETUP_CELL_PYTHONS="python3.12 python3.13"`` (each installs
torch from PyPI, several GB with its CUDA libraries, where no local CPU wheel exists).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import book_pages

setup_cell = book_pages.tool("setup_cell")

pytestmark = pytest.mark.skipif(os.environ.get("GFLOWS_TEST_SETUP_CELL") != "1",
                                reason="installs Colab-like venvs from PyPI: set GFLOWS_TEST_SETUP_CELL=1")

TORCH = "torch==2.13.0"
#: (interpreter, what is preinstalled): numpy 2 with the newest ipywidgets; numpy 1.26 with the
#: ipywidgets Colab ships (7.7.1), the lowest version gflows declares
ENVIRONMENTS = [(sys.executable, ("numpy>=2", TORCH)), (sys.executable, ("numpy==1.26.*", TORCH, "ipywidgets==7.7.1"))]
ENVIRONMENTS += [(python, ("numpy>=2", TORCH)) for python in os.environ.get("GFLOWS_SETUP_CELL_PYTHONS", "").split()]
LABELS = [f"{'this-python' if python == sys.executable else python}-{'-'.join(p for p in packages if p != TORCH)}"
          for python, packages in ENVIRONMENTS]

# what the notebook does right after the setup cell, in the same process: import and use gflows,
# and move a widget's slider (its figure must change)
AFTER_THE_CELL = """
import numpy, torch, ipywidgets
import gflows
from gflows import checks, groups, models, runtime, widgets
G = groups.get("C4")
model = models.build("coupling", group=G, data_shape=(1, 8, 8), depth=1, width=8)
error = checks.invariance_error(model.log_prob, torch.rand(2, 1, 8, 8), G)
slider, output = widgets.equivariance_explorer(lambda t: t ** 2, torch.rand(1, 1, 8, 8), G).children
first = output.outputs[0]["data"]["image/png"]
slider.value = 1
redrawn = output.outputs[0]["data"]["image/png"] != first
print("after:", numpy.__version__, torch.__version__, ipywidgets.__version__, runtime.profile(), error < 1e-4,
      redrawn, gflows.__version__)
"""

VERSIONS = "import numpy, torch, ipywidgets; print('before:', numpy.__version__, torch.__version__, ipywidgets.__version__)"


def _run(python, *args, cwd, timeout=900) -> subprocess.CompletedProcess:
    """``python *args`` in ``cwd`` (not this checkout, whose ``gflows/`` would be importable from it)."""
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "GFLOWS_PROFILE": ""})


@pytest.mark.parametrize("python, preinstalled", ENVIRONMENTS, ids=LABELS)
def test_setup_cell_installs_without_changing_numpy_torch_or_ipywidgets_or_restarting(tmp_path, python, preinstalled):
    interpreter = shutil.which(python)
    assert interpreter, f"{python} is not on PATH"
    venv = tmp_path / "colab"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    colab = venv / "bin" / "python"
    installed = _run(colab, "-m", "pip", "install", "-q", *preinstalled, "ipywidgets", cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    before = _run(colab, "-c", VERSIONS, cwd=tmp_path, timeout=120).stdout.split()

    release = tmp_path / "repository"   # the repository at its release tag, as on GitHub
    subprocess.run(["git", "clone", "-q", str(book_pages.ROOT), str(release)], check=True)
    subprocess.run(["git", "-C", str(release), "tag", f"v{setup_cell.package_version()}"], check=True)
    cell = setup_cell.render().replace(setup_cell.repository_url(), release.as_uri())
    assert f"@v{setup_cell.package_version()}" in cell
    first = _run(colab, "-c", cell + "\n" + AFTER_THE_CELL, cwd=tmp_path)
    assert first.returncode == 0, f"the cell or the import after it failed:\n{first.stdout}\n{first.stderr}"
    assert first.stdout.split()[-8:] == ["after:", *before[1:], "quick", "True", "True", setup_cell.package_version()], \
        first.stdout
    assert "ERROR" not in first.stderr, f"pip reported a conflict:\n{first.stderr}"

    again = _run(colab, "-c", cell, cwd=tmp_path, timeout=60)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", ""), "the cell must do nothing once gflows imports"
