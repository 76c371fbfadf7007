"""Shared pieces of the benchmark scripts: machine description, timing of training steps, JSON out.

Every script compares equivariant models with their trivial-group twins in one run; see README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch

from gflows import checks, models
from gflows.train import timing


def machine() -> Dict[str, object]:
    """What ran the benchmark: host, CPU count, torch version and the device."""
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parser(description: str) -> argparse.ArgumentParser:
    """Options every speed benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds on a CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--groups", default="trivial,C4,D4", help="comma-separated group names; trivial is the twin")
    p.add_argument("--shapes", default="3x32x32,1x28x28", help="comma-separated CxHxW")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p


def training_step_speed(model: torch.nn.Module, batch: torch.Tensor, steps: int) -> Dict[str, float]:
    """Images per second of ``steps`` training steps (:func:`gflows.train.timing.seconds_per_step`: the
    trainer's loss and AdamW, after a warm-up step), and peak memory.

    Peak memory is CUDA's allocator peak on a GPU and the process's peak resident set on a CPU
    (run each configuration in its own process, see :func:`in_child`).
    """
    if batch.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds, _ = timing.seconds_per_step(model, batch, steps)
    if batch.is_cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images_per_s": batch.shape[0] / seconds, "seconds_per_step": seconds, "peak_memory_mb": peak_mb}


def measure(kind: str, group: str, shape: List[int], args: argparse.Namespace, variant: str = "", **hparams) -> Dict[str, object]:
    """Build ``kind`` for ``group`` at ``shape`` (with ``hparams``, named ``variant``), time its training
    step, measure z's equivariance error."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = models.build(kind, group=group, data_shape=shape, depth=args.depth, width=args.width, **hparams).to(device)
    batch = 0.05 + 0.9 * torch.rand(args.batch, *shape, device=device)
    result = {"kind": kind, "variant": variant, "group": group, "shape": "x".join(map(str, shape)),
              "parameters": sum(p.numel() for p in model.parameters())}
    result.update(training_step_speed(model, batch, args.steps))
    model.eval()
    with torch.no_grad():
        result["z_equivariance_error"] = checks.equivariance_error(lambda v: model(v)[0], batch[:4], model.group, relative=True)
    return result


def _run_and_send(connection, function: Callable, arguments: tuple) -> None:
    connection.send(function(*arguments))
    connection.close()


def in_child(function: Callable, *arguments):
    """Run ``function(*arguments)`` in a fresh process (so peak memory is its own) and return its result.

    The process is spawned, not forked: a child forked from a process whose OpenMP thread pool has
    run (any earlier torch work, e.g. other tests) can deadlock.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_run_and_send, args=(sender, function, arguments))
    process.start()
    result = receiver.recv()
    process.join()
    return result


def run(kinds: List[str], description: str, argv=None, variants: Dict[str, dict] = None) -> Dict[str, object]:
    """The whole benchmark: parse the options, measure every (kind, variant, shape, group), :func:`report`.

    ``variants`` names sets of extra ``models.build`` arguments (default: one, with none), each
    compared with its own twin. ``--quick`` shrinks everything to seconds on a CPU; on a CPU each
    configuration runs in its own process (:func:`in_child`).
    """
    variants = variants or {"": {}}
    args = parser(description).parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.depth, args.width, args.shapes = 4, 1, 2, 8, "1x8x8"
    shapes = [[int(n) for n in shape.split("x")] for shape in args.shapes.split(",")]
    results = [
        in_child(functools.partial(measure, **extra), kind, group, shape, args, name) if args.device == "cpu"
        else measure(kind, group, shape, args, name, **extra)
        for kind in kinds
        for name, extra in variants.items()
        for shape in shapes
        for group in args.groups.split(",")
    ]
    return report(results, args)


def report(results: List[Dict[str, object]], args: argparse.Namespace, baseline_key: str = "trivial") -> Dict[str, object]:
    """Print a table with each model's throughput relative to its twin, and write JSON if asked."""
    twins = {(r["kind"], r.get("variant", ""), r["shape"]): r for r in results if r["group"] == baseline_key}
    print(f"{'kind':26s} {'shape':9s} {'group':8s} {'params':>8s} {'img/s':>9s} {'vs twin':>8s} {'peak MB':>9s} {'equiv err':>10s}")
    for r in results:
        twin = twins.get((r["kind"], r.get("variant", ""), r["shape"]))
        r["throughput_vs_twin"] = r["images_per_s"] / twin["images_per_s"] if twin else None
        r["memory_vs_twin"] = r["peak_memory_mb"] / twin["peak_memory_mb"] if twin else None
        ratio = f"{r['throughput_vs_twin']:.2f}" if twin else "-"
        label = f"{r['kind']} {r.get('variant', '')}".strip()
        print(
            f"{label:26s} {r['shape']:9s} {r['group']:8s} {r['parameters']:8d} {r['images_per_s']:9.1f} "
            f"{ratio:>8s} {r['peak_memory_mb']:9.0f} {r['z_equivariance_error']:10.2e}"
        )
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    document = {"machine": machine(), "settings": settings, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2))
        print(f"written to {args.out}")
    return document
