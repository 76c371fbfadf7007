r"""The image datasets of the book's experiments, reproducible subsets, and deterministic batches.

Every dataset has a ``"train"`` and a ``"test"`` split of 8-bit images with labels 0..9:

=================  ===================  ==========================================================
name               train / test         where the files come from
=================  ===================  ==========================================================
``digits``         1500 / 297, 1x8x8    scikit-learn's bundled UCI digits (offline), 0..16 scaled to
                                        0..255; the first 1500 train, the last 297 test
``fashion-mnist``  60000 / 10000,       IDX files in ``ROOT/fashion-mnist``, ``ROOT/FashionMNIST/raw``
                   1x28x28              or ``/usr/share/datasets/fashion-mnist`` (Debian package
                                        ``dataset-fashion-mnist``), or downloaded
``mnist``          60000 / 10000,       IDX files in ``ROOT/mnist`` or ``ROOT/MNIST/raw``, or downloaded
                   1x28x28
``cifar10``        50000 / 10000,       python batches in ``ROOT/cifar-10-batches-py``, extracted
                   3x32x32              from ``ROOT/cifar-10-python.tar.gz``, or downloaded
=================  ===================  ==========================================================

``ROOT`` is the ``root`` argument, else the environment variable ``GFLOWS_DATA``, else
``~/.cache/gflows``. ``download=True`` fetches the official files (checksummed) into ``ROOT``;
without it a missing dataset raises :class:`DatasetNotFound`, which says what to install or where to
put which files. The parsers live in :mod:`gflows.data.formats`.

Training batches (:func:`epoch_batches`) are a pure function of ``(seed, epoch, rank, world_size)``:
shuffle, shard over ranks, dequantise, then optionally move each image by a random exact group
element (:mod:`gflows.data.transforms`) and rotate it. Each global batch draws its randomness from
its own generator, so a run with ``world_size`` ranks sees exactly the global batches of one
process with ``batch_size * world_size``, and a resumed run recomputes batch ``start`` directly.

>>> train = load("digits")
>>> train
ImageSet('digits', split='train', 1500 images of shape (1, 8, 8))
>>> torch.bincount(subset(train, size=100, seed=0).labels).tolist()
[10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
>>> x = next(epoch_batches(train, 32, seed=0, epoch=0, group="D4"))
>>> x.shape, x.dtype, bool(x.min() >= 0 and x.max() < 1)
(torch.Size([32, 1, 8, 8]), torch.float32, True)
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from ..flows import dequantize
from . import formats
from .formats import CorruptDataset, DownloadFailed
from .transforms import (
    GroupLike,
    as_group,
    draw_angles,
    draw_exact_elements,
    exact_action,
    random_exact_action,
    random_rotation,
    rotate,
)

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")
SPLITS = ("train", "test")
CLASSES: Dict[str, Tuple[str, ...]] = {
    "digits": tuple("0123456789"),
    "mnist": tuple("0123456789"),
    "fashion-mnist": ("T-shirt/top", "trouser", "pullover", "dress", "coat",
                      "sandal", "shirt", "sneaker", "bag", "ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
#: The chapters train on the first 1500 of scikit-learn's 1797 digits and test on the last 297.
DIGITS_TRAIN = 1500
#: Where Debian's ``dataset-fashion-mnist`` installs the four gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: Images per block of fixed evaluation noise (:func:`eval_batches`).
EVAL_NOISE_BLOCK = 1024

__all__ = [
    "CLASSES", "DATASETS", "SPLITS", "CorruptDataset", "DatasetNotFound", "DownloadFailed", "ImageSet",
    "batches_per_epoch", "default_root", "epoch_batches", "eval_batches", "exact_action", "load",
    "random_exact_action", "random_rotation", "rotate", "subset",
]


class DatasetNotFound(FileNotFoundError):
    """A dataset whose files are not on this machine; the message says how to get them."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A split of an image dataset as 8-bit pixels.

    Attributes:
        pixels: ``(N, C, H, W)`` uint8 tensor, values 0..255.
        labels: ``(N,)`` int64 tensor of class indices (names in ``CLASSES[name]``).
        name: the dataset, one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.pixels) or self.pixels.dtype != torch.uint8 or self.pixels.dim() != 4:
            found = f"{self.pixels.dtype} {tuple(self.pixels.shape)}" if torch.is_tensor(self.pixels) else type(self.pixels).__name__
            raise ValueError(f"pixels must be a uint8 tensor (N, C, H, W), got {found}")
        if not torch.is_tensor(self.labels) or self.labels.dtype != torch.int64 or self.labels.shape != self.pixels.shape[:1]:
            found = f"{self.labels.dtype} {tuple(self.labels.shape)}" if torch.is_tensor(self.labels) else type(self.labels).__name__
            raise ValueError(f"labels must be an int64 tensor ({len(self.pixels)},), got {found}")

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.pixels.shape[1:])

    def __len__(self) -> int:
        return len(self.pixels)

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, split={self.split!r}, {len(self)} images of shape {self.shape})"


def default_root() -> Path:
    """The folder datasets are looked for and downloaded to: ``$GFLOWS_DATA``, else ``~/.cache/gflows``."""
    return Path(os.environ.get("GFLOWS_DATA") or Path.home() / ".cache" / "gflows").expanduser()


def load(name: str, split: str = "train", root: Union[str, Path, None] = None, download: bool = False) -> ImageSet:
    """One split of a dataset (see the module docstring for where each comes from).

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        root: the data folder; default :func:`default_root` (digits need none).
        download: fetch missing files from the official sources (needs internet; MD5-checked).
    Raises:
        ValueError: unknown name or split.
        DatasetNotFound: the files are missing and ``download`` is False.
        CorruptDataset: a file exists but is not in its format (bad magic number, wrong sizes, ...).
        DownloadFailed: ``download=True`` but no mirror delivered the file with the right checksum.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name == "digits":
        pixels, labels = _digits(split)
    else:
        root = Path(root).expanduser() if root is not None else default_root()
        reader = _cifar10 if name == "cifar10" else _idx
        pixels, labels = reader(name, split, root, download)
    return ImageSet(torch.from_numpy(pixels), torch.from_numpy(labels), name, split)


# --------------------------------------------------------------------------------------- sources
def _digits(split: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("the 'digits' dataset is scikit-learn's bundled copy: pip install scikit-learn") from error
    digits = load_digits()
    pixels = np.rint(digits.images * 255 / 16).astype(np.uint8)[:, None]
    part = slice(None, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
    return pixels[part], digits.target[part].astype(np.int64)


@dataclass(frozen=True)
class _IdxSource:
    title: str
    folders: Tuple[str, ...]      # under the root; downloads go to the first
    mirrors: Tuple[str, ...]
    md5: Dict[str, str]           # official gzipped file -> its MD5


_IDX_SOURCES = {
    "mnist": _IdxSource(
        "MNIST", ("mnist", "MNIST/raw"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    ),
    "fashion-mnist": _IdxSource(
        "Fashion-MNIST", ("fashion-mnist", "FashionMNIST/raw"),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    ),
}


def _idx(name: str, split: str, root: Path, download: bool) -> Tuple[np.ndarray, np.ndarray]:
    source = _IDX_SOURCES[name]
    prefix = "train" if split == "train" else "t10k"
    wanted = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folders = [root / folder for folder in source.folders]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    if download and not any(_idx_files(folder, wanted) for folder in folders):
        for file, md5 in source.md5.items():
            if not (folders[0] / file).exists():
                formats.download([mirror + file for mirror in source.mirrors], folders[0] / file, md5)
    for folder in folders:
        paths = _idx_files(folder, wanted)
        if paths:
            pixels, labels = formats.read_idx_pair(*paths)
            return pixels[:, None], labels
    apt = ("apt-get install dataset-fashion-mnist   (Debian/Ubuntu: installs the files in "
           f"{DEBIAN_FASHION_MNIST})" if name == "fashion-mnist" else None)
    raise DatasetNotFound(_how_to_get(
        f"{source.title} ({split} split) not found: no folder holds {wanted[0]}[.gz] and {wanted[1]}[.gz]",
        folders, apt,
        f"put the IDX files (gzipped or not; from {source.mirrors[0]}) in {folders[0]}", name,
    ))


def _idx_files(folder: Path, names: Tuple[str, ...]) -> Optional[List[Path]]:
    """The files ``names`` in ``folder``, each plain or gzipped (plain preferred); None if one is missing."""
    found = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None) for n in names]
    return None if None in found else found


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"


def _cifar10(name: str, split: str, root: Path, download: bool) -> Tuple[np.ndarray, np.ndarray]:
    folder, archive = root / CIFAR_FOLDER, root / CIFAR_ARCHIVE
    batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if not all((folder / batch).is_file() for batch in batches):
        if download and not archive.exists():
            formats.download([CIFAR_URL], archive, CIFAR_MD5)
        if archive.exists():
            formats.extract_folder(archive, CIFAR_FOLDER, root)
    missing = [batch for batch in batches if not (folder / batch).is_file()]
    if missing:
        raise DatasetNotFound(_how_to_get(
            f"CIFAR-10 ({split} split) not found: {folder} lacks {', '.join(missing)}, and "
            + (f"{archive} does not hold them" if archive.exists() else f"there is no {archive} to extract"),
            [folder, archive], None,
            f"put {CIFAR_ARCHIVE} (the python version, from {CIFAR_URL}), extracted or not, in {root}", name,
        ))
    read = [formats.read_cifar_batch(folder / batch) for batch in batches]
    return np.concatenate([pixels for pixels, _ in read]), np.concatenate([labels for _, labels in read])


def _how_to_get(problem: str, looked_in: List[Path], apt: Optional[str], put_files: str, name: str) -> str:
    ways = ([apt] if apt else []) + [
        f"{put_files} (set GFLOWS_DATA or pass root= for another folder)",
        f"images.load({name!r}, download=True) on a machine with internet",
    ]
    return (f"{problem}.\nLooked in:\n" + "".join(f"  {path}\n" for path in looked_in)
            + "Get it with one of:\n" + "".join(f"  - {way}\n" for way in ways))


# --------------------------------------------------------------------------------------- subsets
def subset(ds: ImageSet, size: Optional[int] = None, fraction: Optional[float] = None, seed: int = 0) -> ImageSet:
    """A fixed random subset of ``ds`` for data-efficiency runs; give exactly one of ``size``, ``fraction``.

    The images are taken in one order fixed by ``seed``, a random shuffle interleaved class by class,
    so that, for one seed:

    * subsets are **nested**: a smaller subset is contained in every larger one;
    * every subset is **class-balanced**: class counts differ by at most one, except for classes
      that are used up (all their images taken);
    * the images keep their order in ``ds``.

    Args:
        size: number of images, 1..len(ds).
        fraction: share of ``ds`` in (0, 1]; ``round(fraction * len(ds))`` images.
    """
    if (size is None) == (fraction is None):
        raise ValueError("give exactly one of size= and fraction=")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        size = round(fraction * len(ds))
        if size < 1:
            raise ValueError(f"fraction {fraction} of {len(ds)} images is less than one image")
    size = operator.index(size)
    if not 1 <= size <= len(ds):
        raise ValueError(f"size must be in 1..{len(ds)} (the images of {ds.name} {ds.split}), got {size}")
    chosen = _balanced_order(ds.labels, seed)[:size].sort().values
    return ImageSet(ds.pixels[chosen], ds.labels[chosen], ds.name, ds.split)


def _balanced_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """All indices, ordered by (position within its class in a random shuffle, position in that shuffle)."""
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    by_class = torch.sort(labels[shuffled], stable=True)
    sorted_labels = by_class.values
    class_start = torch.searchsorted(sorted_labels, sorted_labels)       # first position of each label
    rank_in_class = torch.empty_like(shuffled)
    rank_in_class[by_class.indices] = torch.arange(len(labels)) - class_start
    return shuffled[torch.sort(rank_in_class, stable=True).indices]


# --------------------------------------------------------------------------------------- batches
_SHUFFLE, _BATCH, _EVAL = 0, 1, 2


def _generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator for the stream ``key`` of ``seed`` (numpy's SeedSequence: independent streams)."""
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _shard(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items split over ``world_size`` ranks (sizes differ by at most 1)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def _check_batching(ds: ImageSet, batch_size: int, rank: int, world_size: int, **seeds: int) -> None:
    if not isinstance(ds, ImageSet):
        raise ValueError(f"expected an ImageSet (from images.load), got {type(ds).__name__}")
    if operator.index(batch_size) < 1 or operator.index(world_size) < 1:
        raise ValueError(f"batch_size and world_size must be positive, got {batch_size} and {world_size}")
    if not 0 <= operator.index(rank) < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    for what, value in seeds.items():
        if operator.index(value) < 0:
            raise ValueError(f"{what} must be a non-negative integer, got {value}")


def batches_per_epoch(ds: ImageSet, batch_size: int, world_size: int = 1, drop_last: bool = True) -> int:
    """How many batches :func:`epoch_batches` yields to each rank (global batch ``batch_size * world_size``)."""
    whole, rest = divmod(len(ds), batch_size * world_size)
    return whole + (rest > 0 and not drop_last)


def epoch_batches(
    ds: ImageSet,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    group: Optional[GroupLike] = None,
    rotation: Optional[float] = None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    device: Union[str, torch.device, None] = None,
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """The training batches of one epoch for one rank, as float32 ``(B, C, H, W)`` in ``[0, 1)``.

    Global batch ``j`` holds the images ``j*S .. (j+1)*S - 1`` of a shuffle fixed by
    ``(seed, epoch)``, with ``S = batch_size * world_size``; rank ``r`` gets the ``r``-th of
    ``world_size`` contiguous parts (``batch_size`` images each when the batch is full). The batch
    is dequantised (:func:`gflows.flows.dequantize`), so ``floor(256 x)`` gives back the pixels; then,
    if ``group`` is given, each image is moved by a uniformly random exact element of it (the data
    distribution becomes invariant under the exact elements, see :mod:`gflows.data.transforms`);
    then, if ``rotation`` is given, rotated by a uniform angle in ``[-rotation, rotation]`` degrees
    (interpolated: approximate). The noise, elements and angles of global batch ``j`` come from a
    generator of ``(seed, epoch, j)`` alone, drawn on the CPU: the batches do not depend on the
    device, and concatenating the ranks' batches gives the batches of a single process with
    ``batch_size * world_size``.

    Args:
        seed, epoch: non-negative integers; the batches are a pure function of them and of the ranks.
        drop_last: drop a last incomplete global batch (with it, a last batch may be uneven over
            ranks, even empty for some).
        device: where the batches go (the random draws stay on the CPU).
        start: the first batch to yield; a run resumed after ``k`` batches passes ``start=k`` and
            gets exactly the batches it would have seen next.
    Raises:
        ValueError: bad sizes or ranks, a group that cannot act on these images, rotation of
            non-square images, or ``drop_last`` with fewer images than one global batch.
    """
    _check_batching(ds, batch_size, rank, world_size, seed=seed, epoch=epoch, start=start)
    G = None if group is None else as_group(group)
    if G is not None:
        G.check_image_shape(ds.shape)
    if rotation is not None and not (rotation > 0 and ds.shape[1] == ds.shape[2]):
        raise ValueError(f"rotation needs a positive largest angle and square images, got {rotation} "
                         f"and images of shape {ds.shape}")
    count = batches_per_epoch(ds, batch_size, world_size, drop_last)
    if count == 0:
        raise ValueError(f"{len(ds)} images make no full global batch of {batch_size} x {world_size}: "
                         "lower the batch size or pass drop_last=False")
    if start > count:
        raise ValueError(f"start={start} is past the {count} batches of an epoch")
    return _epoch(ds, batch_size * world_size, seed, epoch, G, rotation, rank, world_size, device, range(start, count))


def _epoch(ds, global_size, seed, epoch, G, rotation, rank, world_size, device, numbers) -> Iterator[torch.Tensor]:
    order = torch.randperm(len(ds), generator=_generator(seed, _SHUFFLE, epoch, 0))
    for j in numbers:
        indices = order[j * global_size:(j + 1) * global_size]
        generator = _generator(seed, _BATCH, epoch, j)
        x = dequantize(ds.pixels[indices], generator)
        which = None if G is None else draw_exact_elements(len(indices), G, generator)
        angles = None if rotation is None else draw_angles(len(indices), generator, rotation)
        mine = _shard(len(indices), rank, world_size)
        x = x[mine].to(device) if device is not None else x[mine]
        if which is not None:
            x = exact_action(x, G, which[mine])
        if angles is not None:
            x = rotate(x, angles[mine])
        yield x


def eval_batches(
    ds: ImageSet,
    batch_size: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: Union[str, torch.device, None] = None,
) -> Iterator[torch.Tensor]:
    """The whole of ``ds`` in its order, dequantised with fixed noise, as float32 batches in ``[0, 1)``.

    The noise of image ``i`` depends on ``(seed, i)`` only (it is drawn in blocks of
    :data:`EVAL_NOISE_BLOCK` images), so every batch size, world size and device evaluates the same
    dequantised test set. Global batches of ``batch_size * world_size`` are split over the ranks as
    in :func:`epoch_batches`; every image is in exactly one rank's batch, and the last batch may be
    smaller, uneven over the ranks, or empty for some.
    """
    _check_batching(ds, batch_size, rank, world_size, seed=seed)
    return _evaluation(ds, batch_size * world_size, seed, rank, world_size, device)


def _evaluation(ds, global_size, seed, rank, world_size, device) -> Iterator[torch.Tensor]:
    blocks: Dict[int, torch.Tensor] = {}              # dequantised noise blocks, kept while batches need them
    for first in range(0, len(ds), global_size):
        mine = _shard(min(global_size, len(ds) - first), rank, world_size)
        x = _fixed_dequantized(ds, first + mine.start, first + mine.stop, seed, blocks)
        yield x.to(device) if device is not None else x


def _fixed_dequantized(ds: ImageSet, start: int, stop: int, seed: int, blocks: Dict[int, torch.Tensor]) -> torch.Tensor:
    """Images ``start:stop`` of ``ds`` dequantised with the noise of their blocks of ``EVAL_NOISE_BLOCK``.

    ``blocks`` caches dequantised blocks between calls; the blocks this call does not need are dropped.
    """
    needed = range(start // EVAL_NOISE_BLOCK, -(-stop // EVAL_NOISE_BLOCK))
    for block in [block for block in blocks if block not in needed]:
        del blocks[block]
    pieces = [torch.empty(0, *ds.shape)]
    for block in needed:
        low = block * EVAL_NOISE_BLOCK
        if block not in blocks:
            blocks[block] = dequantize(ds.pixels[low:low + EVAL_NOISE_BLOCK], _generator(seed, _EVAL, block, 0))
        pieces.append(blocks[block][max(start - low, 0):stop - low])
    return torch.cat(pieces)
