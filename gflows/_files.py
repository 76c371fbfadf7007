"""Atomic file writes: a crash while writing never leaves a half-written file under the final name.

:func:`atomic_write` writes to a temporary file in the destination's folder, flushes it to disk and
only then renames it over the destination with :func:`os.replace`, which is atomic on POSIX and
Windows: a reader sees either the previous file or the new one, never a mixture. If writing fails
(an exception from ``write``, e.g. a download with the wrong checksum), the temporary file is
removed and the previous file is left untouched. Checkpoints and metrics (:mod:`gflows.train`) and
downloaded datasets (:mod:`gflows.data.formats`) are written this way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
