"""The experiment grid of ``gflows/configs``: a configuration per (dataset, kind, group), widths matched by parameter count.

    python benchmarks/config_grid.py                       # (re)write the configurations and gflows/configs/README.md
    python benchmarks/config_grid.py --throughput --out benchmarks/results/config_grid_cpu.json
    python benchmarks/config_grid.py --throughput --device cuda --out benchmarks/results/config_grid_gpu.json

Datasets (bases ``gflows/configs/_NAME.yaml``): digits-rot, fashion-rot, cifar10, cifar10-rot. Kinds:
residual, coupling, iaf. Groups: trivial, C4, D4 for every kind, and C8, D8 for the G-Residual flow,
the only kind that builds them with the same architecture (a coupling or IAF of 45-degree rotations
cannot squeeze 2x2 blocks: on one channel it has no fields to split, on three a different, far smaller
network).

**Widths.** Every configuration of a dataset and kind has the same ``width``: ``models.build`` gives an
equivariant model the hidden fields (regular fields topped up with scalar fields) whose parameter
count is closest to its trivial twin's (:func:`gflows.models.matched_hidden`); the table lists the
fields it chose and the ratio it reached.

**Throughput.** ``--throughput`` times training steps (``gflows.train.timing``: the trainer's loss
and AdamW with the training log-det estimator, a warm-up step then ``--steps``) of every
configuration's full-size model: on a CPU with batch ``--cpu-batch`` and one thread, in its own
process (its peak resident memory); on a GPU with
the configuration's batch size, which also gives the expected GPU hours of the run
(``steps * batch_size / images per second``, training only, without evaluations).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import in_child, machine, training_step_speed  # noqa: E402

from gflows import models  # noqa: E402
from gflows.train import experiment  # noqa: E402

DATASETS = {  # name (base: gflows/configs/_NAME.yaml) -> (description, model sizes)
    "digits-rot": ("digits rotated by multiples of 90 degrees", "small"),
    "fashion-rot": ("Fashion-MNIST rotated by multiples of 90 degrees", "large"),
    "cifar10": ("CIFAR-10, upright", "large"),
    "cifar10-rot": ("CIFAR-10 rotated by multiples of 90 degrees", "large"),
}
SIZES = {  # residual: depth blocks at each of its (2) scales
    "small": {"residual": dict(depth=4, width=32), "coupling": dict(depth=8, width=32, hidden_layers=2),
              "iaf": dict(depth=8, width=32, hidden_layers=2)},
    "large": {"residual": dict(depth=8, width=64), "coupling": dict(depth=8, width=96, hidden_layers=2),
              "iaf": dict(depth=8, width=96, hidden_layers=2)},
}
GROUPS = {"residual": ("trivial", "C4", "D4", "C8", "D8"), "coupling": ("trivial", "C4", "D4"), "iaf": ("trivial", "C4", "D4")}
TITLES = {"residual": "G-Residual flow", "coupling": "G-Coupling flow", "iaf": "G-IAF"}
README = experiment.CONFIGS / "README.md"


def grid() -> List[Dict[str, object]]:
    """Every configuration of the grid with its parameter count and the hidden fields build chose."""
    entries = []
    for dataset, (description, size) in DATASETS.items():
        shape = experiment.DATA_SHAPES[experiment.read(f"_{dataset}")["data"]["name"]]
        for kind, hparams in SIZES[size].items():
            for group in GROUPS[kind]:
                # the architecture the group allows (45-degree rotations: no squeeze), for the twin too
                settings = models.twin_arguments(kind, group, shape, **hparams) if group in ("C8", "D8") else dict(hparams)
                twin = models.parameter_count(models.build(kind, group="trivial", data_shape=shape, **settings))
                hidden = models.matched_hidden(kind, group, shape, **settings) if group != "trivial" else None
                count = models.parameter_count(models.build(kind, group=group, data_shape=shape, **settings))
                entries.append(dict(name=f"{dataset}-{kind}-{group}", dataset=dataset, description=description, kind=kind,
                                    group=group, model=dict(kind=kind, group=group, **settings), parameters=count,
                                    twin_parameters=twin,
                                    hidden=f"{hidden.regular} regular + {hidden.trivial} scalar" if hidden else f"{hparams['width']} channels"))
                print(f"{entries[-1]['name']:32s} {entries[-1]['hidden']:22s} parameters {count:8d} ({count / twin:.3f} x twin)",
                      flush=True)
    return entries


def _throughput(entry: Dict[str, object], device: str, batch: int, steps: int) -> Dict[str, float]:
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_num_threads(1)
    config = experiment.load(entry["name"])
    model = config.build_model().to(device)
    x = 0.05 + 0.9 * torch.rand(batch, *config.data.shape, device=device)
    return training_step_speed(model, x, steps)


def measure(entries: List[Dict[str, object]], device: str, cpu_batch: int, steps: int) -> None:
    """Add images/s, peak memory and what measured them (and on a GPU the expected hours) to every entry."""
    info = machine()
    if device == "cpu":
        note = f"batch {cpu_batch}, 1 thread, {info['cpus']}-core {info['platform']}, torch {info['torch']}"
    else:
        note = f"batch of the configuration, {info.get('gpu')}, torch {info['torch']}"
    for entry in entries:
        config = experiment.load(entry["name"])
        batch = cpu_batch if device == "cpu" else config.train.batch_size
        speed = in_child(_throughput, entry, device, batch, steps) if device == "cpu" else _throughput(entry, device, batch, steps)
        speed.update(batch=batch, measured_on=note)
        entry[device.split(":")[0]] = speed
        if device != "cpu":
            entry["gpu_hours"] = config.train.steps * config.train.batch_size / speed["images_per_s"] / 3600
        print(f"{entry['name']:32s} {speed['images_per_s']:9.2f} images/s (batch {batch}), peak {speed['peak_memory_mb']:.0f} MB", flush=True)


def _measured(entry: Dict[str, object]) -> Dict[str, object]:
    """The ``expected`` block of the existing configuration file, if it describes the same model
    (measurements of another model are dropped)."""
    path = experiment.CONFIGS / f"{entry['name']}.yaml"
    old = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    return old.get("expected", {}) if old.get("model") == entry["model"] else {}


def write(entries: List[Dict[str, object]]) -> None:
    """Write one YAML file per entry, and the README table."""
    rows = []
    for entry in entries:
        old = _measured(entry)
        cpu, gpu = entry.get("cpu"), entry.get("cuda")
        expected = {
            "parameters": entry["parameters"],
            "parameters_vs_trivial": round(entry["parameters"] / entry["twin_parameters"], 3),
            "cpu_images_per_s": round(cpu["images_per_s"], 2) if cpu else old.get("cpu_images_per_s"),
            "cpu_measured_on": cpu["measured_on"] if cpu else old.get("cpu_measured_on"),
            "gpu_images_per_s": round(gpu["images_per_s"], 1) if gpu else old.get("gpu_images_per_s"),
            "gpu_hours": round(entry["gpu_hours"], 2) if gpu else old.get("gpu_hours"),
            "gpu_measured_on": gpu["measured_on"] if gpu else old.get("gpu_measured_on"),
        }
        model = "\n".join(f"  {k}: {v}" for k, v in entry["model"].items())
        text = (
            f"# {TITLES[entry['kind']]}, group {entry['group']}, on {entry['description']} (base: _{entry['dataset']}.yaml).\n"
            f"# Generated by benchmarks/config_grid.py; change the grid there, the data and training in the base.\n"
            f"base: _{entry['dataset']}\n"
            f"model:\n{model}\n"
            f"# hidden fields chosen by models.build: {entry['hidden']} ({entry['parameters']} parameters, "
            f"{entry['parameters'] / entry['twin_parameters']:.3f} x the trivial twin).\n"
            f"# gpu_*: null until a GPU run of `python benchmarks/config_grid.py --throughput --device cuda` fills them;\n"
            f"# gpu_hours = steps * batch_size / gpu_images_per_s / 3600 (training only). CPU figures: batch\n"
            f"# and machine in cpu_measured_on, only comparable with each other.\n"
            f"expected:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in expected.items())
        )
        (experiment.CONFIGS / f"{entry['name']}.yaml").write_text(text)
        rows.append((entry, expected))
    lines = [
        "# Experiment configurations",
        "",
        "Run one with `python -m gflows.train --config NAME` (see the README's *Training* section). Files starting",
        "with `_` are the bases: data and training settings of a dataset. The others are generated by",
        "`benchmarks/config_grid.py`: every model of a dataset and kind has the same `width`, and `models.build`",
        "gives each equivariant model the hidden fields that match its trivial twin's parameter count (the table",
        "says which); `--throughput` measures training throughput (`expected` in each file).",
        "",
        "- **-rot** datasets: every training image is moved by a random rotation by a multiple of 90 degrees (C4),",
        "  afresh each epoch, and the group metrics average over C4; on upright `cifar10` they average over D4",
        "  (the test set rotated and flipped). `--override train.augment=D4 train.eval_group=D4` adds flips.",
        "- **C8, D8**: G-Residual flows only. Their 45-degree rotations act on pixels only approximately",
        "  (interpolation), so these models are exactly equivariant to their C4 / D4 subgroup, and they cannot",
        "  squeeze 2x2 blocks: they run at full resolution (`squeezes: 0`), and their `vs trivial` compares with",
        "  the full-resolution trivial twin (`--override model.squeezes=0`). Couplings and IAFs of these groups",
        "  would be a different, much smaller network, so they are left out.",
        "- **GPU hours**: not measured yet (no GPU was available when the grid was made); a GPU run of",
        "  `python benchmarks/config_grid.py --throughput --device cuda` fills them in. CPU figures come from the machine",
        "  named below, which other jobs shared while it ran (so they are noisy), at a small batch, and",
        "  only compare configurations with each other.",
        "",
        "| configuration | width | hidden fields | parameters | vs trivial | CPU images/s | GPU hours |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry, expected in rows:
        cpu = expected["cpu_images_per_s"]
        hours = expected["gpu_hours"]
        lines.append(f"| `{entry['name']}` | {entry['model']['width']} | {entry['hidden']} | {entry['parameters']} | "
                     f"{expected['parameters_vs_trivial']:.3f} | "
                     f"{'-' if cpu is None else cpu} | {'not measured' if hours is None else hours} |")
    notes = {n for _, e in rows for n in (e["cpu_measured_on"], e["gpu_measured_on"]) if n}
    lines += ["", *[f"- {note}" for note in sorted(notes)], ""]
    README.write_text("\n".join(lines))


def main(argv=None) -> List[Dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--throughput", action="store_true", help="also time training steps of every configuration")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cpu-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="timed steps per configuration (after 2 warm-up steps)")
    p.add_argument("--only", help="comma-separated configuration names to measure (default: all)")
    p.add_argument("--out", type=Path, help="write the entries as JSON here")
    p.add_argument("--entries", type=Path, help="reuse the grid of an earlier --out JSON instead of building it again")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # building models is small work: one thread avoids contention on a busy machine
    entries = json.loads(args.entries.read_text())["results"] if args.entries else grid()
    if args.throughput:
        measure([e for e in entries if not args.only or e["name"] in args.only.split(",")], args.device, args.cpu_batch, args.steps)
    write(entries)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "settings": vars(args) | {"out": str(args.out)},
                                        "results": entries}, indent=1, default=str))
    return entries


if __name__ == "__main__":
    main()
