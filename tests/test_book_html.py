"""The built HTML book, read as files: every local link resolves, and nothing is loaded from the web.

(``tests/test_book_browser.py`` checks the same pages in a real browser.) Skips unless ``make book``
has built ``_build/html``.
"""

from __future__ import annotations

import html
import html.parser
import pathlib
import re
import urllib.parse

import pytest

# (tag, attribute) pairs whose URL the browser loads by itself, as opposed to links a reader follows.
LOADED = {("script", "src"), ("img", "src"), ("iframe", "src"), ("source", "src"), ("video", "src"), ("link", "href")}
LINK_RELS_NOT_LOADED = {"canonical", "alternate"}


class Page(html.parser.HTMLParser):
    """The ids of a page and the URLs of its ``href``/``src`` attributes, with whether each is loaded."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: set[str] = set()
        self.urls: list[tuple[str, bool]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(attrs[key] for key in ("id", "name") if attrs.get(key))
        for key in ("href", "src"):
            if attrs.get(key) is not None:
                loaded = (tag, key) in LOADED and attrs.get("rel") not in LINK_RELS_NOT_LOADED
                self.urls.append((attrs[key], loaded))


def _pages(root: pathlib.Path) -> dict[pathlib.Path, Page]:
    """Every page of the book (not the theme's template snippets in ``_static``), parsed."""
    paths = sorted(path for path in root.rglob("*.html") if "_static" not in path.relative_to(root).parts)
    return {path: Page(path.read_text(encoding="utf-8")) for path in paths}


@pytest.fixture(scope="module")
def pages(built_book) -> dict[pathlib.Path, Page]:
    return _pages(built_book)


def test_every_local_link_and_anchor_resolves(built_book, pages):
    broken = []
    for path, page in pages.items():
        for url, _ in page.urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme or parts.netloc or url == "#":
                continue  # a link to another site (or mailto:, data:), or the "#" of a button
            target = (path.parent / urllib.parse.unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(built_book)}: {url} (no such file)")
            elif parts.fragment and target.suffix == ".html" and target in pages:
                if urllib.parse.unquote(parts.fragment) not in pages[target].ids:
                    broken.append(f"{path.relative_to(built_book)}: {url} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_pages_load_nothing_from_other_hosts(built_book, pages):
    remote = sorted({f"{path.relative_to(built_book)}: {url}" for path, page in pages.items()
                     for url, loaded in page.urls if loaded and urllib.parse.urlsplit(url).netloc})
    assert not remote, "pages that need the network to display:\n" + "\n".join(remote)


def test_the_api_reference_documents_the_public_entry_points(built_book, pages):
    api = built_book / "book" / "api"
    documented = set().union(*(pages[path].ids for path in api.glob("*.html")))
    for name in ("gflows.models.build", "gflows.groups.get", "gflows.checks.equivariance_error",
                 "gflows.checks.invariance_error", "gflows.checks.inverse_error", "gflows.flows.base.FlowModel",
                 "gflows.train.loop.fit", "gflows.train.loop.Options", "gflows.data.images.load",
                 "gflows.study.run_all", "gflows.symmetrize.symmetrize", "gflows.viz.plot_equivariance",
                 "gflows.widgets.equivariance_explorer"):
        assert name in documented, f"the API reference does not document {name}"


def test_every_chapter_links_to_the_api_reference_and_collapses_its_setup_cell(built_book, pages):
    chapters = sorted((built_book / "book").glob("0*.html"))
    assert chapters
    for path in chapters:
        links = {url for url, _ in pages[path].urls if url.startswith("api/") and "#" in url}
        assert links, f"{path.name} links to no function of the API reference"
        text = path.read_text(encoding="utf-8")
        assert text.count("tag_hide-input") >= 1, f"{path.name}: the setup cell is not collapsed"


def test_every_page_carries_the_license_in_its_footer(built_book, pages):
    texts = {path: path.read_text(encoding="utf-8") for path in pages}
    unlicensed = [path.name for path, text in texts.items()
                  if "CC BY 4.0" not in text and 'http-equiv="Refresh"' not in text]  # not the root's redirect
    assert not unlicensed, f"pages without the license footer: {unlicensed}"


def _paragraphs(text: str) -> list[str]:
    return re.findall(r"<p[ >].*?</p>", text, flags=re.S)


def test_no_numbered_list_collapses_into_a_paragraph(built_book, pages):
    """A Markdown list that starts a proof (or follows text without a blank line) renders as one
    paragraph "Proof. 1. ... 2. ..."; the signature is a line starting with "2. " inside a <p>."""
    collapsed = []
    for path in pages:
        for paragraph in _paragraphs(path.read_text(encoding="utf-8")):
            if re.search(r"\n\s*2\.\s", re.sub(r"<span class=\"math[^>]*>.*?</span>", "", paragraph, flags=re.S)):
                collapsed.append(f"{path.relative_to(built_book)}: {re.sub('<[^>]+>', '', paragraph)[:80]!r}")
    assert not collapsed, "numbered lists rendered as plain paragraphs:\n" + "\n".join(collapsed)


def test_no_figure_is_shown_as_its_repr(built_book, pages):
    shown = [path.name for path in pages if "&lt;Figure size" in path.read_text(encoding="utf-8")]
    assert not shown, f"pages that print a matplotlib Figure's repr instead of the image: {shown}"


def test_printed_markdown_tables_are_rendered(built_book, pages):
    """A results table displayed as Markdown must render as a <table>: a paragraph holding "| a | b |"
    lines and a "| --- |" separator is a table the renderer did not understand."""
    raw = []
    for path in pages:
        for paragraph in _paragraphs(path.read_text(encoding="utf-8")):
            text = html.unescape(re.sub(r"<[^>]+>", "", paragraph))
            if re.search(r"^\|.*\|\s*$", text, flags=re.M) and re.search(r"^\|\s*:?-{3}", text, flags=re.M):
                raw.append(path.name)
    assert not raw, f"pages with a Markdown table shown as text: {sorted(set(raw))}"


def test_no_page_points_to_notes_a_reader_does_not_have(built_book, pages):
    pointers = [path.name for path in pages if re.search(r"project notes|notes §|§\d", path.read_text(encoding="utf-8"))]
    assert not pointers, f"pages that cite notes outside the book: {pointers}"


def test_every_chapter_that_states_a_result_uses_theorem_and_exercise_directives(built_book, pages):
    """Propositions are sphinx-proof directives (numbered, linkable) and exercises sphinx-exercise
    ones (solutions hidden), never plain admonitions or bold text."""
    for path in sorted((built_book / "book").glob("0*.html")):
        text = path.read_text(encoding="utf-8")
        assert 'class="admonition-title">Proposition (' not in text and "<strong>1. " not in text, path.name
        if "Exercises</h2>" in text or 'id="exercises"' in text:
            assert 'class="exercise admonition"' in text, f"{path.name}: exercises without the exercise directive"
        if "Proposition" in text:
            assert "proposition admonition" in text or "theorem admonition" in text or "lemma admonition" in text, path.name
