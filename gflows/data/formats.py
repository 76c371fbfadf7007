r"""The on-disk formats of the image datasets, read with numpy, and checksummed downloads.

* **IDX** (MNIST, Fashion-MNIST), gzipped or not: a big-endian int32 magic number whose third byte
  is the value type (``0x08``: uint8) and whose fourth byte is the number of dimensions, so
  ``0x00000803 = 2051`` for images ``(N, H, W)`` and ``0x00000801 = 2049`` for labels ``(N,)``;
  then one big-endian int32 size per dimension; then the values, last index fastest.
* **CIFAR-10 python batches**: pickled dicts with ``data``, a uint8 array ``(N, 3072)`` holding the
  red, green and blue 32x32 planes of each image row by row, and ``labels``, N ints in 0..9. They
  are read with an unpickler that builds numpy arrays and plain Python values only, so a file
  that asks for anything else (a pickle can run arbitrary code) is refused.

A file that exists but does not hold what its format promises raises :class:`CorruptDataset`
with the path and what is wrong. Downloads (:func:`download`) stream to a temporary file beside
the destination, check the MD5 of the official file, and only then rename it into place.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from .._files import atomic_write

IDX_IMAGES = 2051
IDX_LABELS = 2049
CIFAR_SIDE = 32
NUM_CLASSES = 10
_GZIP_MAGIC = b"\x1f\x8b"


class CorruptDataset(ValueError):
    """A dataset file that exists but does not hold what its format promises."""


class DownloadFailed(OSError):
    """No mirror delivered a file with the expected checksum."""


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array stored in the IDX file ``path`` (gzipped or not).

    Args:
        magic: :data:`IDX_IMAGES` (returns ``(N, H, W)``) or :data:`IDX_LABELS` (returns ``(N,)``).
    Raises:
        CorruptDataset: not gzip-readable, another magic number, or a size that does not match the header.
    """
    raw = _read_maybe_gzipped(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataset(f"{path}: {len(raw)} bytes, too short for an IDX header of {header} bytes")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "images" if magic == IDX_IMAGES else "labels"
        raise CorruptDataset(f"{path}: magic number {found}, expected {magic} (IDX uint8 {kind}): not an IDX {kind} file")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise CorruptDataset(
            f"{path}: the header announces sizes {shape}, i.e. {size} bytes of values, "
            f"but the file holds {len(raw) - header} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_idx_pair(images_path: Path, labels_path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` int64 from two IDX files that must agree."""
    images, labels = read_idx(images_path, IDX_IMAGES), read_idx(labels_path, IDX_LABELS)
    if len(images) != len(labels):
        raise CorruptDataset(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    return images, _checked_labels(labels, labels_path)


def read_cifar_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from one CIFAR-10 python batch."""
    try:
        with open(path, "rb") as file:
            batch = _ArraysOnlyUnpickler(file, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise CorruptDataset(f"{path}: not a CIFAR-10 python batch ({error})") from error
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise CorruptDataset(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from error
    if not isinstance(batch, dict):
        raise CorruptDataset(f"{path}: a CIFAR-10 batch is a pickled dict, found {type(batch).__name__}")
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise CorruptDataset(f"{path}: a CIFAR-10 batch has the keys 'data' and 'labels', found {sorted(batch)}")
    data, labels = batch["data"], np.asarray(batch["labels"])
    values = 3 * CIFAR_SIDE * CIFAR_SIDE
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != values:
        found = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CorruptDataset(f"{path}: 'data' must be a uint8 array (N, {values}), found {found}")
    if labels.shape != (len(data),):
        raise CorruptDataset(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), _checked_labels(labels, path)


def download(urls: Sequence[str], destination: Path, md5: str) -> None:
    """Fetch the file with MD5 ``md5`` from the first of ``urls`` that delivers it, to ``destination``.

    Each attempt streams to a temporary file in the destination's folder, which is renamed to
    ``destination`` only once its checksum is right (:func:`gflows._files.atomic_write`): an
    interrupted download never leaves a half-written file under the final name.

    Raises:
        DownloadFailed: every URL failed or delivered a file with another checksum (each reason listed).
    """
    failures = []
    for url in urls:
        try:
            atomic_write(destination, lambda file, url=url: _fetch_checked(url, file, md5))
            return
        except (OSError, _WrongChecksum) as error:
            failures.append(f"{url}: {error}")
    raise DownloadFailed(f"could not download {destination.name}:\n  " + "\n  ".join(failures))


def extract_folder(archive: Path, folder: str, into: Path) -> None:
    """Extract the members under ``folder/`` of the tar archive into ``into/folder``, file by file atomically."""
    staging = Path(tempfile.mkdtemp(dir=into, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).parts[:1] == (folder,)]
            tar.extractall(staging, members=members, filter="data")
        (into / folder).mkdir(exist_ok=True)
        for extracted in (staging / folder).iterdir():
            os.replace(extracted, into / folder / extracted.name)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise CorruptDataset(f"{archive}: not a readable tar.gz archive ({error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _WrongChecksum(Exception):
    """A download delivered a file with another MD5 than the official one."""


def _fetch_checked(url: str, file, md5: str) -> None:
    """Stream ``url`` into the open binary ``file``; raise :class:`_WrongChecksum` unless its MD5 is ``md5``."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                file.write(chunk)
                bar.update(len(chunk))
    if digest.hexdigest() != md5:
        raise _WrongChecksum(f"MD5 {digest.hexdigest()}, expected {md5}")


def _read_maybe_gzipped(path: Path) -> bytes:
    raw = Path(path).read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise CorruptDataset(f"{path}: a damaged gzip file ({error})") from error


def _checked_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise CorruptDataset(f"{path}: labels must be 0..{NUM_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, and refuses every other global."""

    _ALLOWED = {
        ("_codecs", "encode"),          # how Python 3 writes bytes at pickle protocol 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return super().find_class(module, name)
