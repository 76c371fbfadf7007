"""Training throughput and peak memory of G-Coupling and G-IAF against their trivial-group twins.

For each data shape (3x32x32 and 1x28x28) and each kind ("coupling", "iaf"), the same model is built
for the trivial group and for ``--group`` (default D4) with the same ``depth`` and ``width`` (the
width rule of ``gflows.nn.hidden_fields`` keeps parameter counts comparable), and timed on training
steps (forward, backward, Adam step) after warm-up steps. Peak memory is measured on CUDA only.

    python benchmarks/coupling_speed.py --out results/coupling_speed.json          # GPU: batch 64
    python benchmarks/coupling_speed.py --quick --out results/coupling_speed.json  # CPU, seconds

CPU numbers are only meaningful as ratios (equivariant / trivial).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import torch

from gflows import models

SHAPES = ((3, 32, 32), (1, 28, 28))
KINDS = ("coupling", "iaf")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(kind: str, group: str, shape: tuple, *, batch: int, steps: int, warmup: int, depth: int, width: int,
            device: torch.device) -> dict:
    """Images per second of a training step and peak memory (bytes, CUDA only) for one model."""
    torch.manual_seed(0)
    model = models.build(kind, group=group, data_shape=shape, depth=depth, width=width).to(device)
    x = torch.rand(batch, *shape, device=device)
    model(x)  # data-dependent initialisation
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> float:
        loss = model.bits_per_dim(x).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    tic = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _synchronize(device)
    seconds = time.perf_counter() - tic
    return {
        "kind": kind, "group": group, "shape": list(shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "images_per_second": batch * steps / seconds,
        "seconds_per_step": seconds / steps,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "final_bpd": loss,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU-sized run: batch 4, 2 steps, depth 2, width 16")
    parser.add_argument("--group", default="D4")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    settings = dict(batch=4, steps=2, warmup=1, depth=2, width=16) if args.quick else dict(batch=64, steps=20, warmup=3, depth=8, width=64)
    for name in ("batch", "steps", "depth", "width"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    device = torch.device(args.device)
    results, ratios = [], []
    for shape in SHAPES:
        for kind in KINDS:
            pair = [measure(kind, group, shape, device=device, **settings) for group in ("trivial", args.group)]
            results += pair
            ratio = pair[1]["images_per_second"] / pair[0]["images_per_second"]
            ratios.append({"kind": kind, "shape": list(shape), "group": args.group, "throughput_ratio_equivariant_over_trivial": ratio})
            print(f"{kind:8s} {'x'.join(map(str, shape)):8s} trivial {pair[0]['images_per_second']:8.1f} img/s "
                  f"({pair[0]['parameters']} params) | {args.group} {pair[1]['images_per_second']:8.1f} img/s "
                  f"({pair[1]['parameters']} params) | ratio {ratio:.2f}", flush=True)
    report = {
        "benchmark": "coupling_speed",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": torch.get_num_threads(),
                    "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "torch": torch.__version__,
        "settings": dict(settings, group=args.group, quick=args.quick),
        "results": results,
        "ratios": ratios,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"written {args.out}")
    return report


if __name__ == "__main__":
    main()
