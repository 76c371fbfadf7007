"""Training throughput, peak memory and time to a bits/dim target of the three flows, each against its trivial twin.

    python benchmarks/train_throughput.py --out benchmarks/results/train_throughput_gpu.json   # CIFAR-10 at 3x32x32
    python benchmarks/train_throughput.py --quick --out benchmarks/results/train_throughput_cpu.json   # digits, seconds

For every kind (residual, coupling, iaf) and group (trivial first): the model at ``--depth`` and
``--width``, whose hidden fields ``models.build`` matches to the trivial twin's parameter count, then

* images/s and peak memory of training steps (``common.training_step_speed``: the trainer's loss and
  AdamW with the training log-det estimator; CUDA's allocator peak on a GPU, the process's peak resident set on
  a CPU, where each configuration runs in its own process);
* time to target: :func:`gflows.train.fit` on the dataset (``--dataset``, default CIFAR-10, digits
  with ``--quick``) until the EMA weights reach ``--target-bpd`` on ``--test-size`` test images, at
  most ``--max-steps``; the wall time counts the training steps and the evaluations every
  ``--eval-every`` steps.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import in_child, parser, report, training_step_speed  # noqa: E402

from gflows import checks, models, train  # noqa: E402
from gflows.data import images  # noqa: E402


def measure(kind: str, group: str, args) -> Dict[str, object]:
    """Speed, memory and time to target of one model (one thread on a CPU: small kernels, busy machines)."""
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    train_set, test_set = images.load(args.dataset, "train", download=args.download), images.load(args.dataset, "test", download=args.download)
    test_set = images.subset(test_set, size=min(args.test_size, len(test_set)))
    shape = train_set.shape
    settings = models.twin_arguments(kind, group, shape, depth=args.depth, width=args.width)
    twin = models.parameter_count(models.build(kind, group="trivial", data_shape=shape, **settings))
    torch.manual_seed(0)
    model = models.build(kind, group=group, data_shape=shape, **settings).to(device)
    batch = next(images.epoch_batches(train_set, args.batch, seed=0, epoch=0)).to(device)
    result = {"kind": kind, "group": group, "shape": "x".join(map(str, shape)), "width": args.width,
              "parameters": models.parameter_count(model), "twin_parameters": twin}
    result.update(training_step_speed(model, batch, args.steps))
    model.eval()
    with torch.no_grad():
        result["z_equivariance_error"] = checks.equivariance_error(lambda v: model(v)[0], batch[:4], model.group, relative=True)

    def reached(step, history):
        return history[-1]["step"] == step and history[-1]["test_bpd"] <= args.target_bpd

    torch.manual_seed(0)
    model = models.build(kind, group=group, data_shape=shape, **settings)
    options = train.Options(steps=args.max_steps, batch_size=args.batch, lr=args.lr, warmup_steps=0, eval_every=args.eval_every,
                            eval_batch_size=256, group_metrics=False, ema_decay=0.99, progress=False, device=args.device)
    history = train.fit(model, train_set, test_set, options, callback=reached).history
    result.update(reached_target=history[-1]["test_bpd"] <= args.target_bpd, steps_to_target=history[-1]["step"],
                  time_to_target_s=history[-1]["time_s"], final_test_bpd=history[-1]["test_bpd"])
    return result


def main(argv=None) -> Dict[str, object]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10", choices=images.DATASETS)
    p.add_argument("--download", action="store_true", help="fetch the dataset if it is missing")
    p.add_argument("--target-bpd", type=float, default=4.0)
    p.add_argument("--max-steps", type=int, default=20000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kinds", default=",".join(models.KINDS), help="comma-separated model kinds")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.batch, args.steps, args.depth, args.width = "digits", 16, 2, 2, 8
        args.target_bpd, args.max_steps, args.eval_every, args.test_size, args.lr = 7.5, 60, 10, 100, 3e-3
    kinds: List[str] = args.kinds.split(",")
    groups = args.groups.split(",")
    results = [in_child(measure, kind, group, args) if args.device == "cpu" else measure(kind, group, args)
               for kind in kinds for group in groups]
    print(f"\n{'kind':9s} {'group':7s} {'params vs twin':>14s} {f'time to {args.target_bpd} bpd':>18s} {'steps':>6s} {'last bpd':>8s}")
    for r in results:
        reached = f"{r['time_to_target_s']:.1f} s" if r["reached_target"] else "not reached"
        print(f"{r['kind']:9s} {r['group']:7s} {r['parameters'] / r['twin_parameters']:14.3f} {reached:>18s} "
              f"{r['steps_to_target']:6d} {r['final_test_bpd']:8.3f}")
    return report(results, args)


if __name__ == "__main__":
    main()
