"""Execute chapters in place, with their widget state, the way every committed chapter was run.

Chapters are committed with outputs. Run this after editing a chapter::

    python book/_tools/execute.py book/06_toy.ipynb                 # the profile of this machine
    python book/_tools/execute.py book/06_toy.ipynb --profile full  # e.g. a CPU-sized full run

The profile goes to the kernel as ``GFLOWS_PROFILE``; the notebook's metadata records it
(``metadata.gflows``: profile, device, duration), so a reader of the source can tell a quick-profile
output from a full one. ``OMP_NUM_THREADS`` is left as it is.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

import nbformat
from nbclient import NotebookClient


def device_description() -> str:
    """What ran the chapter: the GPU's name, else the CPU's architecture and core count."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU: {platform.machine()}, {os.cpu_count()} cores"


def execute(path: pathlib.Path, profile: "str | None", timeout: int) -> None:
    """Run every cell of ``path`` top to bottom in a fresh kernel and write it back with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    if profile:
        os.environ["GFLOWS_PROFILE"] = profile
    started = time.perf_counter()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    from gflows import runtime

    notebook.metadata["gflows"] = {
        "profile": runtime.profile(),
        "device": device_description(),
        "seconds": round(time.perf_counter() - started),
    }
    nbformat.write(notebook, path)
    print(f"{path}: executed in {notebook.metadata['gflows']['seconds']} s ({runtime.profile()} profile)")


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=pathlib.Path)
    parser.add_argument("--profile", choices=["quick", "full"], help="GFLOWS_PROFILE for the kernel")
    parser.add_argument("--timeout", type=int, default=-1, help="seconds per cell (default: none)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        execute(path, args.profile, None if args.timeout < 0 else args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
