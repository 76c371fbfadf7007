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

import ctypes
import functools
import os
import platform
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


#: glibc's ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_cpu_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD_BYTES = 1 << 30          # free memory kept at the top of the heap, at most
_MMAP_THRESHOLD_BYTES = 32 << 20         # glibc's largest allowed: blocks up to 32 MB come from the heap


@functools.lru_cache(maxsize=None)
def keep_freed_cpu_memory() -> bool:
    """Let freed CPU tensors' memory stay in the process, so the next training step reuses it.

    By default glibc's ``malloc`` returns a large freed block to the operating system (``munmap``,
    or trimming the top of the heap), and the next allocation of the same size has every one of
    its 4 KB pages faulted in and zeroed again. A training step allocates and frees the same
    activation-sized tensors every time, so it paid this on every step: measured on a G-Residual
    twin at 1x28x28 (batch 16), 8,600 to 28,000 page faults per step, 15-25% of the step's CPU time;
    with this call, under 150. It sets ``M_MMAP_THRESHOLD`` to 32 MB (blocks below it come from the
    heap) and ``M_TRIM_THRESHOLD`` to 1 GB (the heap's free top is kept up to that much), as
    ``mallopt(3)`` describes; the price is that the process keeps its peak heap after training.
    This is what the jemalloc or tcmalloc that PyTorch's CPU tuning guide preloads achieve, without
    a preload. :func:`gflows.train.fit` and the step timers call it on a CPU; it is process-wide,
    takes effect once and changes no result.

    Returns:
        whether the settings were applied (False where the C library is not glibc, e.g. macOS).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
