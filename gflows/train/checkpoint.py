"""Atomic checkpoints, the previous one kept: a crash or a corrupt file never loses the run.

:func:`save` writes the whole checkpoint to a temporary file in the same folder, flushes it to disk
and only then renames it over the old file (:func:`gflows._files.atomic_write`); the old file is
renamed to ``PREVIOUS`` (``checkpoint.previous.pt`` next to ``checkpoint.pt``) just before. A failed
write removes its temporary file and leaves both untouched.

:func:`load_latest` reads the newest checkpoint that loads in full: ``checkpoint.pt``, else (it is
truncated, empty or missing after a crash between the two renames) the previous one, with a warning
that says which step the run goes back to; if neither loads, :class:`CheckpointUnreadable`.

Checkpoints are read with ``torch.load(..., weights_only=True)``: they hold only tensors and plain
Python types (see :mod:`.rng` for the generator states), so no pickled code ever runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Tuple, Union

import torch

from .._files import PathLike, atomic_write


class CheckpointUnreadable(ValueError):
    """Neither the newest nor the previous checkpoint of a run can be read."""


def previous(path: PathLike) -> Path:
    """Where :func:`save` keeps the checkpoint that ``path`` held before: ``checkpoint.previous.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save(state: Dict[str, object], path: PathLike, *, keep_previous: bool = True) -> None:
    """Write the checkpoint ``state`` to ``path`` atomically; the former ``path`` is kept as
    :func:`previous` unless ``keep_previous=False``."""
    atomic_write(path, lambda file: torch.save(state, file), keep=previous(path) if keep_previous else None)


def write_text(text: str, path: PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, e.g. a metrics file that readers poll."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def load(path: PathLike, map_location: Union[str, torch.device, None] = "cpu") -> Dict[str, object]:
    """Read a checkpoint written by :func:`save` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def exists(path: PathLike) -> bool:
    """True when a run has a checkpoint at ``path`` or kept a previous one beside it."""
    return Path(path).exists() or previous(path).exists()


def load_latest(path: PathLike, map_location: Union[str, torch.device, None] = "cpu") -> Tuple[Dict[str, object], Path]:
    """The newest readable checkpoint of ``path`` and its file (module docstring).

    Raises:
        FileNotFoundError: neither file exists.
        CheckpointUnreadable: they exist and neither loads; the message says why for each.
    """
    path = Path(path)
    if not exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    problems = []
    for candidate in (path, previous(path)):
        if not candidate.exists():
            problems.append(f"{candidate.name} is missing")
            continue
        try:
            state = load(candidate, map_location)
        except Exception as error:  # a truncated or empty file fails in zipfile, pickle or torch itself
            problems.append(f"{candidate.name} does not load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'empty'})")
            continue
        if candidate != path:
            warnings.warn(f"{problems[0]}: resuming from the previous checkpoint {candidate}, "
                          f"at step {state.get('progress', {}).get('step', '?')}", stacklevel=2)
        return state, candidate
    raise CheckpointUnreadable(f"cannot resume from {path.parent}: {'; '.join(problems)}. "
                               "Start the run afresh in another folder")
