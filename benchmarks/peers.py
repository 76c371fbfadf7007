"""gflows' three flows against normflows at matched parameter counts, each beside its convolution-only
ideal: one process, contenders interleaved, JSON out.

    pip install -r benchmarks/requirements-peers.txt       # normflows, for this benchmark only
    python benchmarks/peers.py --out benchmarks/results/peers_cpu.json
    python benchmarks/peers.py --quick                     # seconds, on a CPU

**Contenders** at each shape: gflows' G-Residual (full resolution, ``squeezes=0``, as the paper's code
and the peer), G-Coupling and G-IAF for every group of ``--groups`` (``models.build`` matches each
group's model to the trivial twin's parameter count), and, with the trivial twins' parameter counts,
normflows' Residual flow (``LipschitzCNN`` 3-1-3 branches; its defaults: 2 exact series terms then a
geometric(0.5) roulette, Neumann gradient, 5 power iterations per step) and a RealNVP stack (2x2
squeeze, affine couplings of half the channels on a two-layer ``ConvNet2d``, channel swap). Each
contender trains at its own defaults on its own loss, with AdamW.

**Clock**: :func:`gflows.train.timing.timed`, CPU time of this process per step on a CPU (one thread
by default, so that other jobs on the machine do not count) and wall time with CUDA synchronised on a
GPU. On a CPU, freed memory stays in the process for every contender alike
(:func:`gflows.runtime.keep_freed_cpu_memory`, as in gflows' trainer). ``--rounds`` rounds of
``--steps`` steps; every round runs the contenders and their ideals in a fresh random order; the
figure is the median over rounds.

**Ideal**: the convolutions of a training step (forward, backward, double backward, power iterations)
are recorded with their shapes and arguments, then replayed alone on random tensors: the ideal is the
step at this device's own throughput on exactly those convolutions, with everything else free.
``overhead`` = step / ideal. Convolution GFLOP per step come from ``torch.utils.flop_counter``.

**Memory**: on a GPU the allocator's peak during a step above the memory held before it; on a CPU the
peak resident set of a fresh process during 2 training steps, above the resident set before them (after
the build and a first step; one spawned process per contender, Linux, with glibc's default
allocator settings, which return freed memory, so that the figure is the step's own).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import in_child, machine  # noqa: E402

from gflows import models, runtime  # noqa: E402
from gflows.train import timing  # noqa: E402

CONVOLUTIONS = (torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default)


# --- contenders ---------------------------------------------------------------------------------

@dataclass
class Contender:
    """A model to time: its name, the package it comes from, its kind and group, and its options
    (gflows: ``models.build`` arguments; normflows: the hidden width)."""
    name: str
    source: str
    kind: str
    group: str
    options: dict


def _normflows_loss(model, x):
    return model.forward_kld(x)


def normflows_residual(shape, depth: int, hidden: int):
    """normflows' Residual flow at full resolution: ``depth`` x (residual block, ActNorm)."""
    import normflows as nf

    channels = shape[0]
    flows = []
    for _ in range(depth):
        branch = nf.nets.LipschitzCNN([channels, hidden, hidden, channels], [3, 1, 3], lipschitz_const=0.98)
        flows += [nf.flows.Residual(branch, reduce_memory=True), nf.flows.ActNorm((channels, 1, 1))]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(tuple(shape), trainable=False), flows)


def normflows_realnvp(shape, depth: int, hidden: int):
    """A normflows RealNVP stack: 2x2 squeeze, ``depth`` x (affine coupling, channel swap)."""
    import normflows as nf

    channels = 4 * shape[0]
    half = channels // 2
    flows = [nf.flows.Squeeze()]
    for _ in range(depth):
        net = nf.nets.ConvNet2d([channels - half, hidden, 2 * half], [3, 3])
        flows += [nf.flows.AffineCouplingBlock(net, scale_map="sigmoid"), nf.flows.Permute(channels, mode="swap")]
    latent_shape = (channels, shape[1] // 2, shape[2] // 2)
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(latent_shape, trainable=False), flows[::-1])


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_width(build: Callable[[int], torch.nn.Module], target: int) -> int:
    """The hidden width whose model's parameter count is closest to ``target`` (counts grow with width)."""
    best, width = 1, 1
    while True:
        count = _parameters(build(width))
        if abs(count - target) < abs(_parameters(build(best)) - target):
            best = width
        if count >= target:
            return best
        width += 1


GFLOWS_OPTIONS = {"residual": {"squeezes": 0}, "coupling": {}, "iaf": {}}
PEERS = {"residual": normflows_residual, "coupling": normflows_realnvp}


def build(contender: Contender, shape, args) -> torch.nn.Module:
    """The contender's model for images of ``shape`` at ``args.depth`` (and ``args.width`` for gflows)."""
    if contender.source == "gflows":
        return models.build(contender.kind, group=contender.group, data_shape=shape, depth=args.depth,
                            width=args.width, **contender.options)
    return PEERS[contender.kind](shape, args.depth, contender.options["hidden"])


def contenders(shape, args) -> List[Contender]:
    """Every gflows model of ``args.groups`` and the normflows peers, for images of ``shape``."""
    found = [Contender(f"gflows {kind} {group}", "gflows", kind, group, options)
             for kind, options in GFLOWS_OPTIONS.items() for group in args.groups.split(",")]
    if args.peers:
        for kind, peer in PEERS.items():
            twin = _parameters(build(Contender("", "gflows", kind, "trivial", GFLOWS_OPTIONS[kind]), shape, args))
            hidden = matched_width(lambda width: peer(shape, args.depth, width), twin)
            found.append(Contender(f"normflows {peer.__name__.split('_')[1]}", "normflows", kind, "trivial", {"hidden": hidden}))
    return found


# --- the ideal: a step's convolutions alone -----------------------------------------------------

class _RecordConvolutions(TorchDispatchMode):
    """Records every convolution (forward or backward) dispatched inside it, with its arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in CONVOLUTIONS:
            described = [("tensor", a.shape, a.dtype) if isinstance(a, torch.Tensor) else ("value", a) for a in args]
            self.calls.append((func, described))
        return func(*args, **(kwargs or {}))


def convolutions_alone(step: Callable[[], None], steps: int, device: torch.device) -> Callable[[], None]:
    """A function replaying, on random tensors, the convolutions of ``steps`` calls of ``step`` (several
    steps, because the Russian roulette changes their number: divide its time by ``steps``)."""
    recorder = _RecordConvolutions()
    with recorder:
        for _ in range(steps):
            step()
    tensors = {}                                                  # one random tensor per (shape, dtype)

    def tensor(shape, dtype):
        return tensors.setdefault((tuple(shape), dtype), torch.randn(shape, dtype=dtype, device=device))

    replays = [(func, [tensor(d[1], d[2]) if d[0] == "tensor" else d[1] for d in described])
               for func, described in recorder.calls]

    def replay() -> None:
        with torch.no_grad():
            for func, arguments in replays:
                func(*arguments)

    return replay


def convolution_gflop(replay: Callable[[], None]) -> float:
    """GFLOP of the convolutions a :func:`convolutions_alone` replay runs, as torch's counter counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        replay()
    return counter.get_total_flops() / 1e9


# --- measurement ----------------------------------------------------------------------------------

def _step(contender: Contender, shape, args):
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(contender, shape, args).to(device)
    batch = 0.05 + 0.9 * torch.rand(args.batch, *shape, device=device)
    loss = timing.trainer_loss if contender.source == "gflows" else _normflows_loss
    step = timing.training_step(model, batch, loss=loss)
    return model, step


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident set) or ``VmHWM`` (its peak) of this process, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def resident_memory(contender: Contender, shape, args) -> Optional[float]:
    """MB of peak resident set during 2 training steps above the set after building (run it in a fresh
    process); ``None`` where Linux's peak reset (``/proc/self/clear_refs``) is not available."""
    torch.set_num_threads(args.threads)
    _, step = _step(contender, shape, args)
    step()                                                        # data-dependent initialisation
    try:
        Path("/proc/self/clear_refs").write_text("5")             # the peak := the resident set now
    except OSError:
        return None
    before = _status_mb("VmRSS")
    step()
    step()
    return _status_mb("VmHWM") - before


def cuda_memory(step: Callable[[], None], device: torch.device) -> float:
    """MB of CUDA allocator peak during a step above what was allocated before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def measure(shape, args) -> List[Dict[str, object]]:
    """Time every contender and its ideal at ``shape``, interleaved (module docstring)."""
    device = torch.device(args.device)
    entries, results = [], []
    for contender in contenders(shape, args):
        model, step = _step(contender, shape, args)
        step()                                                    # warm-up (and data-dependent init)
        ideal = convolutions_alone(step, args.steps, device)
        ideal()
        result = {"name": contender.name, "source": contender.source, "kind": contender.kind,
                  "group": contender.group, "shape": "x".join(map(str, shape)), "parameters": _parameters(model),
                  "conv_gflop_per_step": convolution_gflop(ideal) / args.steps, "step_s": [], "ideal_s": []}
        result["memory_mb"] = (cuda_memory(step, device) if device.type == "cuda"
                               else in_child(resident_memory, contender, shape, args))
        entries += [(result["step_s"], step, args.steps), (result["ideal_s"], ideal, 1)]
        results.append(result)
    order = random.Random(0)
    for _ in range(args.rounds):
        order.shuffle(entries)
        for times, function, calls in entries:                  # the ideal: one call replays args.steps steps
            wall, cpu = timing.timed(function, calls, device)
            times.append((wall if device.type == "cuda" else cpu) * calls / args.steps)
    for result in results:
        result["seconds_per_step"] = statistics.median(result["step_s"])
        result["ideal_seconds_per_step"] = statistics.median(result["ideal_s"])
        result["overhead"] = result["seconds_per_step"] / result["ideal_seconds_per_step"]
        result["conv_gflop_per_s"] = result["conv_gflop_per_step"] / result["seconds_per_step"]
    return results


def compare(results: List[Dict[str, object]]) -> None:
    """Add each model's step time relative to the trivial twin and to the normflows peer of its kind."""
    for r in results:
        same = [o for o in results if o["shape"] == r["shape"] and o["kind"] == r["kind"]]
        twin = next((o for o in same if o["source"] == "gflows" and o["group"] == "trivial"), None)
        peer = next((o for o in same if o["source"] == "normflows"), None)
        r["vs_twin"] = r["seconds_per_step"] / twin["seconds_per_step"] if twin else None
        r["vs_normflows"] = r["seconds_per_step"] / peer["seconds_per_step"] if peer else None


def _ratio(value: Optional[float]) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _number(value: Optional[float]) -> str:
    return f"{value:.0f}" if value is not None else "-"


def report(results: List[Dict[str, object]], args) -> Dict[str, object]:
    """Print the table and write the JSON document if ``--out`` is given."""
    unit = "wall" if args.device.startswith("cuda") else "CPU"
    print(f"{'model':26s} {'shape':8s} {'params':>7s} {unit + ' ms':>9s} {'ideal ms':>9s} {'overhead':>8s} "
          f"{'vs twin':>7s} {'vs nf':>6s} {'GF/s':>6s} {'mem MB':>7s}")
    for r in results:
        print(f"{r['name']:26s} {r['shape']:8s} {r['parameters']:7d} {1e3 * r['seconds_per_step']:9.1f} "
              f"{1e3 * r['ideal_seconds_per_step']:9.1f} {r['overhead']:8.2f} {_ratio(r['vs_twin']):>7s} "
              f"{_ratio(r['vs_normflows']):>6s} {r['conv_gflop_per_s']:6.1f} {_number(r['memory_mb']):>7s}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    document = {"machine": machine(), "settings": settings, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2))
        print(f"written to {args.out}")
    return document


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds on a CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--groups", default="trivial,C4,D4", help="comma-separated; trivial is the twin")
    p.add_argument("--shapes", default="1x28x28,3x32x32", help="comma-separated CxHxW")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="steps per contender per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--no-peers", dest="peers", action="store_false", help="gflows only (normflows not installed)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p


def main(argv=None) -> Dict[str, object]:
    args = parser().parse_args(argv)
    if args.quick:
        args.batch, args.depth, args.width, args.steps, args.rounds, args.shapes = 2, 1, 4, 1, 2, "1x8x8"
    if args.peers:
        try:
            import normflows  # noqa: F401
        except ImportError:
            raise SystemExit("normflows is not installed: pip install -r benchmarks/requirements-peers.txt "
                             "(or pass --no-peers)") from None
    torch.set_num_threads(args.threads)
    runtime.keep_freed_cpu_memory()                               # as gflows' trainer does, for every contender
    results = [r for shape in args.shapes.split(",") for r in measure([int(n) for n in shape.split("x")], args)]
    compare(results)
    return report(results, args)


if __name__ == "__main__":
    main()
