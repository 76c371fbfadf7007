"""Every Python block of the README runs as written, each on its own, in a fresh interpreter.

A reader copies one block, not the whole page: each block must import and define what it uses. Blocks
that train take their step counts from the page; here they are cut to a few steps (``steps=``,
``eval_every=``), which is the only change made to them. Each runs in an empty folder, so the runs they
write go nowhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import book_pages

README = (book_pages.ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, flags=re.M | re.S)
FEW_STEPS = {r"\bsteps=\d+": "steps=4", r"\beval_every=\d+": "eval_every=2"}


def shortened(block: str) -> str:
    for pattern, replacement in FEW_STEPS.items():
        block = re.sub(pattern, replacement, block)
    return block


def test_the_readme_has_python_blocks_and_the_training_ones_are_shortened():
    assert len(BLOCKS) >= 5
    trains = [block for block in BLOCKS if re.search(r"\bsteps=\d+", block)]
    assert trains and all("steps=4" in shortened(block) for block in trains)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs_on_its_own(block, tmp_path):
    done = subprocess.run([sys.executable, "-c", shortened(block)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "GFLOWS_PROFILE": "quick", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"README block failed:\n{block}\n{done.stderr[-3000:]}"
