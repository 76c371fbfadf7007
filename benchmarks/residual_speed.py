"""G-Residual training-step throughput and peak memory against the trivial-group twin.

    python benchmarks/residual_speed.py --out benchmarks/results/residual_speed_cpu.json
    python benchmarks/residual_speed.py --quick          # seconds, on a CPU

Defaults: batch 64 at 3x32x32 and 1x28x28, depth 8, width 64, unbiased Russian-roulette log-det
(the training estimator). Throughput counts images through forward + backward + Adam step.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import in_child, measure, parser, report  # noqa: E402


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.depth, args.width, args.shapes = 4, 1, 2, 8, "1x8x8"
    shapes = [[int(n) for n in shape.split("x")] for shape in args.shapes.split(",")]
    results = [
        in_child(measure, "residual", group, shape, args) if args.device == "cpu" else measure("residual", group, shape, args)
        for shape in shapes
        for group in args.groups.split(",")
    ]
    return report(results, args)


if __name__ == "__main__":
    main()
