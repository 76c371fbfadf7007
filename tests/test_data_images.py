"""gflows.data.images: loaders on files in the real on-disk formats, subsets, group actions, batches.

The IDX files, CIFAR-10 pickle batches and archives are written by the tests themselves (small, in
the official layout); Fashion-MNIST is also read from the Debian package ``dataset-fashion-mnist``
where it is installed, which ``.ci/run`` ensures (with ``GFLOWS_REQUIRE_DATASETS=1`` the test fails
instead of skipping without it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import pickle
import tarfile

import numpy as np
import pytest
import torch

from gflows import groups
from gflows.data import formats, images
from gflows.data.images import CorruptDataset, DatasetNotFound, DownloadFailed, ImageSet


# ------------------------------------------------------------------------- writing the real formats
def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder, prefix, pixels, labels, gzipped=True):
    """The two IDX files of a split (``prefix`` 'train' or 't10k'), as the official ones or un-gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array, magic in (("images-idx3", pixels, 2051), ("labels-idx1", labels, 2049)):
        raw = idx_bytes(array, magic)
        name = f"{prefix}-{kind}-ubyte"
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


def write_cifar_batch(path, data: np.ndarray, labels, protocol=2):
    """A CIFAR-10 python batch: a pickled dict with 'data' (N, 3072) uint8 and 'labels' (list of N ints)."""
    batch = {"batch_label": "test batch", "labels": [int(label) for label in labels], "data": data,
             "filenames": [f"image_{i}.png" for i in range(len(data))]}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def cifar_data(n, seed):
    generator = np.random.default_rng(seed)
    return generator.integers(0, 256, (n, 3072), dtype=np.uint8), generator.integers(0, 10, n)


def write_cifar_folder(folder, n=3, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        written[name] = cifar_data(n, i)
        write_cifar_batch(folder / name, *written[name], protocol=protocol)
    return written


def random_idx_split(n=12, height=5, width=7, seed=0):
    generator = np.random.default_rng(seed)
    return generator.integers(0, 256, (n, height, width), dtype=np.uint8), generator.integers(0, 10, n, dtype=np.uint8)


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Pretend that the Debian Fashion-MNIST package is not installed."""
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ digits
def test_digits_splits_are_the_chapters_split_scaled_to_8_bits():
    from sklearn.datasets import load_digits

    train, test = images.load("digits"), images.load("digits", split="test")
    assert (len(train), len(test)) == (1500, 297) and train.shape == test.shape == (1, 8, 8)
    assert train.pixels.dtype == torch.uint8 and train.labels.dtype == torch.int64
    digits = load_digits()
    both = torch.cat([train.pixels, test.pixels])[:, 0].numpy()
    assert np.array_equal(both, np.rint(digits.images * 255 / 16))        # 0..16 -> 0..255, rounded
    assert np.array_equal(torch.cat([train.labels, test.labels]).numpy(), digits.target)
    assert int(train.pixels.min()) == 0 and int(train.pixels.max()) == 255
    assert train.name == "digits" and train.split == "train" and test.split == "test"


def test_unknown_names_and_splits_list_the_allowed_ones():
    with pytest.raises(ValueError, match="digits, fashion-mnist, mnist, cifar10"):
        images.load("svhn")
    with pytest.raises(ValueError, match="train, test"):
        images.load("digits", split="validation")


def test_image_set_rejects_wrong_types():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.rand(2, 1, 3, 3), torch.zeros(2, dtype=torch.int64), "digits", "train")
    with pytest.raises(ValueError, match=r"int64 tensor \(2,\)"):
        ImageSet(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "digits", "train")


# ------------------------------------------------------------------------------ IDX (MNIST-type)
def test_fashion_mnist_from_the_debian_package():
    if not (images.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        message = "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist"
        if os.environ.get("GFLOWS_REQUIRE_DATASETS") == "1":
            pytest.fail(f"GFLOWS_REQUIRE_DATASETS=1 but {message}")
        pytest.skip(message)
    for split, n in (("train", 60000), ("test", 10000)):
        ds = images.load("fashion-mnist", split=split, root="/nonexistent")
        assert ds.pixels.shape == (n, 1, 28, 28) and ds.pixels.dtype == torch.uint8
        assert torch.equal(torch.bincount(ds.labels), torch.full((10,), n // 10))   # balanced classes
        assert int(ds.pixels.max()) == 255 and 0.2 < ds.pixels.float().mean() / 255 < 0.4


@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("mnist", "MNIST/raw"),
                                          ("fashion-mnist", "fashion-mnist"), ("fashion-mnist", "FashionMNIST/raw")])
@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_files_load_in_both_layouts_gzipped_or_not(tmp_path, no_debian, name, folder, gzipped):
    pixels, labels = random_idx_split(n=12, height=5, width=7)     # not square: rows and columns stay apart
    write_idx_set(tmp_path / folder, "t10k", pixels, labels, gzipped=gzipped)
    ds = images.load(name, split="test", root=tmp_path)
    assert ds.pixels.shape == (12, 1, 5, 7) and ds.pixels.dtype == torch.uint8
    assert np.array_equal(ds.pixels[:, 0].numpy(), pixels) and np.array_equal(ds.labels.numpy(), labels)
    with pytest.raises(DatasetNotFound):                            # only the test split is there
        images.load(name, split="train", root=tmp_path)


def test_root_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("GFLOWS_DATA", str(tmp_path))
    assert images.default_root() == tmp_path
    pixels, labels = random_idx_split()
    write_idx_set(tmp_path / "mnist", "train", pixels, labels)
    assert np.array_equal(images.load("mnist").pixels[:, 0].numpy(), pixels)
    monkeypatch.delenv("GFLOWS_DATA")
    assert images.default_root() == pathlib.Path.home() / ".cache" / "gflows"


def test_missing_fashion_mnist_says_what_to_install_and_where_to_put_files(tmp_path, no_debian):
    pixels, labels = random_idx_split()
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(pixels, 2051)))
    with pytest.raises(DatasetNotFound) as caught:                  # the labels are missing
        images.load("fashion-mnist", root=tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "fashion-mnist") in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert "download=True" in message and "GFLOWS_DATA" in message


def test_missing_mnist_names_no_debian_package(tmp_path):
    with pytest.raises(DatasetNotFound, match="MNIST \\(test split\\) not found") as caught:
        images.load("mnist", split="test", root=tmp_path)
    assert "apt-get" not in str(caught.value) and "download=True" in str(caught.value)


def test_corrupt_idx_files_raise_with_the_reason(tmp_path, no_debian):
    pixels, labels = random_idx_split(n=4)
    folder = tmp_path / "mnist"
    cases = {
        "magic number 2049, expected 2051": (idx_bytes(pixels, 2049), idx_bytes(labels, 2049)),
        "holds 135 .truncated": (idx_bytes(pixels, 2051)[:-5], idx_bytes(labels, 2049)),
        "too short for an IDX header": (b"\x00\x00\x08", idx_bytes(labels, 2049)),
        "4 images but .* 3 labels": (idx_bytes(pixels, 2051), idx_bytes(labels[:3], 2049)),
        "labels must be 0..9, found 3..12": (idx_bytes(pixels, 2051), idx_bytes(np.array([3, 12, 5, 4]), 2049)),
    }
    for reason, (image_file, label_file) in cases.items():
        write_idx_set(folder, "train", pixels, labels, gzipped=False)
        (folder / "train-images-idx3-ubyte").write_bytes(image_file)
        (folder / "train-labels-idx1-ubyte").write_bytes(label_file)
        with pytest.raises(CorruptDataset, match=reason):
            images.load("mnist", root=tmp_path)
    (folder / "train-images-idx3-ubyte").unlink()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(pixels, 2051))[:-20])
    with pytest.raises(CorruptDataset, match="damaged gzip"):
        images.load("mnist", root=tmp_path)


# ------------------------------------------------------------------------------------ CIFAR-10
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_batches_load_as_rgb_planes(tmp_path, protocol):
    written = write_cifar_folder(tmp_path / "cifar-10-batches-py", n=3, protocol=protocol)
    train, test = images.load("cifar10", root=tmp_path), images.load("cifar10", split="test", root=tmp_path)
    assert train.pixels.shape == (15, 3, 32, 32) and test.pixels.shape == (3, 3, 32, 32)
    data, labels = written["data_batch_2"]
    # row of 'data' = 1024 red values, then green, then blue, each plane row by row
    assert torch.equal(train.pixels[3:6], torch.from_numpy(data).reshape(3, 3, 32, 32))
    assert int(train.pixels[4, 1, 2, 5]) == data[1, 1024 + 2 * 32 + 5]
    assert np.array_equal(train.labels[3:6].numpy(), labels) and train.labels.dtype == torch.int64
    assert np.array_equal(test.pixels.numpy().reshape(3, -1), written["test_batch"][0])


def cifar_archive(path, source_folder):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source_folder, arcname="cifar-10-batches-py")


def test_cifar_is_extracted_from_the_official_archive(tmp_path):
    written = write_cifar_folder(tmp_path / "build" / "cifar-10-batches-py")
    root = tmp_path / "data"
    root.mkdir()
    cifar_archive(root / "cifar-10-python.tar.gz", tmp_path / "build" / "cifar-10-batches-py")
    test = images.load("cifar10", split="test", root=root)
    assert np.array_equal(test.pixels.numpy().reshape(3, -1), written["test_batch"][0])
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no leftovers


def test_missing_cifar_says_where_to_put_which_file(tmp_path):
    with pytest.raises(DatasetNotFound) as caught:
        images.load("cifar10", root=tmp_path)
    message = str(caught.value)
    assert "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5" in message
    assert "cifar-10-python.tar.gz" in message and str(tmp_path) in message and "download=True" in message


def test_corrupt_cifar_batches_raise_with_the_reason(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data, labels = cifar_data(4, 0)
    cases = {
        r"'data' must be a uint8 array \(N, 3072\), found uint8 array \(4, 3000\)": {"data": data[:, :3000], "labels": labels.tolist()},
        "4 images but labels of shape": {"data": data, "labels": labels[:3].tolist()},
        "the keys 'data' and 'labels'": {"images": data},
        "a pickled dict, found list": [data],
    }
    for reason, content in cases.items():
        (folder / "test_batch").write_bytes(pickle.dumps(content, protocol=2))
        with pytest.raises(CorruptDataset, match=reason):
            images.load("cifar10", split="test", root=tmp_path)
    (folder / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(CorruptDataset, match="test_batch"):
        images.load("cifar10", split="test", root=tmp_path)


def test_a_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.remove, (str(tmp_path / "victim"),))

    (tmp_path / "victim").write_text("still here")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Payload(), "labels": []}))
    with pytest.raises(CorruptDataset, match=f"refusing to load {os.remove.__module__}.remove"):
        images.load("cifar10", split="test", root=tmp_path)
    assert (tmp_path / "victim").exists()


# ----------------------------------------------------------------------------------- downloads
def serve(tmp_path, monkeypatch, files: dict):
    """Offer ``files`` (name -> bytes) at a file:// mirror, preceded by a mirror that does not answer."""
    server = tmp_path / "server"
    server.mkdir()
    for name, content in files.items():
        (server / name).write_bytes(content)
    mirrors = (f"file://{tmp_path}/offline/", f"file://{server}/")
    source = images._IDX_SOURCES["mnist"]
    checksums = {name: hashlib.md5(content).hexdigest() for name, content in files.items()}
    monkeypatch.setitem(images._IDX_SOURCES, "mnist", type(source)(source.title, source.folders, mirrors, checksums))
    return server


def mnist_files(seed=0):
    files = {}
    for prefix, seed_offset in (("train", 0), ("t10k", 1)):
        pixels, labels = random_idx_split(n=6, seed=seed + seed_offset)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(pixels, 2051))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels, 2049))
    return files


def test_download_fetches_every_file_checks_it_and_loads(tmp_path, monkeypatch):
    files = mnist_files()
    serve(tmp_path, monkeypatch, files)
    root = tmp_path / "data"
    with pytest.raises(DatasetNotFound):
        images.load("mnist", root=root)
    ds = images.load("mnist", split="test", root=root, download=True)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(files)      # all four, no temporaries
    assert all((root / "mnist" / name).read_bytes() == content for name, content in files.items())
    expected = np.frombuffer(gzip.decompress(files["t10k-images-idx3-ubyte.gz"]), np.uint8, offset=16)
    assert np.array_equal(ds.pixels.numpy().ravel(), expected)


def test_a_download_with_the_wrong_checksum_leaves_nothing_behind(tmp_path, monkeypatch):
    server = serve(tmp_path, monkeypatch, mnist_files())
    (server / "train-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    root = tmp_path / "data"
    with pytest.raises(DownloadFailed) as caught:
        images.load("mnist", root=root, download=True)
    message = str(caught.value)
    assert "train-labels-idx1-ubyte.gz" in message and "offline" in message
    assert f"MD5 {hashlib.md5(b'tampered').hexdigest()}, expected" in message
    assert sorted(p.name for p in (root / "mnist").iterdir()) == ["train-images-idx3-ubyte.gz"]  # fetched before


def test_cifar_download_is_checked_and_extracted(tmp_path, monkeypatch):
    written = write_cifar_folder(tmp_path / "build" / "cifar-10-batches-py")
    archive = tmp_path / "server" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    cifar_archive(archive, tmp_path / "build" / "cifar-10-batches-py")
    monkeypatch.setattr(images, "CIFAR_URL", f"file://{archive}")
    monkeypatch.setattr(images, "CIFAR_MD5", "0" * 32)
    with pytest.raises(DownloadFailed, match="expected 0000"):
        images.load("cifar10", root=tmp_path / "data", download=True)
    monkeypatch.setattr(images, "CIFAR_MD5", md5(archive))
    train = images.load("cifar10", root=tmp_path / "data", download=True)
    assert np.array_equal(train.pixels[:3].numpy().reshape(3, -1), written["data_batch_1"][0])


def test_a_damaged_archive_is_reported(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(gzip.compress(b"not a tar archive" * 100))
    with pytest.raises(CorruptDataset, match="not a readable tar.gz"):
        images.load("cifar10", root=tmp_path)


# -------------------------------------------------------------------------------------- subsets
def labelled(labels) -> ImageSet:
    """A data set whose image i spells out i in its two pixels (i // 256, i % 256)."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    index = torch.arange(len(labels))
    pixels = torch.stack([index // 256, index % 256], -1).to(torch.uint8).reshape(-1, 1, 1, 2)
    return ImageSet(pixels, labels, "digits", "train")


def positions(part: ImageSet) -> list:
    return (part.pixels[:, 0, 0, 0].long() * 256 + part.pixels[:, 0, 0, 1].long()).tolist()


def test_subsets_are_reproducible_nested_and_class_balanced():
    train = labelled(images.load("digits").labels)                   # the digits' labels, images that name themselves
    sizes = [10, 25, 100, 333, 1500]
    chosen = [positions(images.subset(train, size=n, seed=3)) for n in sizes]
    assert [len(set(c)) for c in chosen] == sizes and all(c == sorted(c) for c in chosen)   # data order kept
    assert all(set(small) <= set(large) for small, large in zip(chosen, chosen[1:]))      # nested
    assert positions(images.subset(train, size=100, seed=3)) == chosen[2]                 # reproducible
    assert positions(images.subset(train, size=100, seed=4)) != chosen[2]
    for n in sizes[:-1]:
        counts = torch.bincount(images.subset(train, size=n, seed=3).labels, minlength=10)
        assert int(counts.max() - counts.min()) <= 1
    assert positions(images.subset(train, fraction=0.2, seed=3)) == positions(images.subset(train, size=300, seed=3))


def test_subsets_balance_classes_until_one_runs_out():
    available = [50, 3, 40]                                          # class 1 has only three images
    ds = labelled([0] * 50 + [1] * 3 + [2] * 40)
    for size in (2, 3, 7, 9, 20, 60, 93):
        counts = torch.bincount(images.subset(ds, size=size, seed=1).labels, minlength=3).tolist()
        left = [count for count, total in zip(counts, available) if count < total]
        used_up = [count for count, total in zip(counts, available) if count == total]
        assert sum(counts) == size and max(left, default=0) - min(left, default=0) <= 1
        assert all(count <= max(left) for count in used_up) if left else counts == available
    counts = torch.bincount(images.subset(ds, size=20, seed=1).labels).tolist()
    assert counts[1] == 3 and sorted([counts[0], counts[2]]) == [8, 9]


def test_subset_arguments_are_checked():
    train = images.load("digits")
    with pytest.raises(ValueError, match="exactly one"):
        images.subset(train)
    with pytest.raises(ValueError, match="exactly one"):
        images.subset(train, size=10, fraction=0.1)
    with pytest.raises(ValueError, match=r"size must be in 1..1500"):
        images.subset(train, size=1501)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        images.subset(train, fraction=1.5)
    with pytest.raises(ValueError, match="less than one image"):
        images.subset(train, fraction=1e-4)


# -------------------------------------------------------------------------------- group actions
def asymmetric_images(n, size, dtype=torch.float32):
    """Images that no non-identity exact element fixes (distinct values at the pixels)."""
    base = torch.randperm(size * size, generator=torch.Generator().manual_seed(0)).reshape(1, 1, size, size)
    return (base + torch.arange(n).reshape(n, 1, 1, 1) * size * size).to(dtype)


@pytest.mark.parametrize("size", [5, 6])                            # odd and even grids
def test_exact_action_is_the_group_action_image_by_image(size):
    G = groups.get("D4")
    x = asymmetric_images(8, size)
    moved = images.exact_action(x, G, torch.arange(8))
    for i, g in enumerate(G.exact_elements()):
        assert torch.equal(moved[i:i + 1], G.act_image(x[i:i + 1], g))


def test_random_exact_action_moves_each_image_by_an_exact_element_and_uses_every_one():
    G = groups.get("D4")
    x = asymmetric_images(1, 6, torch.uint8).expand(400, -1, -1, -1)
    moved = images.random_exact_action(x, G, torch.Generator().manual_seed(0))
    assert moved.dtype == torch.uint8
    images_of_x = torch.cat([G.act_image(x[:1], g) for g in G.exact_elements()])     # 8 distinct images
    matches = (moved.unsqueeze(1) == images_of_x.unsqueeze(0)).flatten(2).all(-1)     # (400, 8)
    assert torch.all(matches.sum(1) == 1)                            # each output is exactly one g x
    counts = matches.sum(0)
    assert torch.all(counts > 0) and counts.sum() == 400            # every element appears
    again = images.random_exact_action(x, "D4", torch.Generator().manual_seed(0))
    assert torch.equal(moved, again)


def test_groups_with_inexact_elements_draw_from_their_exact_subgroup():
    C8, C4 = groups.get("C8"), groups.get("C4")
    x = asymmetric_images(1, 5).expand(200, -1, -1, -1)
    moved = images.random_exact_action(x, C8, torch.Generator().manual_seed(1))
    quarter_turns = torch.stack([torch.rot90(x[0], k, dims=(-2, -1)) for k in range(4)])
    matches = (moved.unsqueeze(1) == quarter_turns.unsqueeze(0)).flatten(2).all(-1)
    assert torch.all(matches.sum(1) == 1) and torch.all(matches.sum(0) > 0)
    assert len(C8.exact_elements()) == C4.order


def test_exact_action_checks_its_input():
    with pytest.raises(ValueError, match="needs H == W"):
        images.exact_action(torch.zeros(2, 1, 4, 5), "C4", torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one element index per image"):
        images.exact_action(torch.zeros(2, 1, 4, 4), "C4", torch.tensor([0]))
    with pytest.raises(ValueError, match=r"in 0..3 \(C4 has 4"):
        images.exact_action(torch.zeros(2, 1, 4, 4), "C4", torch.tensor([0, 4]))
    D1, wide = groups.get("D1"), torch.arange(20.0).reshape(1, 1, 4, 5)
    flipped = images.exact_action(wide, D1, torch.tensor([1]))     # a flip needs no square
    assert torch.equal(flipped, D1.act_image(wide, D1.exact_elements()[1])) and not torch.equal(flipped, wide)


@pytest.mark.parametrize("size", [5, 6])
def test_rotation_by_quarter_turns_agrees_with_the_exact_action(size):
    x = torch.rand(3, 2, size, size, dtype=torch.float64)
    for k in range(4):
        assert torch.allclose(images.rotate(x, 90.0 * k), torch.rot90(x, k, dims=(-2, -1)), atol=1e-12)
    per_image = images.rotate(x, torch.tensor([0.0, 90.0, -90.0]))
    assert torch.allclose(per_image[1], torch.rot90(x[1], 1, dims=(-2, -1)), atol=1e-12)
    assert torch.allclose(per_image[2], torch.rot90(x[2], -1, dims=(-2, -1)), atol=1e-12)


def test_random_rotation_interpolates_within_the_data_range():
    x = torch.rand(64, 1, 8, 8) * 0.999
    generator = torch.Generator().manual_seed(0)
    rotated = images.random_rotation(x, generator, degrees=30.0)
    assert rotated.min() >= 0 and rotated.max() < 1 and not torch.allclose(rotated, x, atol=1e-3)
    assert torch.equal(rotated, images.random_rotation(x, torch.Generator().manual_seed(0), degrees=30.0))
    with pytest.raises(ValueError, match="square"):
        images.rotate(torch.zeros(1, 1, 4, 5), 10.0)
    with pytest.raises(ValueError, match="positive"):
        images.random_rotation(x, generator, degrees=0.0)


# -------------------------------------------------------------------------------------- batches
@pytest.fixture(scope="module")
def digits():
    return images.load("digits")


def as_pixels(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x * 256).to(torch.uint8)


def sorted_rows(pixels: torch.Tensor) -> np.ndarray:
    rows = pixels.flatten(1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


def test_an_epoch_is_a_dequantised_shuffle_of_the_data(digits):
    batches = list(images.epoch_batches(digits, 64, seed=0, epoch=0, drop_last=False))
    assert [len(x) for x in batches] == [64] * 23 + [28] and len(batches) == images.batches_per_epoch(digits, 64, drop_last=False)
    x = torch.cat(batches)
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() < 1
    assert np.array_equal(sorted_rows(as_pixels(x)), sorted_rows(digits.pixels))     # every image once
    assert not torch.equal(as_pixels(x), digits.pixels)                              # shuffled
    full = list(images.epoch_batches(digits, 64, seed=0, epoch=0))
    assert len(full) == 23 == images.batches_per_epoch(digits, 64)
    assert all(torch.equal(a, b) for a, b in zip(full, batches))


def test_epoch_batches_are_a_function_of_seed_and_epoch(digits):
    def first(**kw):
        return next(images.epoch_batches(digits, 32, group="D4", rotation=20.0, **kw))

    assert torch.equal(first(seed=1, epoch=2), first(seed=1, epoch=2))
    assert not torch.equal(as_pixels(first(seed=1, epoch=2)), as_pixels(first(seed=1, epoch=3)))
    assert not torch.equal(as_pixels(first(seed=1, epoch=2)), as_pixels(first(seed=2, epoch=2)))
    assert torch.equal(first(seed=1, epoch=2), first(seed=1, epoch=2, device="cpu"))


def test_resuming_at_a_batch_gives_the_remaining_batches(digits):
    every = list(images.epoch_batches(digits, 100, seed=5, epoch=1, group="C4"))
    resumed = list(images.epoch_batches(digits, 100, seed=5, epoch=1, group="C4", start=10))
    assert len(resumed) == len(every) - 10 and all(torch.equal(a, b) for a, b in zip(every[10:], resumed))
    assert list(images.epoch_batches(digits, 100, seed=5, epoch=1, start=len(every))) == []


@pytest.mark.parametrize("options", [{}, {"group": "D4"}, {"group": "D4", "rotation": 45.0}])
def test_ranks_split_the_global_batches_of_a_single_process(digits, options):
    world = 3
    single = list(images.epoch_batches(digits, 4 * world, seed=7, epoch=2, **options))
    ranks = [list(images.epoch_batches(digits, 4, seed=7, epoch=2, rank=r, world_size=world, **options))
             for r in range(world)]
    assert all(len(batches) == len(single) == 1500 // 12 for batches in ranks)
    for j, global_batch in enumerate(single):
        parts = [batches[j] for batches in ranks]
        assert all(len(part) == 4 for part in parts)
        assert torch.equal(torch.cat(parts), global_batch)


def test_uneven_last_batches_still_cover_every_image_once(digits):
    world = 7
    ranks = [list(images.epoch_batches(digits, 10, seed=0, epoch=0, rank=r, world_size=world, drop_last=False))
             for r in range(world)]
    assert {len(batches) for batches in ranks} == {22}                       # same number of steps on every rank
    assert [len(batches[-1]) for batches in ranks] == [5, 5, 4, 4, 4, 4, 4]  # 1500 = 21 * 70 + 30
    every = torch.cat([x for batches in ranks for x in batches])
    assert np.array_equal(sorted_rows(as_pixels(every)), sorted_rows(digits.pixels))


def test_the_group_action_comes_after_dequantisation(digits):
    G = groups.get("D4")
    plain = next(images.epoch_batches(digits, 256, seed=3, epoch=0))
    moved = next(images.epoch_batches(digits, 256, seed=3, epoch=0, group=G))
    assert moved.min() >= 0 and moved.max() < 1
    # same shuffle and same noise: each moved image is exactly one group image of the plain one
    images_of_plain = torch.stack([G.act_image(plain, g) for g in G.exact_elements()], 1)    # (B, 8, 1, 8, 8)
    matches = (moved.unsqueeze(1) == images_of_plain).flatten(2).all(-1)
    assert torch.all(matches.any(1)) and torch.all(matches.any(0))


def test_epoch_batch_arguments_are_checked(digits):
    with pytest.raises(ValueError, match=r"rank must be in 0..1"):
        images.epoch_batches(digits, 8, seed=0, epoch=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="positive"):
        images.epoch_batches(digits, 0, seed=0, epoch=0)
    with pytest.raises(ValueError, match="no full global batch"):
        images.epoch_batches(digits, 1000, seed=0, epoch=0, world_size=2)
    with pytest.raises(ValueError, match="past the 23 batches"):
        images.epoch_batches(digits, 64, seed=0, epoch=0, start=24)
    with pytest.raises(ValueError, match="non-negative"):
        images.epoch_batches(digits, 64, seed=-1, epoch=0)
    with pytest.raises(ValueError, match="positive largest angle"):
        images.epoch_batches(digits, 64, seed=0, epoch=0, rotation=0.0)
    wide = ImageSet(torch.zeros(4, 1, 4, 6, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), "mnist", "test")
    with pytest.raises(ValueError, match="needs H == W"):
        images.epoch_batches(wide, 2, seed=0, epoch=0, group="C4")


def test_eval_batches_use_fixed_noise_whatever_the_batching():
    test = images.load("digits", split="test")
    reference = torch.cat(list(images.eval_batches(test, 50)))
    assert torch.equal(as_pixels(reference), test.pixels)                   # in order, every image once
    assert reference.min() >= 0 and reference.max() < 1
    assert torch.equal(torch.cat(list(images.eval_batches(test, 7))), reference)
    world = 2
    ranks = [list(images.eval_batches(test, 16, rank=r, world_size=world)) for r in range(world)]
    interleaved = torch.cat([x for pair in zip(*ranks) for x in pair])
    assert torch.equal(interleaved, reference)
    assert not torch.equal(torch.cat(list(images.eval_batches(test, 50, seed=1))), reference)


def test_eval_noise_blocks_join_up_on_a_larger_set():
    ds = labelled(torch.zeros(2 * images.EVAL_NOISE_BLOCK + 10))
    whole = torch.cat(list(images.eval_batches(ds, 300)))
    assert torch.equal(torch.cat(list(images.eval_batches(ds, 1000))), whole)
    assert torch.equal(as_pixels(whole), ds.pixels)
