"""Command line: ``python -m gflows.train --config NAME_OR_PATH [--override section.key=value ...]
[--out DIR] [--resume]``; under ``torchrun --nproc_per_node N`` the same command trains on N processes.

``--list`` names the shipped configurations, ``--check`` validates one and prints it resolved.
The run's folder (default ``runs/NAME``) receives ``config.yaml`` (the resolved configuration, its
name included), ``metrics.csv``, ``metrics.json`` and ``checkpoint.pt`` (and the previous checkpoint,
``checkpoint.previous.pt``); ``--resume`` continues from the newest checkpoint that loads (``--config``
may then be left out: the folder's ``config.yaml`` is used). A resume is checked in full before
anything in the folder changes, and the folder is locked while the run lives.

Every failure a user can cause (a bad configuration, a busy folder, a run that cannot be resumed as
asked, missing data, a diverging loss) ends with ``error: ...`` on stderr and exit status 2, without
a traceback; ``GFLOWS_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import yaml

from ..data.images import DatasetNotFound
from . import checkpoint, distributed, runfolder
from .experiment import ConfigError, apply_overrides, available, load, read, validate
from .loop import CHECKPOINT, NonFiniteLoss, ResumeError

#: What a user's command can run into; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, ResumeError, runfolder.RunFolderBusy, DatasetNotFound, NonFiniteLoss)


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
        if not (args.out / "config.yaml").is_file():
            raise ResumeError(f"cannot resume: {args.out} holds no run (no config.yaml); check --out, "
                              "or give --config to say which run it holds")
        return validate(apply_overrides(read(args.out / "config.yaml"), args.override), name=args.out.name)
    return load(args.config, args.override)


def main(argv=None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); the exit status: 0, or 2 for an
    error the user can fix (module docstring)."""
    args = parser().parse_args(argv)
    if args.list:
        print("\n".join(available()))
        return 0
    try:
        return _run(args)
    except USER_ERRORS as error:
        if os.environ.get("GFLOWS_DEBUG") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()


def _run(args) -> int:
    experiment = _experiment(args)
    if args.check:
        print(yaml.safe_dump(experiment.sections(), sort_keys=False), end="")
        return 0
    current = distributed.setup()
    experiment.check_processes(current.size)
    out = args.out or Path("runs") / experiment.name
    if args.resume and not checkpoint.exists(out / CHECKPOINT):
        raise ResumeError(f"cannot resume: no checkpoint in {out}; start the run without --resume")
    if not args.resume and checkpoint.exists(out / CHECKPOINT):
        raise ConfigError(f"{out / CHECKPOINT} exists: add --resume to continue that run, or choose another --out")
    # the lock before the first write; a resume is validated in full (by fit) before anything is written
    with runfolder.hold(out) if current.is_main else contextlib.nullcontext():
        if current.is_main and not args.resume:
            checkpoint.write_text(yaml.safe_dump(experiment.sections(), sort_keys=False), out / "config.yaml")
        result = experiment.run(out, resume=args.resume)
    if current.is_main:
        print(f"finished {experiment.name} in {out}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.final.items()
                                                                   if isinstance(v, float) and k != "time_s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
