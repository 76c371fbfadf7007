"""Import escnn quietly, on numpy 1 or 2, with or without lie_learn.

Two things stand between escnn 1.0.11 and a plain ``import escnn`` on today's machines, and neither
concerns the planar groups of this book:

* escnn warns at import time that ``py3nj`` is missing. ``py3nj`` is only needed for SO(3)
  Clebsch-Gordan coefficients and needs a Fortran compiler to build, so gflows installs escnn
  without it (see the README). The warning is shown to nobody.
* escnn imports ``wigner_D_matrix`` from ``lie_learn`` in one module, ``escnn.group.groups.so3_utils``
  (Wigner D-matrices of SO(3)), when it is imported. ``lie_learn`` has no numpy-2 build and no
  wheel for Python 3.13. Where it cannot be imported, gflows puts a stand-in for that one module in
  place while escnn imports, and takes it away afterwards: calling the stand-in raises
  :class:`SO3Unavailable`, which names SO(3). Where ``lie_learn`` imports, escnn uses it as usual.

Every gflows module imports escnn from here.
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
import warnings

WIGNER_D = "lie_learn.representations.SO3.wigner_d"


class SO3Unavailable(ImportError):
    """escnn's SO(3) Wigner D-matrices were asked for, but lie_learn cannot be imported here."""


def _wigner_D_matrix(*args, **kwargs):
    raise SO3Unavailable(
        "escnn needs lie_learn for the Wigner D-matrices of SO(3) (and O(3), and their finite subgroups), "
        "but lie_learn cannot be imported here: it has no numpy-2 build and no wheel for Python 3.13. "
        "gflows' planar groups (C_N, D_N, SO(2), O(2)) never use it. For 3-D groups, use an environment "
        "with numpy<2 and `pip install lie_learn`."
    )


def _lie_learn_imports() -> bool:
    """Whether escnn's one import from lie_learn works; a failed attempt leaves no trace behind."""
    before = set(sys.modules)
    try:
        # lie_learn 0.0.2 built for numpy 1 prints numpy's long "compiled using NumPy 1.x" notice
        # before its ImportError: that is expected here, and no one needs to read it
        with contextlib.redirect_stderr(io.StringIO()):
            __import__(WIGNER_D)
        return True
    except ImportError:
        for name in set(sys.modules) - before:
            if name == "lie_learn" or name.startswith("lie_learn."):
                del sys.modules[name]
        return False


@contextlib.contextmanager
def _wigner_d_stand_in():
    """``lie_learn.representations.SO3.wigner_d`` (and its parent packages) as stand-in modules
    whose ``wigner_D_matrix`` raises :class:`SO3Unavailable`, for the duration of the block."""
    parts = WIGNER_D.split(".")
    names = [".".join(parts[: i + 1]) for i in range(len(parts))]
    modules = {name: types.ModuleType(name, "gflows' stand-in: lie_learn is not importable") for name in names}
    for parent, child in zip(names, names[1:]):
        setattr(modules[parent], child.rsplit(".", 1)[1], modules[child])
    modules[WIGNER_D].wigner_D_matrix = _wigner_D_matrix
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


try:
    with warnings.catch_warnings(), (contextlib.nullcontext() if _lie_learn_imports() else _wigner_d_stand_in()):
        warnings.filterwarnings("ignore", message=".*py3nj.*")
        import escnn
        from escnn import gspaces, nn as enn
        from escnn.group import GroupElement
        from escnn.group import _numerical
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "gflows needs escnn 1.0.11. Install it without its Fortran-only dependency py3nj:\n"
        "    pip install scipy joblib\n"
        "    pip install --no-deps escnn==1.0.11"
    ) from error

# escnn reads every Clebsch-Gordan coefficient of a kernel basis from its joblib disk cache, once per
# call: two thirds of the time of building a model with many convolutions. They are constants of the
# group, so they are kept in memory after the first read (a copy is returned: callers may write).
_disk_clebsh_gordan = escnn.group.Group._clebsh_gordan_coeff


def _clebsh_gordan_in_memory(self, m, n, j):
    key = (self.get_irrep_id(m), self.get_irrep_id(n), self.get_irrep_id(j))
    memo = self.__dict__.setdefault("_gflows_clebsh_gordan", {})
    if key not in memo:
        memo[key] = _disk_clebsh_gordan(self, m, n, j)
    return memo[key].copy()


escnn.group.Group._clebsh_gordan_coeff = _clebsh_gordan_in_memory

# escnn solves for steerable kernel bases with scikit-learn's randomized SVD whenever scikit-learn is
# importable. That is unseeded (bases would differ between runs) and, with scikit-learn >= 1.9, fails
# on the np.matrix escnn passes ("np.matrix is not supported") for dihedral groups. The exact
# (deterministic) scipy SVD that escnn uses otherwise is cheap for planar groups.
_numerical.randomized_svd = None

__all__ = ["escnn", "gspaces", "enn", "GroupElement", "SO3Unavailable"]
