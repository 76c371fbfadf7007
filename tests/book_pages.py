"""The book as the tests see it: the documents ``_toc.yml`` lists, and the built HTML in ``_build/html``.

Tests of the built book skip when it is not built (or no browser is installed); with the environment
variable ``GFLOWS_REQUIRE_BROWSER=1``, as in ``.ci/run`` after ``make book``, they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def _files(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["file"]] if "file" in node else []) + [f for value in node.values() for f in _files(value)]
    if isinstance(node, list):
        return [f for item in node for f in _files(item)]
    return []


def documents() -> list[str]:
    """Every document of ``_toc.yml`` without suffix, the root first: ``["book/intro", "book/01_symmetry", ...]``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + _files(toc.get("parts", toc.get("chapters", [])))


def tool(name: str):
    """The script ``book/_tools/<name>.py`` imported as a module (``book/_tools`` is no package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "book" / "_tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unavailable(reason: str) -> None:
    """Skip a test of the built book for a missing prerequisite; fail under ``GFLOWS_REQUIRE_BROWSER=1``."""
    if os.environ.get("GFLOWS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"GFLOWS_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)
