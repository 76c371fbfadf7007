"""The first code cell of every chapter: installs gflows where it is missing (Colab), else does nothing.

The repository address lives in one place, ``_config.yml`` (``repository.url``), and the version in
one place, ``gflows/__init__.py`` (``__version__``): the cell installs the tag ``v<version>`` of the
repository, never the moving default branch. This script renders the cell from both and writes it
into every notebook; ``tests/test_book.py`` fails when a notebook's cell has drifted, and
``tests/test_setup_cell.py`` runs it in Colab-like virtual environments. After editing
``_config.yml``, the version or the cell, run::

    python book/_tools/setup_cell.py
"""

from __future__ import annotations

import pathlib
import re
import sys

import nbformat
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MARKER = "# gflows setup cell"

TEMPLATE = '''\
# gflows setup cell: installs gflows {version} where it is missing (e.g. on Colab); does nothing elsewhere.
# It keeps the numpy and torch already installed and never restarts the runtime: escnn goes in
# without py3nj and lie_learn, which only its 3-D rotation groups use (gflows/_escnn.py).
# On a GPU runtime gflows.runtime.profile() is "full" by itself (GFLOWS_PROFILE=quick|full overrides).
import importlib, importlib.util, subprocess, sys
if importlib.util.find_spec("gflows") is None:
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["git+{url}@v{version}"], check=True)
    subprocess.run(pip + ["--no-deps", "escnn==1.0.11"], check=True)   # after gflows: pip checks no deps
    importlib.invalidate_caches()'''


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def package_version() -> str:
    """``gflows.__version__``, read from the source (no import: torch need not be installed)."""
    text = (ROOT / "gflows" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, flags=re.M).group(1)


def render() -> str:
    """The setup cell's source: the tag ``v<version>`` of the repository named in ``_config.yml``."""
    return TEMPLATE.format(url=repository_url(), version=package_version())


def notebooks() -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def first_code_cell(notebook) -> "nbformat.NotebookNode | None":
    return next((cell for cell in notebook.cells if cell.cell_type == "code"), None)


#: The cell's tags: the book shows its input collapsed behind a toggle (it still runs as it is).
TAGS = ["hide-input"]


def write_all() -> None:
    """Put the rendered cell first among the code cells of every notebook (replacing an old one)."""
    source = render()
    for path in notebooks():
        notebook = nbformat.read(path, as_version=4)
        cell = first_code_cell(notebook)
        if cell is not None and cell.source.startswith(MARKER):
            cell.source = source
        else:
            position = notebook.cells.index(cell) if cell is not None else len(notebook.cells)
            cell = nbformat.v4.new_code_cell(source)
            notebook.cells.insert(position, cell)
        cell.metadata["tags"] = [*TAGS, *(t for t in cell.metadata.get("tags", []) if t not in TAGS)]
        nbformat.write(notebook, path)
        print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    write_all()
    sys.exit(0)
