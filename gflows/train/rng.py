"""Seeds and random-number-generator states: one seed in, every stream derived from it.

:func:`derive_seed` turns ``(seed, "train", rank)`` into an independent 63-bit seed, so that the
model's initial weights, the data order, the training noise of each process (Hutchinson probes,
Russian-roulette draws) and the evaluation noise never share a stream. :func:`capture` and
:func:`restore` save and set every generator a run touches (torch on CPU and CUDA, numpy, Python's
``random``) as tensors and plain types, so that a checkpoint loads with ``weights_only=True``.

>>> derive_seed(0, "data") == derive_seed(0, "data") != derive_seed(1, "data")
True
>>> seed_everything(3); a = torch.rand(2); state = capture()
>>> b = torch.rand(2); restore(state); torch.equal(torch.rand(2), b)
True
"""

from __future__ import annotations

import hashlib
import random
from typing import Dict

import numpy as np
import torch


def derive_seed(seed: int, *labels: object) -> int:
    """A seed for the stream called ``labels`` of the run seeded with ``seed`` (SHA-256, 63 bits)."""
    digest = hashlib.sha256(repr((int(seed), *labels)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and Python's ``random`` with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def capture() -> Dict[str, object]:
    """Every generator's state, as tensors and plain Python types."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gauss": float(cached_gauss)},
        "python": {"version": int(version), "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def restore(state: Dict[str, object]) -> None:
    """Set every generator to a state from :func:`capture`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss_next"]))
