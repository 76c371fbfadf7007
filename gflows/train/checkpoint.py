"""Atomic checkpoints: a crash while writing never destroys the last good one.

:func:`save` writes the whole checkpoint to a temporary file in the same folder, flushes it to disk
and only then renames it over the old file (:func:`gflows._files.atomic_write`): a reader sees either
the previous checkpoint or the new one, never a mixture. A failed write removes its temporary file
and leaves the previous checkpoint untouched.

:func:`load` reads with ``torch.load(..., weights_only=True)``: checkpoints hold only tensors and
plain Python types (see :mod:`.rng` for the generator states), so no pickled code ever runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch

from .._files import PathLike, atomic_write


def save(state: Dict[str, object], path: PathLike) -> None:
    """Write the checkpoint ``state`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda file: torch.save(state, file))


def write_text(text: str, path: PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, e.g. a metrics file that readers poll."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def load(path: PathLike, map_location: Union[str, torch.device, None] = "cpu") -> Dict[str, object]:
    """Read a checkpoint written by :func:`save` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
