"""Where batches come from: the trainer sees only a :class:`Source`.

A source yields, for an epoch, this process's shard of every global batch, and fixed evaluation
batches. Both are deterministic functions of the run's data seed, the epoch and the
``(rank, world size)`` split, so that a resumed run can regenerate an epoch from the batch it had
reached, and so that N processes with batch b see exactly the global batches of one process with
batch N b.

* :class:`TensorSource`: a float tensor ``(N, *data_shape)`` (points of the plane ``(N, 2)``, or
  images already in [0, 1]); reshuffled every epoch, optionally augmented by a random group element
  per sample.
* :class:`ImageSource`: an :class:`~gflows.data.images.ImageSet` of 8-bit images, dequantised afresh
  every epoch by :mod:`gflows.data.images`.

:func:`as_source` picks the right one; any object with the methods of :class:`Source` works too.
"""

from __future__ import annotations

from typing import Iterator, Optional, Protocol, Tuple

import torch

from ..data import images as image_data
from ..data.images import ImageSet
from ..data.transforms import exact_action
from ..groups import Group, get
from .rng import derive_seed


class Source(Protocol):
    """What the trainer needs from a data set."""

    data_shape: Tuple[int, ...]

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, batch_size: int, *, rank: int = 0, world_size: int = 1, start: int = 0) -> Iterator[torch.Tensor]:
        """This process's shard ``(batch_size, *data_shape)`` of each global batch of ``batch_size *
        world_size`` samples (incomplete global batches dropped), from global batch ``start`` on."""

    def evaluation(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The whole set in fixed batches (the last one may be smaller)."""


def batches_per_epoch(source: Source, global_batch: int) -> int:
    """Number of complete global batches in one epoch."""
    return len(source) // global_batch


class TensorSource:
    """Batches of a float tensor ``(N, *data_shape)``, shuffled by ``(seed, epoch)``.

    Args:
        data: float tensor, points ``(N, 2)`` or images ``(N, C, H, W)``.
        seed: the data seed; epoch e is ordered by ``randperm`` seeded with ``derive_seed(seed, "epoch", e)``.
        augment: a group (or its name): each sample of an epoch is moved by an element drawn
            uniformly (exact elements only for images) from the same generator.
    """

    def __init__(self, data: torch.Tensor, seed: int = 0, augment: "Optional[str | Group]" = None) -> None:
        if not torch.is_tensor(data) or not data.is_floating_point() or data.dim() < 2:
            raise ValueError("a TensorSource needs a float tensor (N, *data_shape), e.g. points (N, 2)")
        self.data, self.seed = data, seed
        self.data_shape = tuple(data.shape[1:])
        self.augment = get(augment) if isinstance(augment, str) else augment
        if self.augment is not None:
            self._elements = self.augment.exact_elements() if data.dim() == 4 else self.augment.elements()

    def __len__(self) -> int:
        return self.data.shape[0]

    def _act(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # a pixel permutation per image, the whole batch in one gather
            return exact_action(x, self.augment, element_index)
        moved = x.clone()
        for k, g in enumerate(self._elements):
            chosen = element_index == k
            if chosen.any():
                moved[chosen] = self.augment.act_points(x[chosen], g)
        return moved

    def epoch(self, epoch: int, batch_size: int, *, rank: int = 0, world_size: int = 1, start: int = 0) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
        order = torch.randperm(len(self), generator=generator)
        if self.augment is not None:
            element_index = torch.randint(len(self._elements), (len(self),), generator=generator)
        global_batch = batch_size * world_size
        for first in range(start * global_batch, len(self) - global_batch + 1, global_batch):
            shard = slice(first + rank * batch_size, first + (rank + 1) * batch_size)
            x = self.data[order[shard]]
            yield x if self.augment is None else self._act(x, element_index[shard])

    def evaluation(self, batch_size: int) -> Iterator[torch.Tensor]:
        return iter(self.data.split(batch_size))


class ImageSource:
    """Batches of an :class:`~gflows.data.images.ImageSet` (uint8 pixels), dequantised by
    :func:`gflows.data.images.epoch_batches` (fresh noise every epoch; ``augment``: each image moved
    by a random exact element of that group; ``rotation``: then rotated by a random angle in
    ``[-rotation, rotation]`` degrees, interpolated) and :func:`~gflows.data.images.eval_batches`
    (fixed noise, evaluation)."""

    def __init__(self, images: ImageSet, seed: int = 0, augment: "Optional[str | Group]" = None,
                 rotation: Optional[float] = None) -> None:
        self.images, self.seed, self.augment, self.rotation = images, seed, augment, rotation
        self.data_shape = images.shape

    def __len__(self) -> int:
        return len(self.images)

    def epoch(self, epoch: int, batch_size: int, *, rank: int = 0, world_size: int = 1, start: int = 0) -> Iterator[torch.Tensor]:
        return image_data.epoch_batches(self.images, batch_size, seed=self.seed, epoch=epoch, group=self.augment,
                                        rotation=self.rotation, rank=rank, world_size=world_size, start=start)

    def evaluation(self, batch_size: int) -> Iterator[torch.Tensor]:
        return image_data.eval_batches(self.images, batch_size, seed=self.seed)


def as_source(data, seed: int = 0, augment: Optional[str] = None, rotation: Optional[float] = None) -> Source:
    """A :class:`Source` for ``data``: a float tensor, an ``ImageSet``, or a source already (which
    brings its own augmentation, so ``augment`` and ``rotation`` must be ``None``)."""
    if torch.is_tensor(data):
        if rotation is not None:
            raise ValueError("random rotations (rotation=) need an ImageSet of 8-bit images, not a tensor")
        return TensorSource(data, seed, augment)
    if isinstance(data, ImageSet):
        return ImageSource(data, seed, augment, rotation)
    if all(hasattr(data, name) for name in ("epoch", "evaluation", "data_shape", "__len__")):
        if augment is not None or rotation is not None:
            raise ValueError("a Source brings its own batches: augment it there, not with augment= / rotation=")
        return data
    raise TypeError(
        f"cannot train on a {type(data).__name__}: pass a float tensor (N, *data_shape), "
        "an ImageSet from gflows.data.images, or an object with the methods of gflows.train.sources.Source"
    )
