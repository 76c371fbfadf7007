"""The book's sources: table of contents, Colab setup cells, committed outputs, citations.

(nbval executes every notebook separately: pytest collects ``book/*.ipynb`` with ``--nbval-lax``.)
"""

import re

import nbformat
import pytest
import yaml

import book_pages

ROOT = book_pages.ROOT
setup_cell = book_pages.tool("setup_cell")

NOTEBOOKS = setup_cell.notebooks()
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def _toc_paths() -> set:
    paths = set()
    for name in book_pages.documents():
        matches = [ROOT / f"{name}{suffix}" for suffix in (".md", ".ipynb") if (ROOT / f"{name}{suffix}").exists()]
        assert matches, f"_toc.yml lists {name}, which does not exist"
        paths.update(matches)
    return paths


def test_toc_lists_existing_files_and_every_chapter():
    listed = _toc_paths()
    chapters = set(NOTEBOOKS) | {p for p in (ROOT / "book").rglob("*.md")}
    assert chapters - listed == set(), "chapters missing from _toc.yml"
    assert NOTEBOOKS, "the book has no notebook chapters"


def test_config_does_not_execute_and_finds_its_bibliography():
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    for bib in CONFIG["bibtex_bibfiles"]:
        assert (ROOT / bib).exists()
    assert CONFIG["repository"]["url"].startswith("https://")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_current_setup_cell(path):
    notebook = nbformat.read(path, as_version=4)
    cell = setup_cell.first_code_cell(notebook)
    assert cell is not None and cell.source == setup_cell.render(), (
        f"{path.name}: run `python book/_tools/setup_cell.py` to refresh its setup cell"
    )
    assert set(setup_cell.TAGS) <= set(cell.metadata.get("tags", [])), f"{path.name}: the setup cell is not collapsed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_outputs_and_checked_facts(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"][1:]  # after the setup cell
    assert code, f"{path.name} has no code"
    unexecuted = [cell.source.splitlines()[0] for cell in code if cell.execution_count is None]
    assert not unexecuted, f"{path.name}: cells committed without running: {unexecuted}"
    errors = [out for cell in code for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, f"{path.name} was committed with an error output"
    checked = [cell for cell in code if cell.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked and all(cell.outputs for cell in checked), f"{path.name}: no checked facts with outputs"
    uses_widgets = "widgets" in "".join(cell.source for cell in code)
    if uses_widgets:
        state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        assert state.get("state"), f"{path.name} uses widgets but was saved without widget state"


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    sources = [p.read_text() for p in (ROOT / "book").rglob("*.md")]
    sources += ["\n".join(c.source for c in nbformat.read(p, as_version=4).cells) for p in NOTEBOOKS]
    cited = {key.strip() for text in sources for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text)
             for key in group.split(",")}
    assert cited, "the book cites nothing"
    assert cited - keys == set(), "cited but missing from book/references.bib"


def test_the_course_page_table_is_current():
    course = book_pages.tool("course")
    assert course.current() == course.render(), "run `python book/_tools/course.py` to refresh book/course.md"


#: representation-theory terms the chapters use, and the glossary entry that must explain each
REPRESENTATION_TERMS = {"irreducible": "Irreducible representation", "character": "Character", "commutant": "Commutant",
                        "schur": "Schur's lemma", "isotypic": "Isotypic component", "quotient representation": "Quotient representation",
                        "regular field": "Regular field", "intertwiner": "Intertwiner", "kernel constraint": "Kernel constraint",
                        "field type": "Field type", "permutation representation": "Permutation representation"}


def test_the_glossary_covers_every_representation_theory_term_the_chapters_use():
    text = "\n".join(c.source for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown").lower()
    glossary = (ROOT / "book" / "glossary.md").read_text()
    entries = set(re.findall(r"^(\S[^\n]*)\n  ", glossary, flags=re.M))
    used = {term for term in REPRESENTATION_TERMS if term in text}
    assert used, "the chapters use no representation-theory term?"
    missing = sorted(REPRESENTATION_TERMS[t] for t in used if REPRESENTATION_TERMS[t] not in entries)
    assert not missing, f"glossary entries missing for terms the chapters use: {missing}"
