r"""The training loop: :func:`fit` a density model to data, with evaluation, checkpoints and resume.

One step, on every process (see :mod:`.distributed`):

1. the process's shard of the next global batch (:mod:`.sources`);
2. loss = mean over the shard of bits/dim (images) or NLL in nats (points); DDP averages the
   gradients over the processes, so the step is that of the mean over the global batch;
3. clip the gradient's global 2-norm to ``grad_clip``; a non-finite loss or gradient norm raises
   :class:`NonFiniteLoss` with the step number (never skipped);
4. AdamW with the learning rate ``lr * min(1, (t + 1) / warmup_steps)`` at step t = 0, 1, ...
   (linear warm-up, then constant);
5. update the EMA of the weights (:mod:`.ema`).

Before the first step, one forward pass in training mode on the first global batch, identical on
every process and before DDP is set up, runs the data-dependent initialisation (ActNorm) and the
first power iterations of Lipschitz layers; the EMA copy is made after it.

Every ``eval_every`` steps (and at steps 0 and ``steps``) the **EMA weights** are evaluated on the
test set (:func:`.metrics.evaluate`) and a row is appended to the history. With ``out``, rank 0
writes the history to ``metrics.csv`` and ``metrics.json`` and, every ``checkpoint_every`` steps,
an atomic checkpoint ``checkpoint.pt`` (:mod:`.checkpoint`) with the model, the EMA, the optimiser,
the schedule, the position in the data, every process's random-generator states, the options and the
history. ``resume=True`` continues from it and reproduces the uninterrupted run exactly (on a CPU;
on a GPU up to the non-determinism of some CUDA kernels).

**Seeds.** Everything derives from ``options.seed`` (:func:`.rng.derive_seed`): the data order
(``"data"``), the initialisation pass (``"init"``), the training noise of process r (``"train", r``)
and the evaluation noise (``"eval"``). The model's initial weights are whatever ``model`` holds:
build it after ``torch.manual_seed(...)`` (the CLI uses ``derive_seed(seed, "model")``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..flows import FlowModel
from ..groups import get
from . import checkpoint, distributed, rng
from .ema import EMA
from .metrics import evaluate, is_image_model, sample_loss
from .sources import Source, as_source, batches_per_epoch

CHECKPOINT = "checkpoint.pt"
#: Options that may differ when a run is resumed (they do not change what is computed).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "progress", "device")


@dataclass
class Options:
    """Settings of :func:`fit`; plain types only (they are saved in checkpoints and metrics files).

    Attributes:
        steps: optimiser steps in all.
        batch_size: the global batch, split evenly over the processes.
        lr, weight_decay, betas: AdamW's.
        warmup_steps: linear warm-up of the learning rate over this many steps (0: none).
        grad_clip: largest global gradient 2-norm (``None``: no clipping; the norm is still logged).
        ema_decay: decay of the weights' moving average used for evaluation (0: the weights themselves).
        eval_every: evaluate every this many steps (and at steps 0 and ``steps``).
        eval_batch_size: batch size of the evaluation.
        eval_group: group of the group-averaged metrics and of the invariance gap; ``None`` uses the
            model's group. Give the equivariant model's group to a trivial twin to compare them.
        group_metrics: ``False`` skips the group average and the invariance gap (|G| times cheaper).
        augment: a group name: each training sample is moved by a random element (data augmentation).
        checkpoint_every: write a checkpoint every this many steps (``None``: at every evaluation);
            only with ``out``.
        seed: the one seed of the run.
        device: ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``.
        progress: show a tqdm progress bar (rank 0).
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 0
    grad_clip: Optional[float] = 1.0
    ema_decay: float = 0.999
    eval_every: int = 500
    eval_batch_size: int = 256
    eval_group: Optional[str] = None
    group_metrics: bool = True
    augment: Optional[str] = None
    checkpoint_every: Optional[int] = None
    seed: int = 0
    device: Optional[str] = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer or None, got {self.checkpoint_every}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("eval_group", "augment"):
            if getattr(self, name) is not None:
                get(getattr(self, name))  # raises for an unknown group

    def learning_rate(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): linear warm-up, then ``lr``."""
        return self.lr * warmup_factor(step, self.warmup_steps)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """``min(1, (step + 1) / warmup_steps)``; 1 without warm-up."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


class NonFiniteLoss(FloatingPointError):
    """The loss or the gradient norm of a step is NaN or infinite; the step was not applied."""

    def __init__(self, step: int, loss: float, grad_norm: float, checkpoint_path: Optional[Path]) -> None:
        where = f"; the last good checkpoint is {checkpoint_path}" if checkpoint_path and checkpoint_path.exists() else ""
        super().__init__(
            f"non-finite training loss at step {step} (loss {loss}, gradient norm {grad_norm}){where}. "
            "Lower the learning rate, raise warmup_steps or clip gradients harder."
        )
        self.step, self.loss, self.grad_norm = step, loss, grad_norm


@dataclass
class Result:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (last step's weights, training mode).
        ema: the averaged copy in evaluation mode: the weights the metrics were computed with.
        history: one dict per evaluation: ``step``, ``epoch`` (fractional), ``time_s``, ``lr``,
            ``train_loss`` and ``grad_norm`` (means since the previous row; bits/dim for images,
            nats for points), then the metrics of :func:`.metrics.evaluate`.
        options: the options of the run.
    """

    model: FlowModel
    ema: FlowModel
    history: List[Dict[str, object]]
    options: Options
    out: Optional[Path] = None

    def curve(self, key: str) -> Tuple[List[int], List[float]]:
        """Steps and values of one column of the history, e.g. ``result.curve("test_bpd")``."""
        rows = [row for row in self.history if row.get(key) is not None]
        return [row["step"] for row in rows], [row[key] for row in rows]

    @property
    def final(self) -> Dict[str, object]:
        """The last row of the history."""
        return self.history[-1]


class _Objective(nn.Module):
    """The per-sample loss as a module, so DDP can wrap it: bits/dim (images) or nats (points)."""

    def __init__(self, model: FlowModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sample_loss(self.model, x)


@dataclass
class _Progress:
    """Where the run is: saved in checkpoints."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of ``epoch`` already used
    elapsed: float = 0.0  # seconds of training before this process started
    loss_sum: float = 0.0  # since the last row
    grad_norm_sum: float = 0.0
    count: int = 0
    history: List[Dict[str, object]] = field(default_factory=list)


def fit(
    model: FlowModel,
    train_data,
    test_data=None,
    options: Optional[Options] = None,
    *,
    out=None,
    resume: bool = False,
    callback: Optional[Callable[[int], None]] = None,
    config: Optional[Dict[str, object]] = None,
) -> Result:
    """Train ``model`` on ``train_data``, evaluating its EMA weights on ``test_data``.

    Args:
        model: a :class:`~gflows.flows.FlowModel` (e.g. from :func:`gflows.models.build`).
        train_data, test_data: points ``(N, 2)`` or float images ``(N, C, H, W)`` as tensors, an
            ``ImageSet`` of :mod:`gflows.data.images`, or a :class:`~gflows.train.sources.Source`.
            Without test data there is no evaluation (rows hold the training loss only).
        options: :class:`Options` (defaults if ``None``).
        out: folder for ``metrics.csv``, ``metrics.json`` and ``checkpoint.pt`` (rank 0 writes).
        resume: continue from ``out/checkpoint.pt``; otherwise an existing checkpoint there is an error.
        callback: called with the step number after every step (after any evaluation and checkpoint).
        config: a plain dict saved with the checkpoint and the metrics (the CLI stores its config).
    Returns:
        a :class:`Result`.
    Raises:
        NonFiniteLoss: at the first step whose loss or gradient norm is not finite.
    """
    options = options or Options()
    current = distributed.world()
    device = torch.device(options.device) if options.device else distributed.default_device(current)
    out = Path(out) if out is not None else None
    checkpoint_path = out / CHECKPOINT if out is not None else None
    train_source = as_source(train_data, rng.derive_seed(options.seed, "data"), options.augment)
    test_source = as_source(test_data, rng.derive_seed(options.seed, "test")) if test_data is not None else None
    for name, source in (("training", train_source), ("test", test_source)):
        if source is not None and tuple(source.data_shape) != model.data_shape:
            raise ValueError(f"the {name} data has samples of shape {tuple(source.data_shape)}, the model {model.data_shape}")
    if options.batch_size % current.size:
        raise ValueError(f"batch_size {options.batch_size} is not divisible by the number of processes {current.size}")
    shard = options.batch_size // current.size
    n_batches = batches_per_epoch(train_source, options.batch_size)
    if n_batches == 0:
        raise ValueError(f"batch_size {options.batch_size} is larger than the training set ({len(train_source)} samples)")
    eval_group = get(options.eval_group) if options.eval_group else model.group

    model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr, betas=options.betas, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: warmup_factor(step, options.warmup_steps))
    if resume:
        state = _load(checkpoint_path, options, current)
        model.load_state_dict(state["model"])
        ema = EMA(model, options.ema_decay)
        ema.model.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        progress = _Progress(**state["progress"])
        rng.restore(state["rng"][current.rank])
    else:
        if checkpoint_path is not None and checkpoint_path.exists():
            raise FileExistsError(f"{checkpoint_path} exists: resume the run (resume=True, --resume) or choose another folder")
        distributed.broadcast_state(model, current)
        rng.seed_everything(rng.derive_seed(options.seed, "init"))
        with torch.no_grad():
            first = next(iter(train_source.epoch(0, options.batch_size)))
            model(first.to(device=device, dtype=_dtype(model)))
        ema = EMA(model, options.ema_decay)
        rng.seed_everything(rng.derive_seed(options.seed, "train", current.rank))
        progress = _Progress()
    objective: nn.Module = _Objective(model)
    if current.distributed:
        objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                            init_sync=False, forward_sync_buffers=False)

    def evaluate_ema() -> Dict[str, float]:
        if test_source is None:
            return {}
        ema.model.eval()
        metrics = evaluate(ema.model, test_source.evaluation(options.eval_batch_size), eval_group,
                           seed=rng.derive_seed(options.seed, "eval"), group_metrics=options.group_metrics, current=current)
        ema.model.train()
        return metrics

    def add_row(lr: float) -> None:
        mean = (lambda total: total / progress.count) if progress.count else (lambda total: None)
        row = {"step": progress.step, "epoch": progress.step / n_batches,
               "time_s": progress.elapsed + time.perf_counter() - started, "lr": lr,
               "train_loss": mean(progress.loss_sum), "grad_norm": mean(progress.grad_norm_sum)}
        row.update(evaluate_ema())
        progress.history.append(row)
        progress.loss_sum = progress.grad_norm_sum = 0.0
        progress.count = 0
        if out is not None and current.is_main:
            _write_metrics(out, progress.history, options, config)
        if options.progress and current.is_main:
            bar.write(_describe(row))

    def save_checkpoint() -> None:
        states = distributed.all_gather(rng.capture(), current)
        if current.is_main:
            saved = dataclasses.replace(progress, elapsed=progress.elapsed + time.perf_counter() - started)
            checkpoint.save({
                "model": model.state_dict(), "ema": ema.model.state_dict(), "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(), "progress": dataclasses.asdict(saved), "rng": states,
                "world_size": current.size, "options": dataclasses.asdict(options), "config": config,
            }, checkpoint_path)

    started = time.perf_counter()
    bar = tqdm(total=options.steps, initial=progress.step, disable=not (options.progress and current.is_main),
               desc="training", unit="step")
    if progress.step == 0 and not progress.history:
        add_row(options.learning_rate(0))
    checkpoint_every = options.checkpoint_every or options.eval_every
    while progress.step < options.steps:
        for x in train_source.epoch(progress.epoch, shard, rank=current.rank, world_size=current.size, start=progress.position):
            lr = optimiser.param_groups[0]["lr"]
            loss = objective(x.to(device=device, dtype=_dtype(model))).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip or math.inf)
            mean_loss = float(distributed.all_sum(loss.detach().reshape(1), current)) / current.size
            if not (math.isfinite(mean_loss) and math.isfinite(float(grad_norm))):
                raise NonFiniteLoss(progress.step + 1, mean_loss, float(grad_norm), checkpoint_path)
            optimiser.step()
            schedule.step()
            ema.update(model, progress.step)
            progress.step += 1
            progress.position += 1
            progress.loss_sum += mean_loss
            progress.grad_norm_sum += float(grad_norm)
            progress.count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
            if progress.step % options.eval_every == 0 or progress.step == options.steps:
                add_row(lr)
            if out is not None and (progress.step % checkpoint_every == 0 or progress.step == options.steps):
                save_checkpoint()
            if callback is not None:
                callback(progress.step)
            if progress.step >= options.steps:
                break
        else:
            progress.epoch += 1
            progress.position = 0
    bar.close()
    distributed.barrier(current)
    ema.model.eval()
    return Result(model, ema.model, progress.history, options, out)


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _load(path: Optional[Path], options: Options, current: distributed.World) -> Dict[str, object]:
    if path is None:
        raise ValueError("resume=True needs the run's folder (out=...)")
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: no checkpoint at {path}")
    state = checkpoint.load(path)
    saved = state["options"]
    changed = {key: (saved[key], value) for key, value in dataclasses.asdict(options).items()
               if key not in RESUMABLE_CHANGES and _plain(saved.get(key)) != _plain(value)}
    if changed:
        details = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(f"cannot resume {path} with different options ({details}); only {', '.join(RESUMABLE_CHANGES)} may change")
    if state["world_size"] != current.size:
        raise ValueError(f"{path} was written by {state['world_size']} process(es); resume it with the same number, not {current.size}")
    if state["progress"]["step"] > options.steps:
        raise ValueError(f"{path} is at step {state['progress']['step']}, beyond steps={options.steps}")
    return state


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _describe(row: Dict[str, object]) -> str:
    parts = [f"step {row['step']}"]
    parts += [f"{key} {value:.4g}" for key, value in row.items()
              if key not in ("step", "epoch", "time_s", "lr") and isinstance(value, float)]
    return ", ".join(parts)


def _write_metrics(out: Path, history: List[Dict[str, object]], options: Options, config) -> None:
    columns = list(dict.fromkeys(key for row in history for key in row))
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    checkpoint.write_text(table.getvalue(), out / "metrics.csv")
    document = {"options": dataclasses.asdict(options), "config": config, "history": history}
    checkpoint.write_text(json.dumps(document, indent=1), out / "metrics.json")
