"""A run's folder belongs to one process at a time.

:func:`hold` takes an advisory lock on ``OUT/.lock`` (``fcntl.flock``) for as long as the run lives
and writes the holder's process id into it. A second process that asks for the same folder (a
second run, or a ``--resume`` while the first is still going) is refused at once with
:class:`RunFolderBusy`, which names the holder's pid. The operating system drops the lock when its
process ends, however it ends (``kill -9`` included), so the lock of a dead process is taken over
by the next run with nothing to clean up; the stale pid in the file is simply overwritten.

Inside one process the lock is re-entrant: the command line holds it from before it writes
``config.yaml`` until the end, and :func:`gflows.train.fit` holds it too when called directly.
Once the lock is held, temporary files that an interrupted atomic write left behind
(:func:`gflows._files.remove_stale_temporaries`) are removed: no other process can be writing them.
Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Dict, Iterator, Tuple

from .._files import PathLike, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK = ".lock"
_held: Dict[Path, Tuple[int, int]] = {}  # folder -> (open descriptor of its lock file, nesting depth)


class RunFolderBusy(RuntimeError):
    """Another living process holds the run folder's lock."""

    def __init__(self, folder: Path, pid: str) -> None:
        super().__init__(f"{folder} is in use by another run (process {pid or 'unknown'}): wait for it to end, "
                         "or choose another --out")
        self.folder, self.pid = folder, pid


@contextlib.contextmanager
def hold(folder: PathLike) -> Iterator[Path]:
    """Own ``folder`` (created if missing) for the duration of the block; :class:`RunFolderBusy` if
    another process owns it. Removes stale temporary files once owned."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        descriptor, depth = _held[key]
        _held[key] = (descriptor, depth + 1)
    else:
        _held[key] = (_lock(folder), 1)
        remove_stale_temporaries(folder)
    try:
        yield folder
    finally:
        descriptor, depth = _held.pop(key)
        if depth > 1:
            _held[key] = (descriptor, depth - 1)
        elif descriptor >= 0:
            os.close(descriptor)  # closing the descriptor releases the lock


def _lock(folder: Path) -> int:
    if fcntl is None:  # pragma: no cover - Windows
        return -1
    descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        os.close(descriptor)
        raise RunFolderBusy(folder, holder) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor
