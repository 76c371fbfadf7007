"""One version, stated once (``gflows.__version__``) and agreed on by everything that names it;
the licenses and the citation file a course needs to reuse the book."""

import re

import pytest
import yaml

import book_pages
import gflows

ROOT = book_pages.ROOT
setup_cell = book_pages.tool("setup_cell")


def test_the_version_is_single_sourced():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = {attr = "gflows.__version__"}' in pyproject
    assert not re.search(r'^version\s*=\s*"', pyproject, flags=re.M), "pyproject.toml must not repeat the version"
    assert setup_cell.package_version() == gflows.__version__
    assert f"@v{gflows.__version__}" in setup_cell.render(), "the setup cell installs the release tag"
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"] == gflows.__version__
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M).group(1)
    assert newest == gflows.__version__, "CHANGELOG.md's newest entry is the current version"


def test_licenses_citation_and_the_books_footer():
    license_text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in license_text and "CC BY 4.0" in license_text
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and "arXiv:2110.08649" in str(citation["preferred-citation"])
    assert citation["repository-code"] == setup_cell.repository_url()
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert "CC BY 4.0" in footer and "MIT" in footer
    readme = (ROOT / "README.md").read_text()
    assert "MIT" in readme and "CC BY 4.0" in readme and "CITATION.cff" in readme


#: import name -> the distribution that pyproject.toml declares for it
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "IPython": "ipython"}
#: installed apart from pyproject.toml, as the README says (``pip install --no-deps escnn``)
SEPARATE = {"escnn", "gflows"}


def _imports(sources):
    import ast

    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_import_of_the_package_and_the_chapters_is_declared():
    import sys

    import nbformat

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    declared = {re.split(r"[<>=!~ ;\[]", d)[0].lower() for d in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    sources = [p.read_text() for p in (ROOT / "gflows").rglob("*.py")]
    for path in setup_cell.notebooks():
        cells = nbformat.read(path, as_version=4).cells
        sources += ["\n".join(line for line in c.source.splitlines() if not line.lstrip().startswith(("!", "%")))
                    for c in cells if c.cell_type == "code"]
    third_party = _imports(sources) - set(sys.stdlib_module_names) - SEPARATE
    missing = sorted(name for name in third_party if DISTRIBUTIONS.get(name, name).lower() not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_docstrings_hold_no_control_characters():
    """A backslash in a docstring that is not raw (``"\\beta"``) becomes a control character
    (a backspace), and the API reference then shows broken mathematics."""
    import ast

    broken = []
    for path in sorted((ROOT / "gflows").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node, clean=False) or ""
                if any(ch in doc for ch in "\x07\x08\x0b\x0c\r\t"):
                    broken.append(f"{path.relative_to(ROOT)}: {getattr(node, 'name', 'module')}")
    assert not broken, f"make these docstrings raw (r\"\"\"...): {broken}"
