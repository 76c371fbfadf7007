"""The built book in a real browser: headless Chromium (Debian's, driven by Playwright) reads every page.

Every page that ``_toc.yml`` lists is opened from a local web server and as a file, with every request
to another host blocked and recorded: each must load with no console error and no failed request,
with its math typeset by MathJax and its images loaded. Widgets render from their embedded state, the
cell after each widget shows its static twin, and the search page finds things. A screenshot of each
page goes to ``_build/screenshots/``.

Needs ``make book`` and ``apt-get install chromium`` (see the README); skips without them, unless
``GFLOWS_REQUIRE_BROWSER=1`` (as in ``.ci/run``).
"""

from __future__ import annotations

import functools
import http.server
import pathlib
import threading
import urllib.parse

import pytest

import book_pages

CHROMIUM = pathlib.Path("/usr/bin/chromium")
# Headless Chromium without the background connections (updates, sync, ...) that it would try to make.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
SCREENSHOTS = book_pages.ROOT / "_build" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def browser(built_book):
    """Chromium, launched once for the module."""
    if not CHROMIUM.exists():
        book_pages.unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        book_pages.unavailable("playwright is not installed: pip install -r requirements.txt")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(built_book):
    """The base URL of a web server on this machine that serves ``_build/html``."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=built_book))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class Visit:
    """A fresh browser tab that blocks requests to other hosts and records every problem a reader could see."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._local_only)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def _local_only(self, route):
        url = urllib.parse.urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
            self.problems.append(f"request to another host: {route.request.url}")
            route.abort()
        else:
            route.continue_()

    def open(self, url: str):
        """Load ``url`` and wait until the network is idle and MathJax, if the page loads it, is done."""
        self.page.goto(url, wait_until="networkidle")
        if self.page.locator("span.math, div.math").count():
            self.page.wait_for_function("() => window.MathJax && window.MathJax.version", timeout=15_000)
            self.page.evaluate("() => window.MathJax.startup.promise")
        return self.page

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser):
    opened = Visit(browser)
    yield opened
    opened.close()


def _html(document: str) -> str:
    return f"{document}.html"


def _screenshot(page, name: str) -> None:
    """Save the whole page to ``_build/screenshots/<name>.png``, for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def _check_page(visit: Visit, page) -> None:
    untypeset = page.locator("span.math:not(:has(mjx-container)), div.math:not(:has(mjx-container))").count()
    assert untypeset == 0, f"{untypeset} formulas not typeset by MathJax"
    # MathJax's SVG output marks TeX errors as merror and undefined macros as red text
    tex_errors = page.locator('mjx-container [data-mml-node="merror"], mjx-container [data-mml-node="mtext"][fill="red"]')
    assert tex_errors.count() == 0, f"MathJax reports {tex_errors.count()} TeX errors"
    broken = page.eval_on_selector_all("img", "images => images.filter(i => !(i.complete && i.naturalWidth > 0))"
                                       ".map(i => i.src)")
    assert not broken, f"images that did not load: {broken}"
    assert not visit.problems, "\n".join(visit.problems)


@pytest.mark.parametrize("document", book_pages.documents())
def test_page_reads_offline_from_a_web_server(visit, server, document):
    page = visit.open(server + _html(document))
    _screenshot(page, document.replace("/", "__"))
    _check_page(visit, page)


@pytest.mark.parametrize("document", book_pages.documents())
def test_page_reads_as_a_local_file(visit, built_book, document):
    _check_page(visit, visit.open((built_book / _html(document)).as_uri()))


def test_widgets_render_and_their_static_twins_show(visit, server, built_book):
    with_widgets = [d for d in book_pages.documents()
                    if "application/vnd.jupyter.widget-view+json" in (built_book / _html(d)).read_text()]
    if not with_widgets:
        pytest.skip("no page embeds a widget")
    for document in with_widgets:
        page = visit.open(server + _html(document))
        page.wait_for_selector(".cell .jupyter-widgets", state="visible", timeout=15_000)
        # for each cell holding a widget: do the widget and the figure of the next code cell show?
        twins = page.eval_on_selector_all("div.cell", """cells => cells.flatMap((cell, i) =>
            cell.querySelector('script[type="application/vnd.jupyter.widget-view+json"]') ? [{
              widget: !!cell.querySelector('.jupyter-widgets'),
              twin: !!cells[i + 1] && [...cells[i + 1].querySelectorAll('.cell_output img')].some(
                  img => img.naturalWidth > 0 && img.getBoundingClientRect().height > 0),
            }] : [])""")
        assert twins and all(t["widget"] for t in twins), f"{document}: an embedded widget did not render"
        assert all(t["twin"] for t in twins), f"{document}: a widget's next code cell shows no figure (static twin)"
    assert not visit.problems, "\n".join(visit.problems)


def test_search_finds_pages(visit, server):
    page = visit.open(server + "search.html?q=equivariant")
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(timeout=15_000)
    _screenshot(page, "search")
    assert results.count() >= 2, "searching for 'equivariant' should find the introduction and chapter 1"
    assert not visit.problems, "\n".join(visit.problems)
