"""The measured table of the course page: reading and run time of every chapter, and its exercises.

Reading time counts the words of a chapter's text at 200 words a minute and its code at 10 lines a
minute (code is read slowly); run time is what the committed run of the chapter took, from its
metadata (``metadata.gflows``, written by ``book/_tools/execute.py``), with the profile it ran in.
``book/course.md`` holds the table between two markers; ``tests/test_book.py`` fails when it is out of
date. After re-executing a chapter, run::

    python book/_tools/course.py
"""

from __future__ import annotations

import math
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[2]
COURSE = ROOT / "book" / "course.md"
BEGIN, END = "<!-- course table: written by book/_tools/course.py -->", "<!-- end of course table -->"
CHAPTERS = ["00_flows", "01_symmetry", "representations", "continuous", "02_existence", "03_residual", "04_coupling", "05_iaf",
            "06_toy", "07_images", "08_cifar10"]
NEEDS_GPU = {"08_cifar10": "its full run (CIFAR-10)", "07_images": "only its larger grids (the CPU grid runs in the full profile)"}


def chapter_row(name: str) -> str:
    notebook = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    text = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    code = [c.source for c in notebook.cells if c.cell_type == "code"][1:]   # after the setup cell
    words = sum(len(re.findall(r"\w+", t)) for t in text)
    lines = sum(len(c.splitlines()) for c in code)
    reading = math.ceil(words / 200 + lines / 10)
    title = next(re.sub(r"^#\s*", "", t.splitlines()[0]) for t in text if t.startswith("# "))
    run = notebook.metadata.get("gflows", {})
    ran = f"{math.ceil(run['seconds'] / 60)} min ({run['profile']}, {run['device']})" if run else "not recorded"
    exercises = len(re.findall(r"^`{3,}\{exercise\}", "\n".join(text), flags=re.M))
    gpu = NEEDS_GPU.get(name, "no")
    return f"| {{doc}}`{title} <{name}>` | {words} | {reading} min | {ran} | {exercises} | {gpu} |"


def render() -> str:
    rows = [chapter_row(name) for name in CHAPTERS]
    header = ["| chapter | words | reading | committed run | exercises | needs a GPU |", "|---|---:|---:|---|---:|---|"]
    return "\n".join([BEGIN, *header, *rows, END])


def current() -> str:
    text = COURSE.read_text()
    return text[text.index(BEGIN):text.index(END) + len(END)]


def write() -> None:
    text = COURSE.read_text()
    COURSE.write_text(text.replace(current(), render()))
    print(f"updated {COURSE.relative_to(ROOT)}")


if __name__ == "__main__":
    write()
    sys.exit(0)
