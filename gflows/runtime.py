"""One switch for the workload of every notebook and script: the ``quick`` or ``full`` profile.

``profile()`` is ``"full"`` on a machine with a CUDA GPU and ``"quick"`` otherwise; the environment
variable ``GFLOWS_PROFILE`` (``quick`` or ``full``) overrides it. Quick runs take seconds to a minute
on two CPU cores and execute the same code path as full runs, only with smaller sizes, which
:func:`choose` picks.

>>> import os; os.environ["GFLOWS_PROFILE"] = "quick"
>>> profile(), choose(quick=200, full=20_000)
('quick', 200)
>>> del os.environ["GFLOWS_PROFILE"]
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch

PROFILES = ("quick", "full")
T = TypeVar("T")


def profile() -> str:
    """``"quick"`` or ``"full"``: ``GFLOWS_PROFILE`` if set, else ``"full"`` exactly when CUDA is available.

    Raises:
        ValueError: if ``GFLOWS_PROFILE`` holds anything but ``quick`` or ``full``.
    """
    chosen = os.environ.get("GFLOWS_PROFILE", "").strip().lower()
    if chosen:
        if chosen not in PROFILES:
            raise ValueError(f"GFLOWS_PROFILE must be 'quick' or 'full', got {chosen!r}")
        return chosen
    return "full" if torch.cuda.is_available() else "quick"


def choose(*, quick: T, full: T) -> T:
    """The value for the current :func:`profile`: ``choose(quick=2, full=16)`` -> 2 on a laptop."""
    return full if profile() == "full" else quick


def device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
