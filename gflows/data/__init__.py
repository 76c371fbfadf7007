"""Data for the book's experiments.

* :mod:`.toy`: symmetric densities in the plane, with exact samplers and exact log-densities, each
  declaring its symmetry group (rings of Gaussians, a pinwheel, a dihedral checkerboard, concentric rings).
"""

from . import toy

__all__ = ["toy"]
