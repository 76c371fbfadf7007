"""G-Coupling and G-IAF training-step throughput and peak memory against their trivial-group twins.

    python benchmarks/coupling_speed.py --out benchmarks/results/coupling_speed_gpu.json   # batch 64
    python benchmarks/coupling_speed.py --batch 8 --steps 2 --depth 4 --width 32 \
        --out benchmarks/results/coupling_speed_cpu.json                                   # a CPU, minutes
    python benchmarks/coupling_speed.py --quick                                            # seconds, on a CPU

Defaults: batch 64 at 3x32x32 and 1x28x28, depth 8, width 64, both kinds ("coupling", "iaf"; the
IAF form, whose density direction is sequential over fields). Throughput counts images through
forward + backward + AdamW step. On a CPU every configuration runs in its own process, so that the
peak resident memory is its own; CPU throughputs are only meaningful as ratios to the twin.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run  # noqa: E402


def main(argv=None):
    return run(["coupling", "iaf"], __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
