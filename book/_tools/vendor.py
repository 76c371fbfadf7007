"""Fetch the JavaScript that the HTML book loads, so that it reads offline and from any static host.

By default Sphinx loads MathJax, and myst-nb require.js and the ipywidgets embed manager, from CDNs
when a page is read. ``_config.yml`` points all three at ``_static/`` instead (``mathjax_path``,
``nb_ipywidgets_js``); this script fills the folder that ``html_static_path`` copies there. The files
come from the npm registry with ``npm pack`` at the versions pinned below. ``make book`` runs it::

    python book/_tools/vendor.py _build/vendor
"""

from __future__ import annotations

import fnmatch
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

# npm package -> (files to take from the tarball, as globs below its ``package/`` folder, and the
# sub-folder of the vendor folder, i.e. of ``_static/``, to put them in).
PACKAGES = {
    # tex-svg-full: every TeX extension built in and glyphs drawn as SVG paths, so MathJax needs no
    # web fonts and loads no further component at read time.
    "mathjax@3.2.2": (["es5/tex-svg-full.js"], "mathjax"),
    "requirejs@2.3.7": (["require.js"], "requirejs"),
    # embed-amd.js bundles the standard widgets; the fonts (Font Awesome icons) sit beside it.
    "@jupyter-widgets/html-manager@1.0.15": (
        ["dist/embed-amd.js", "dist/*.woff2", "dist/*.woff", "dist/*.ttf", "dist/*.eot", "dist/*.svg"],
        "html-manager",
    ),
}
STAMP = ".fetched"


def fetch(spec: str, globs: list[str], target: pathlib.Path) -> list[pathlib.Path]:
    """Download ``spec`` with ``npm pack`` and extract the files matching ``globs`` into ``target``."""
    with tempfile.TemporaryDirectory() as tmp:
        packed = subprocess.run(["npm", "pack", "--silent", "--json", spec], cwd=tmp, check=True,
                                capture_output=True, text=True)
        tarball = pathlib.Path(tmp) / json.loads(packed.stdout)[0]["filename"]
        written, matched = [], set()
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/")
                hits = {glob for glob in globs if fnmatch.fnmatch(name, glob)}
                if member.isfile() and hits:
                    path = target / pathlib.PurePosixPath(name).name
                    path.write_bytes(archive.extractfile(member).read())
                    written.append(path)
                    matched |= hits
    if set(globs) - matched:
        raise RuntimeError(f"{spec} has no files matching {sorted(set(globs) - matched)}")
    return written


def vendor(folder: pathlib.Path) -> None:
    """Fill ``folder`` with every package's files, unless its stamp says the pins are already there."""
    stamp = folder / STAMP
    pins = json.dumps(PACKAGES, sort_keys=True)
    if stamp.exists() and stamp.read_text() == pins:
        return
    for spec, (globs, sub) in PACKAGES.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        files = fetch(spec, globs, folder / sub)
        print(f"vendored {spec}: {len(files)} files into {folder / sub}")
    stamp.write_text(pins)


if __name__ == "__main__":
    vendor(pathlib.Path(sys.argv[1]))
