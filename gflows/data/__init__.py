"""Data for the book's experiments.

* :mod:`.toy`: symmetric densities in the plane, with exact samplers and exact log-densities, each
  declaring its symmetry group (rings of Gaussians, a pinwheel, a dihedral checkerboard, concentric rings).
* :mod:`.images`: image datasets (digits, Fashion-MNIST, MNIST, CIFAR-10), reproducible subsets and
  deterministic, shardable training batches with random group elements
  (on-disk formats in :mod:`.formats`, random symmetry transformations in :mod:`.transforms`).
"""

from . import images, toy

__all__ = ["images", "toy"]
