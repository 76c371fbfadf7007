"""Data for the book's experiments.

* :mod:`.images`: image datasets (digits, Fashion-MNIST, MNIST, CIFAR-10), reproducible subsets and
  deterministic, shardable training batches with random group elements
  (on-disk formats in :mod:`.formats`, random symmetry transformations in :mod:`.transforms`).
"""

from . import images

__all__ = ["images"]
