r"""The training loop: :func:`fit` a density model to data, with evaluation, checkpoints and resume.

One step, on every process (see :mod:`.distributed`):

1. the process's shard of the next global batch (:mod:`.sources`);
2. loss = mean over the shard of bits/dim (images) or NLL in nats (points); DDP averages the
   gradients over the processes, so the step is that of the mean over the global batch;
3. clip the gradient's global 2-norm to ``grad_clip``; a non-finite loss or gradient norm raises
   :class:`NonFiniteLoss` with the step number (never skipped);
4. AdamW (:func:`adamw`) with the learning rate ``lr * min(1, (t + 1) / warmup_steps)`` at step
   t = 0, 1, ... (linear warm-up, then constant);
5. update the EMA of the weights (:mod:`.ema`).

Before the first step, one forward pass in training mode on the first global batch, identical on
every process and before DDP is set up, runs the data-dependent initialisation (ActNorm) and the
first power iterations of Lipschitz layers; the EMA copy is made after it.

Every ``eval_every`` steps (and at steps 0 and ``steps``) the **EMA weights** are evaluated on the
test set (:func:`.metrics.evaluate`) and a row is appended to the history. With ``out``, rank 0
writes the history to ``metrics.csv`` and ``metrics.json`` and, every ``checkpoint_every`` steps,
an atomic checkpoint ``checkpoint.pt`` (:mod:`.checkpoint`, the previous one kept beside it) with
the model, the EMA, the optimiser, the schedule, the position in the data, every process's
random-generator states, the options and the history. ``resume=True`` continues from the newest
checkpoint that loads and reproduces the uninterrupted run exactly (on a CPU; on a GPU up to the
non-determinism of some CUDA kernels); everything that could make it differ (other options, another
model or configuration, another number of processes) is refused with :class:`ResumeError` before
anything is written. While a run lives, its folder is locked against other processes
(:mod:`.runfolder`).

**Seeds.** Everything derives from ``options.seed`` (:func:`.rng.derive_seed`): the data order
(``"data"``), the initialisation pass (``"init"``), the training noise of process r (``"train", r``)
and the evaluation noise (``"eval"``). The model's initial weights are whatever ``model`` holds:
build it after ``torch.manual_seed(...)`` (the CLI uses ``derive_seed(seed, "model")``).
"""

from __future__ import annotations

import contextlib
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

from .. import runtime
from ..flows import FlowModel
from ..groups import get
from . import checkpoint, distributed, rng, runfolder
from .ema import EMA
from .metrics import evaluate, sample_loss
from .sources import as_source, batches_per_epoch

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
        group_metrics: ``False`` skips the group average and the invariance gap (:math:`|G|` times cheaper).
        augment: a group name: each training sample is moved by a random element of it (exact
            elements for images), a fresh one every epoch (data augmentation).
        rotation: images only: then rotated by a random angle in ``[-rotation, rotation]`` degrees
            (interpolated, so only approximately an action on pixels).
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
    rotation: Optional[float] = None
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


def adamw(parameters, **options) -> torch.optim.AdamW:
    """``torch.optim.AdamW(parameters, **options)``, fused into one kernel over all tensors where every
    parameter is on a CPU or a CUDA device (a coupling model's 22 tensors: 0.12 ms per step on one CPU
    thread, against 0.62 ms for the default per-tensor loop; the same update up to round-off)."""
    parameters = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.AdamW(parameters, fused=fused, **options)


class NonFiniteLoss(FloatingPointError):
    """The loss or the gradient norm of a step is NaN or infinite; the step was not applied."""

    def __init__(self, step: int, loss: float, grad_norm: float, checkpoint_path: Optional[Path]) -> None:
        where = f"; the last good checkpoint is {checkpoint_path}" if checkpoint_path and checkpoint_path.exists() else ""
        super().__init__(
            f"non-finite training loss at step {step} (loss {loss}, gradient norm {grad_norm}){where}. "
            "Lower the learning rate, raise warmup_steps or clip gradients harder."
        )
        self.step, self.loss, self.grad_norm = step, loss, grad_norm


class ResumeError(ValueError):
    """A run that cannot be resumed as asked; the message says why and what to do. Nothing was written."""


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
    callback: Optional[Callable[[int, List[Dict[str, object]]], Optional[bool]]] = None,
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
        callback: ``callback(step, history)`` after every step (after any evaluation and checkpoint);
            returning ``True`` ends the run there (early stopping).
        config: a plain dict saved with the checkpoint and the metrics (the CLI stores its config).
    Returns:
        a :class:`Result`.
    Raises:
        NonFiniteLoss: at the first step whose loss or gradient norm is not finite.
        ResumeError: ``resume=True`` and the run in ``out`` cannot continue with these arguments.
        RunFolderBusy: another process is running in ``out``.
    """
    run = _Run(model, train_data, test_data, options or Options(), out, config)
    owns_folder = run.out is not None and run.world.is_main
    with runfolder.hold(run.out) if owns_folder else contextlib.nullcontext():
        if resume:
            run.resume()
        else:
            run.start()
        run.train(callback)
    return Result(model, run.ema.model.eval(), run.progress.history, run.options, run.out)


class _Run:
    """One call of :func:`fit`: the model, its optimiser and EMA, the data, and where the run is."""

    def __init__(self, model: FlowModel, train_data, test_data, options: Options, out, config) -> None:
        self.model, self.options, self.config = model, options, config
        self.world = distributed.world()
        self.device = torch.device(options.device) if options.device else distributed.default_device(self.world)
        self.out = Path(out) if out is not None else None
        self.checkpoint_path = self.out / CHECKPOINT if self.out is not None else None
        self.train_source = as_source(train_data, rng.derive_seed(options.seed, "data"), options.augment, options.rotation)
        self.test_source = as_source(test_data, rng.derive_seed(options.seed, "test")) if test_data is not None else None
        for name, source in (("training", self.train_source), ("test", self.test_source)):
            if source is not None and tuple(source.data_shape) != model.data_shape:
                raise ValueError(f"the {name} data has samples of shape {tuple(source.data_shape)}, the model {model.data_shape}")
        if options.batch_size % self.world.size:
            raise ValueError(f"batch_size {options.batch_size} is not divisible by the number of processes {self.world.size}")
        self.batches_per_epoch = batches_per_epoch(self.train_source, options.batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"batch_size {options.batch_size} is larger than the training set ({len(self.train_source)} samples)")
        self.eval_group = get(options.eval_group) if options.eval_group else model.group
        if self.device.type == "cpu":
            runtime.keep_freed_cpu_memory()
        model.to(self.device).train()
        self.dtype = next(model.parameters()).dtype
        # listed once: model.parameters() walks the module tree, and hashing escnn's modules on the way
        # costs milliseconds per call, as much as a training step of a small model
        self.parameters = list(model.parameters())
        self.optimiser = adamw(self.parameters, lr=options.lr, betas=options.betas, weight_decay=options.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimiser, lambda step: warmup_factor(step, options.warmup_steps))
        self.started = time.perf_counter()

    # ------------------------------------------------------------------------- the two starts
    def start(self) -> None:
        """A fresh run: the same weights everywhere, the initialisation pass, then the EMA copy."""
        if self.checkpoint_path is not None and checkpoint.exists(self.checkpoint_path):
            raise FileExistsError(f"{self.checkpoint_path} exists: resume the run (resume=True, --resume) or choose another folder")
        distributed.broadcast_state(self.model, self.world)
        rng.seed_everything(rng.derive_seed(self.options.seed, "init"))
        with torch.no_grad():
            self.model(self._batch(next(iter(self.train_source.epoch(0, self.options.batch_size)))))
        self.ema = EMA(self.model, self.options.ema_decay)
        rng.seed_everything(rng.derive_seed(self.options.seed, "train", self.world.rank))
        self.progress = _Progress()

    def resume(self) -> None:
        """Everything from the checkpoint, this process's random generators included."""
        state = _load(self.checkpoint_path, self.options, self.world, self.config)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            raise ResumeError(f"the checkpoint in {self.out} holds another model (other kind, group or sizes) "
                              "than the one given: build the run's own model to resume it") from None
        self.ema = EMA(self.model, self.options.ema_decay)
        self.ema.model.load_state_dict(state["ema"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.schedule.load_state_dict(state["schedule"])
        self.progress = _Progress(**state["progress"])
        rng.restore(state["rng"][self.world.rank])

    # ------------------------------------------------------------------------------- the loop
    def train(self, callback) -> None:
        options, progress = self.options, self.progress
        objective: nn.Module = _Objective(self.model)
        if self.world.distributed:  # the state already agrees (start / resume): DDP's broadcast would touch the
            objective = DistributedDataParallel(  # weights (Lipschitz layers re-iterate) and mix up escnn's buffers
                objective, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                init_sync=False, forward_sync_buffers=False)
        self.bar = tqdm(total=options.steps, initial=progress.step, disable=not (options.progress and self.world.is_main),
                        desc="training", unit="step")
        if progress.step == 0 and not progress.history:
            self.add_row(options.learning_rate(0))
        checkpoint_every = options.checkpoint_every or options.eval_every
        stopped = False
        while progress.step < options.steps and not stopped:
            shards = self.train_source.epoch(progress.epoch, options.batch_size // self.world.size, rank=self.world.rank,
                                             world_size=self.world.size, start=progress.position)
            for x in shards:
                lr = self.optimiser.param_groups[0]["lr"]
                self.step(objective, x)
                if progress.step % options.eval_every == 0 or progress.step == options.steps:
                    self.add_row(lr)
                if self.out is not None and (progress.step % checkpoint_every == 0 or progress.step == options.steps):
                    self.save()
                stopped = callback is not None and bool(callback(progress.step, progress.history))
                if progress.step >= options.steps or stopped:
                    break
            else:  # the epoch is used up
                progress.epoch += 1
                progress.position = 0
        self.bar.close()
        distributed.barrier(self.world)

    def step(self, objective: nn.Module, x: torch.Tensor) -> None:
        """One optimiser step on this process's shard ``x`` (module docstring)."""
        loss = objective(self._batch(x)).mean()
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.options.grad_clip or math.inf))
        mean_loss = float(distributed.all_sum(loss.detach().reshape(1), self.world)) / self.world.size
        progress = self.progress
        if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
            raise NonFiniteLoss(progress.step + 1, mean_loss, grad_norm, self.checkpoint_path)
        self.optimiser.step()
        self.schedule.step()
        self.ema.update(self.model, progress.step)
        progress.step += 1
        progress.position += 1
        progress.loss_sum += mean_loss
        progress.grad_norm_sum += grad_norm
        progress.count += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=self.dtype)

    # --------------------------------------------------------------------- metrics and files
    def evaluate(self) -> Dict[str, float]:
        """The test metrics of the EMA weights (none without test data)."""
        if self.test_source is None:
            return {}
        self.ema.model.eval()  # also refreshes the power iterations of Lipschitz layers on the averaged weights
        metrics = evaluate(self.ema.model, self.test_source.evaluation(self.options.eval_batch_size), self.eval_group,
                           seed=rng.derive_seed(self.options.seed, "eval"), group_metrics=self.options.group_metrics,
                           current=self.world)
        self.ema.model.train()
        return metrics

    def add_row(self, lr: float) -> None:
        """Evaluate, append a row to the history, write the metrics files."""
        progress = self.progress
        mean = (lambda total: total / progress.count) if progress.count else (lambda total: None)
        row = {"step": progress.step, "epoch": progress.step / self.batches_per_epoch, "time_s": self._elapsed(), "lr": lr,
               "train_loss": mean(progress.loss_sum), "grad_norm": mean(progress.grad_norm_sum)}
        row.update(self.evaluate())
        progress.history.append(row)
        progress.loss_sum = progress.grad_norm_sum = 0.0
        progress.count = 0
        if self.out is not None and self.world.is_main:
            _write_metrics(self.out, progress.history, self.options, self.config)
        if self.options.progress and self.world.is_main:
            self.bar.write(_describe(row))

    def save(self) -> None:
        """An atomic checkpoint (rank 0 writes; every process contributes its generator states)."""
        states = distributed.all_gather(rng.capture(), self.world)
        if self.world.is_main:
            progress = dataclasses.replace(self.progress, elapsed=self._elapsed())
            checkpoint.save({
                "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
                "optimiser": self.optimiser.state_dict(), "schedule": self.schedule.state_dict(),
                "progress": dataclasses.asdict(progress), "rng": states, "world_size": self.world.size,
                "options": dataclasses.asdict(self.options), "config": self.config,
            }, self.checkpoint_path)

    def _elapsed(self) -> float:
        """Seconds of this run so far, the time before a resume included."""
        return self.progress.elapsed + time.perf_counter() - self.started


def _load(path: Optional[Path], options: Options, current: distributed.World, config) -> Dict[str, object]:
    """The newest readable checkpoint at ``path``, once it is certain that the run can go on from it."""
    if path is None:
        raise ResumeError("resume=True needs the run's folder (out=...)")
    if not checkpoint.exists(path):
        raise ResumeError(f"cannot resume: no checkpoint in {path.parent}; start the run without --resume (resume=False)")
    try:
        state, _ = checkpoint.load_latest(path)
    except checkpoint.CheckpointUnreadable as error:
        raise ResumeError(str(error)) from None
    saved = state["options"]
    changed = {key: (saved.get(key), value) for key, value in dataclasses.asdict(options).items()
               if key not in RESUMABLE_CHANGES and _plain(saved.get(key)) != _plain(value)}
    if changed:
        details = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ResumeError(f"cannot resume {path} with different options ({details}); only {', '.join(RESUMABLE_CHANGES)} may change")
    differences = _config_differences(state.get("config"), config)
    if differences:
        raise ResumeError(f"cannot resume {path.parent} with another configuration ({', '.join(differences)}); "
                          "resume it with its own (--resume --out DIR, without --config), or choose another folder")
    if state["world_size"] != current.size:
        raise ResumeError(f"{path} was written by {state['world_size']} process(es); resume it with the same number "
                          f"(torchrun --nproc_per_node {state['world_size']}), not {current.size}")
    if state["progress"]["step"] > options.steps:
        raise ResumeError(f"{path} is at step {state['progress']['step']}, beyond steps={options.steps}")
    return state


def _config_differences(saved, given) -> List[str]:
    """``section.key: old -> new`` for every setting of the ``data`` and ``model`` sections that differs
    (the ``train`` section is compared as options; the name, ``expected`` and where the data files are
    found, ``data.root`` and ``data.download``, may differ)."""
    if saved is None or given is None:
        return []
    found = []
    for section in ("data", "model"):
        old, new = saved.get(section) or {}, given.get(section) or {}
        found += [f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted({*old, *new})
                  if key not in ("root", "download") and _plain(old.get(key)) != _plain(new.get(key))]
    return found


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
