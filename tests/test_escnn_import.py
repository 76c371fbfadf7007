"""escnn imports through ``gflows._escnn`` with or without lie_learn (numpy 1 or 2, any Python).

Without lie_learn, escnn's one SO(3) module gets a stand-in that names SO(3) when it is called; the
planar groups never call it and stay exactly equivariant.
"""

import subprocess
import sys

import book_pages
from gflows import _escnn

WITHOUT_LIE_LEARN = """
import sys
sys.modules["lie_learn"] = None      # `import lie_learn` fails, as on numpy 2 or Python 3.13
import torch
from gflows import _escnn, checks, groups, models
from escnn import group

assert all(not name.startswith("lie_learn.") for name in sys.modules), "the stand-in must not stay behind"
G = groups.get("D4")
model = models.build("coupling", group=G, data_shape=(1, 8, 8), depth=2, width=8).double().eval()
x = 0.05 + 0.9 * torch.rand(3, 1, 8, 8, dtype=torch.float64)
with torch.no_grad():
    print("equivariance", checks.equivariance_error(lambda t: model(t)[0], x, G))
so3 = group.so3_group()
try:
    so3.irrep(1)(so3.sample())
except _escnn.SO3Unavailable as error:
    print("SO(3):", str(error).split(":")[0])
"""


def test_escnn_imports_without_lie_learn_and_the_planar_groups_stay_exact():
    done = subprocess.run([sys.executable, "-c", WITHOUT_LIE_LEARN], capture_output=True, text=True, timeout=300,
                          cwd=book_pages.ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("equivariance ") and float(lines[0].split()[1]) < 1e-12, done.stdout
    assert lines[1] == "SO(3): escnn needs lie_learn for the Wigner D-matrices of SO(3) (and O(3), and their finite subgroups), but lie_learn cannot be imported here"
    assert done.stderr == "", "importing escnn without lie_learn must print nothing"


def test_escnn_uses_lie_learn_exactly_where_it_imports():
    from escnn.group.groups import so3_utils

    uses_stand_in = so3_utils.wigner_D_matrix is _escnn._wigner_D_matrix
    assert uses_stand_in != _escnn._lie_learn_imports()
    assert _escnn.WIGNER_D not in sys.modules or not uses_stand_in
