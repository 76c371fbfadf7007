"""Sphinx extension of the gflows book: each page runs each of its scripts once.

In a Jupyter Book build, the inline configurations of sphinx-thebe (``const THEBE_JS_URL = ...``) and
sphinx-togglebutton reach every page twice (once registered with the file name ``None``, once with
``""``). The second ``const`` declaration is a SyntaxError in every page's console; dropping repeats
fixes it.
"""

from __future__ import annotations


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of the entries of ``script_files`` with the same file or inline body and attributes."""
    unique = {}
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))  # None and "": inline
        unique.setdefault(key, script)
    context["script_files"] = list(unique.values())


def setup(app) -> dict:
    app.connect("html-page-context", drop_repeated_scripts, priority=900)  # after all that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
