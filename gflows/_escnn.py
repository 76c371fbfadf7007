"""Import escnn quietly.

escnn 1.0.11 warns at import time that ``py3nj`` is missing. ``py3nj`` is only needed for SO(3)
Clebsch-Gordan coefficients and needs a Fortran compiler to build, so gflows installs escnn
without it (see the README). Every gflows module imports escnn from here so the warning, which is
irrelevant for the planar groups used in this book, is shown to nobody.
"""

import warnings

try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*py3nj.*")
        import escnn
        from escnn import gspaces, nn as enn
        from escnn.group import GroupElement
        from escnn.group import _numerical
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "gflows needs escnn. Install it without its Fortran-only dependency py3nj:\n"
        "    pip install 'numpy<2' scipy joblib lie_learn\n"
        "    pip install --no-deps escnn==1.0.11"
    ) from error

# escnn solves for steerable kernel bases with scikit-learn's randomized SVD whenever scikit-learn is
# importable. That is unseeded (bases would differ between runs) and, with scikit-learn >= 1.9, fails
# on the np.matrix escnn passes ("np.matrix is not supported") for dihedral groups. The exact
# (deterministic) scipy SVD that escnn uses otherwise is cheap for planar groups.
_numerical.randomized_svd = None

__all__ = ["escnn", "gspaces", "enn", "GroupElement"]
