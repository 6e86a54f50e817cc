"""Where data comes from: data.dir layouts, the system copy, staging, download errors, imagefolder.

Uses tiny hand-made idx files (the format torchvision's MNIST readers parse) and PNG folders, so it
needs no real data set and no network.
"""

from __future__ import annotations

import gzip
import os
import struct
import threading
from pathlib import Path

import pytest
import torch

from orchestrator.config import DataSpec
from orchestrator.data import DataNotFoundError, load_data, resolve_dataset_root
from orchestrator.data import sources as data_sources
from orchestrator.data.sources import IDX_FILES, stage_file

N_TRAIN, N_TEST = 60, 20


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """An empty system root and a private cache for every test."""
    system = tmp_path / "system"
    system.mkdir()
    monkeypatch.setattr(data_sources, "SYSTEM_DATA_ROOT", system)
    monkeypatch.setenv(data_sources.CACHE_ENV, str(tmp_path / "cache"))
    return system


def idx_bytes(array: torch.Tensor) -> bytes:
    """The idx format: zero, zero, dtype code 0x08 (uint8), ndim, big-endian dims, then the data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.to(torch.uint8).numpy().tobytes()


def fake_idx_set(seed: int = 0) -> dict[str, bytes]:
    gen = torch.Generator().manual_seed(seed)
    train_labels = torch.arange(N_TRAIN) % 10
    test_labels = torch.arange(N_TEST) % 10
    return {
        "train-images-idx3-ubyte": idx_bytes(
            torch.randint(0, 256, (N_TRAIN, 28, 28), generator=gen)
        ),
        "train-labels-idx1-ubyte": idx_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_bytes(torch.randint(0, 256, (N_TEST, 28, 28), generator=gen)),
        "t10k-labels-idx1-ubyte": idx_bytes(test_labels),
    }


def write_idx(folder: Path, files: dict[str, bytes], compress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if compress:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(data)
        else:
            (folder / name).write_bytes(data)


def check_fake(bundle, seed: int = 0) -> None:
    files = fake_idx_set(seed)
    assert len(bundle.train) + len(bundle.val) == N_TRAIN and len(bundle.test) == N_TEST
    assert bundle.train.images.shape[1:] == (1, 28, 28)
    expected_test = torch.frombuffer(
        bytearray(files["t10k-images-idx3-ubyte"][16:]), dtype=torch.uint8
    )
    assert torch.equal(bundle.test.images.flatten(), expected_test)


@pytest.mark.parametrize("compress", [False, True])
def test_flat_user_dir(tmp_path, compress):
    user = tmp_path / "mine"
    write_idx(user, fake_idx_set(), compress)
    spec = DataSpec(name="fashion-mnist", dir=str(user), download=False)
    root = resolve_dataset_root(spec)
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir()) == sorted(IDX_FILES)
    assert not (user / "FashionMNIST").exists()  # the user's folder is never written to
    check_fake(load_data(spec))


def test_torchvision_layout_is_read_in_place(tmp_path):
    user = tmp_path / "tv"
    write_idx(user / "MNIST" / "raw", fake_idx_set(1), compress=False)
    spec = DataSpec(name="mnist", dir=str(user), download=False)
    assert resolve_dataset_root(spec) == user
    bundle = load_data(spec)
    check_fake(bundle, seed=1)
    assert bundle.info.flip is False and bundle.info.mean == (0.1307,)


def test_system_copy_is_decompressed_once_into_the_cache(tmp_path, isolated):
    write_idx(isolated / "fashion-mnist", fake_idx_set(2), compress=True)
    spec = DataSpec(name="fashion-mnist", download=False)
    root = resolve_dataset_root(spec)
    assert root == tmp_path / "cache"
    staged = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    first = staged.stat().st_mtime_ns
    assert resolve_dataset_root(spec) == root
    assert staged.stat().st_mtime_ns == first  # idempotent: not rewritten
    check_fake(load_data(spec), seed=2)
    assert not list((root / "FashionMNIST" / "raw").glob(".*tmp"))


def test_user_dir_wins_over_system_copy(tmp_path, isolated):
    write_idx(isolated / "fashion-mnist", fake_idx_set(2), compress=True)
    user = tmp_path / "mine"
    write_idx(user, fake_idx_set(3), compress=True)
    check_fake(load_data(DataSpec(name="fashion-mnist", dir=str(user), download=False)), seed=3)
    # An empty data.dir falls through to the system copy.
    empty = tmp_path / "empty"
    empty.mkdir()
    check_fake(load_data(DataSpec(name="fashion-mnist", dir=str(empty), download=False)), seed=2)


def test_stage_file_restages_a_changed_source(tmp_path):
    src = tmp_path / "a.gz"
    with gzip.open(src, "wb") as f:
        f.write(b"old contents")
    dst = tmp_path / "out" / "a"
    stage_file(src, dst)
    assert dst.read_bytes() == b"old contents"
    with gzip.open(src, "wb") as f:
        f.write(b"new, longer contents")
    os.utime(src, ns=(dst.stat().st_mtime_ns + 10**9,) * 2)
    stage_file(src, dst)
    assert dst.read_bytes() == b"new, longer contents"


def test_concurrent_staging_is_safe(tmp_path):
    src = tmp_path / "big.gz"
    payload = os.urandom(1 << 20) * 4
    with gzip.open(src, "wb", compresslevel=1) as f:
        f.write(payload)
    dst = tmp_path / "out" / "big"
    errors: list[BaseException] = []

    def stage():
        try:
            stage_file(src, dst)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=stage) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert dst.read_bytes() == payload
    assert [p.name for p in dst.parent.iterdir()] == ["big"]


def test_failed_download_becomes_data_not_found(tmp_path, monkeypatch):
    class Offline:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError(
                "Error downloading train-images-idx3-ubyte.gz:\nName or service not known"
            )

    monkeypatch.setattr(data_sources.TorchvisionSource, "dataset_class", lambda self: Offline)
    spec = DataSpec(name="fashion-mnist", dir=str(tmp_path / "dl"), download=True)
    with pytest.raises(
        DataNotFoundError, match="download into .*failed.*Name or service"
    ) as excinfo:
        resolve_dataset_root(spec)
    assert isinstance(excinfo.value.__cause__, RuntimeError)


def test_cifar_layout_is_found(tmp_path):
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"x")
    assert resolve_dataset_root(
        DataSpec(name="cifar10", dir=str(tmp_path / "c"), download=False)
    ) == (tmp_path / "c")
    assert resolve_dataset_root(DataSpec(name="cifar10", dir=str(folder), download=False)) == (
        tmp_path / "c"
    )
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        resolve_dataset_root(DataSpec(name="cifar100", dir=str(tmp_path / "c"), download=False))


def test_synthetic_has_no_root():
    with pytest.raises(ValueError, match="synthetic"):
        resolve_dataset_root(DataSpec(name="synthetic"))


# imagefolder ----------------------------------------------------------------------------
def write_images(folder: Path, classes: dict[str, int], size=(20, 12), mode="RGB") -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(len(str(folder)))
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
            image = Image.fromarray(pixels.numpy(), "RGB").convert(mode)
            image.save(folder / name / f"{i}.png")


def test_imagefolder_needs_dir():
    with pytest.raises(DataNotFoundError, match=r"data\.dir"):
        load_data(DataSpec(name="imagefolder"))


def test_imagefolder_with_train_and_test(tmp_path):
    root = tmp_path / "images"  # beside the fixture's system/ and cache/
    write_images(root / "train", {"cat": 12, "dog": 8}, mode="L")  # grey -> RGB
    write_images(root / "test", {"dog": 3})  # a subset of the classes, matched by name
    bundle = load_data(DataSpec(name="imagefolder", dir=str(root), image_size=8, val_fraction=0.25))
    info = bundle.info
    assert (info.channels, info.image_size, info.num_classes) == (3, 8, 2)
    assert info.class_names == ("cat", "dog") and info.crop_padding == 1
    assert bundle.train.images.shape[1:] == (3, 8, 8)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (15, 5, 3)
    assert bundle.test.labels.tolist() == [1, 1, 1]
    assert len(info.mean) == 3 and all(0.3 < m < 0.7 for m in info.mean)


def test_imagefolder_without_test_carves_one(tmp_path):
    root = tmp_path / "images"  # beside the fixture's system/ and cache/
    write_images(root, {"a": 10, "b": 10, "c": 10})
    spec = DataSpec(name="imagefolder", dir=str(root), val_fraction=0.2)
    bundle = load_data(spec)
    assert bundle.info.image_size == 32 and bundle.info.crop_padding == 4
    assert len(bundle.test) == 6 and len(bundle.val) == 5 and len(bundle.train) == 19
    keys = [
        {img.numpy().tobytes() for img in s.images} for s in (bundle.train, bundle.val, bundle.test)
    ]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    again = load_data(spec)
    assert (
        torch.equal(again.test.images, bundle.test.images)
        and again.fingerprint == bundle.fingerprint
    )
    other = load_data(DataSpec(name="imagefolder", dir=str(root), val_fraction=0.2, split_seed=5))
    assert not torch.equal(other.test.images, bundle.test.images)


def test_imagefolder_test_without_train_is_an_error(tmp_path):
    root = tmp_path / "images"  # beside the fixture's system/ and cache/
    write_images(root / "test", {"a": 2})
    write_images(root, {"a": 2})
    with pytest.raises(DataNotFoundError, match="train/"):
        load_data(DataSpec(name="imagefolder", dir=str(root)))
