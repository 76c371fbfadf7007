"""Data for the book's experiments.

* :mod:`.toy`: symmetric densities in the plane, with exact samplers and exact log-densities, each
  declaring its symmetry group (rings of Gaussians, a pinwheel, a dihedral checkerboard, concentric rings);
* :mod:`.images`: image datasets (8x8 digits, Fashion-MNIST, MNIST, CIFAR-10) as uint8 tensors, nested
  subsets for data-efficiency runs, and deterministic, shardable, dequantised batches;
* :mod:`.transforms`: exact random group elements and interpolated rotations of image batches;
* :mod:`.formats`: readers of the official on-disk formats (IDX, CIFAR pickles) and checked downloads.
"""

from . import images, toy

__all__ = ["images", "toy"]
