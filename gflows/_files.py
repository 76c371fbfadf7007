"""Atomic file writes: a crash while writing never leaves a half-written file under the final name.

:func:`atomic_write` writes to a temporary file in the destination's folder, flushes it to disk and
only then renames it over the destination with :func:`os.replace`, which is atomic on POSIX and
Windows: a reader sees either the previous file or the new one, never a mixture. If writing fails
(an exception from ``write``, e.g. a download with the wrong checksum), the temporary file is
removed and the previous file is left untouched. The file gets the permissions of an ordinary new
file under the process's umask (``0666 & ~umask``, e.g. ``-rw-r--r--``), not the owner-only ones
of :func:`tempfile.mkstemp`. Checkpoints and metrics (:mod:`gflows.train`) and downloaded datasets
(:mod:`gflows.data.formats`) are written this way.

A process killed during a write leaves its temporary file (``.NAME.*.tmp``) behind;
:func:`remove_stale_temporaries` removes them once nobody can be writing them (a run does so when it
owns its folder, :mod:`gflows.train.runfolder`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, List, Optional, Union

PathLike = Union[str, os.PathLike]
_TEMPORARY = ".{name}.", ".tmp"  # prefix and suffix of atomic_write's temporary files


def new_file_mode() -> int:
    """The permission bits an ordinary new file gets under the current umask: ``0o666 & ~umask``."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None], *, keep: Optional[PathLike] = None) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``.

    With ``keep``, the file at ``path`` (if any) is first renamed to ``keep``: the previous version
    survives next to the new one. A crash between the two renames leaves ``keep`` and no ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _TEMPORARY
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix.format(name=path.name), suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fchmod(file.fileno(), new_file_mode())
            os.fsync(file.fileno())
        if keep is not None and path.exists():
            os.replace(path, keep)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Remove the temporary files that interrupted :func:`atomic_write` calls left in ``folder``; returns them.

    Only call it where no other process can be writing into ``folder``.
    """
    prefix, suffix = _TEMPORARY
    stale = [p for p in Path(folder).glob(prefix.format(name="*") + "*" + suffix) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
