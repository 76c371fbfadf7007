"""G-Residual training-step throughput and peak memory against the trivial-group twin.

    python benchmarks/residual_speed.py --out benchmarks/results/residual_speed_cpu.json
    python benchmarks/residual_speed.py --quick          # seconds, on a CPU

Defaults: batch 64 at 3x32x32 and 1x28x28, depth 8 (blocks per scale), width 64, unbiased
Russian-roulette log-det (the training estimator). Two variants, each against its own trivial twin
(``models.build`` matches their parameter counts): the multiscale flow (the default: two 2x2
squeezes) and the full-resolution flow of the paper's code (``squeezes=0``). Throughput counts
images through forward + backward + AdamW step.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run  # noqa: E402


def main(argv=None):
    return run(["residual"], __doc__.splitlines()[0], argv, variants={"multiscale": {}, "full-resolution": {"squeezes": 0}})


if __name__ == "__main__":
    main()
