"""Command line: ``python -m gflows.train --config NAME_OR_PATH [--override section.key=value ...]
[--out DIR] [--resume]``; under ``torchrun --nproc_per_node N`` the same command trains on N processes.

``--list`` names the shipped configurations, ``--check`` validates one and prints it resolved.
The run's folder (default ``runs/NAME``) receives ``config.yaml`` (the resolved configuration),
``metrics.csv``, ``metrics.json`` and ``checkpoint.pt``; ``--resume`` continues from the checkpoint
(``--config`` may then be left out: the folder's ``config.yaml`` is used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from . import checkpoint, distributed
from .experiment import ConfigError, apply_overrides, available, load, read, validate
from .loop import CHECKPOINT


def parser() -> argparse.ArgumentParser:
    """The command line's arguments (module docstring)."""
    p = argparse.ArgumentParser(prog="python -m gflows.train",
                                description="Train a flow from an experiment configuration (torchrun: on several processes).")
    p.add_argument("--config", help="a configuration's name (see --list) or a path to a YAML file")
    p.add_argument("--override", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="change a setting, e.g. train.lr=3e-4 model.width=64 (values in YAML syntax)")
    p.add_argument("--out", type=Path, help="the run's folder (default runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--list", action="store_true", help="list the shipped configurations and exit")
    p.add_argument("--check", action="store_true", help="validate the configuration, print it resolved, and exit")
    return p


def _experiment(args):
    if args.config is None:
        if not (args.resume and args.out is not None):
            raise ConfigError("give --config NAME_OR_PATH (or --resume --out DIR to continue a run from its config.yaml)")
        return validate(apply_overrides(read(args.out / "config.yaml"), args.override), name=args.out.name)
    return load(args.config, args.override)


def main(argv=None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); the exit status: 0, or 2 for a bad configuration."""
    args = parser().parse_args(argv)
    if args.list:
        print("\n".join(available()))
        return 0
    try:
        experiment = _experiment(args)
        if args.check:
            print(yaml.safe_dump(experiment.sections(), sort_keys=False), end="")
            return 0
        current = distributed.setup()
        experiment.check_processes(current.size)
        out = args.out or Path("runs") / experiment.name
        if (out / CHECKPOINT).exists() and not args.resume:
            raise ConfigError(f"{out / CHECKPOINT} exists: add --resume to continue that run, or choose another --out")
    except ConfigError as error:
        distributed.teardown()
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if current.is_main:
            checkpoint.write_text(yaml.safe_dump(experiment.sections(), sort_keys=False), out / "config.yaml")
        result = experiment.run(out, resume=args.resume)
    finally:
        distributed.teardown()
    if current.is_main:
        print(f"finished {experiment.name} in {out}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.final.items()
                                                                   if isinstance(v, float) and k != "time_s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
