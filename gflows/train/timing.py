"""The one clock of gflows: seconds per training step, for the study, the chapters and the benchmarks.

>>> import torch
>>> from gflows import models
>>> model = models.build("coupling", group="C4", data_shape=(1, 8, 8), depth=2, width=4)
>>> wall, cpu = seconds_per_step(model, torch.rand(4, 1, 8, 8), steps=2)
>>> wall > 0 and cpu > 0
True
"""

from __future__ import annotations

import time
from typing import Callable, Tuple

import torch

from .. import runtime
from ..flows import FlowModel
from .loop import adamw
from .metrics import sample_loss


def trainer_loss(model: FlowModel, batch: torch.Tensor) -> torch.Tensor:
    """The trainer's objective: mean bits/dim for images, NLL for points (:func:`~gflows.train.metrics.sample_loss`)."""
    return sample_loss(model, batch).mean()


def training_step(model: torch.nn.Module, batch: torch.Tensor, lr: float = 1e-3,
                  loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = trainer_loss) -> Callable[[], None]:
    """A function doing one training step on ``batch``: ``loss(model, batch)`` (default the trainer's),
    backward, AdamW (:func:`~gflows.train.loop.adamw`, as the trainer)."""
    optimiser = adamw(model.parameters(), lr=lr)

    def step() -> None:
        value = loss(model, batch)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()

    return step


def timed(function: Callable[[], object], calls: int, device: torch.device) -> Tuple[float, float]:
    """``(wall, CPU of this process)`` seconds per call of ``function`` over ``calls`` calls; on CUDA
    the device is synchronised before each clock is read, so queued kernels are counted."""
    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    synchronise()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        function()
    synchronise()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def seconds_per_step(model: FlowModel, batch: torch.Tensor, steps: int = 20, lr: float = 1e-3) -> Tuple[float, float]:
    """Seconds per :func:`training_step` of ``model`` on ``batch``, ``(wall, CPU)``, averaged over
    ``steps`` steps after the data-dependent initialisation and one warm-up step, on the device of
    ``model`` (:func:`timed`), with freed CPU memory kept for reuse as in the trainer
    (:func:`gflows.runtime.keep_freed_cpu_memory`). The model is trained by it."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        runtime.keep_freed_cpu_memory()
    batch = batch.to(device)
    model.train()
    with torch.no_grad():
        model(batch)                                                       # data-dependent initialisation
    step = training_step(model, batch, lr)
    step()
    return timed(step, steps, device)
