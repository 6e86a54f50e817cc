"""orchestrator.data on synthetic data: splits, fingerprints, BatchLoader (no files, fast)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from orchestrator.config import DataSpec
from orchestrator.data import (
    BatchLoader,
    DataInfo,
    DataNotFoundError,
    Split,
    load_data,
)
from orchestrator.data import sources as data_sources
from orchestrator.data.info import STANDARD_INFO


def synthetic(**kw) -> DataSpec:
    kw.setdefault("synthetic_size", 512)
    return DataSpec(name="synthetic", **kw)


def image_keys(split: Split) -> set[bytes]:
    return {img.numpy().tobytes() for img in split.images}


# Synthetic data -------------------------------------------------------------------------
def test_synthetic_shapes_dtypes_and_sizes():
    bundle = load_data(synthetic())
    info = bundle.info
    assert (info.name, info.channels, info.image_size, info.num_classes) == ("synthetic", 1, 16, 10)
    assert len(bundle.train) + len(bundle.val) == 512
    assert len(bundle.val) == round(0.1 * 512)
    assert len(bundle.test) == 512 // 4
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (1, 16, 16)
        assert split.images.is_contiguous()
        assert split.labels.min() >= 0 and split.labels.max() < 10
    assert len(info.mean) == len(info.std) == 1


def test_synthetic_options():
    bundle = load_data(synthetic(num_classes=3, channels=3, image_size=8))
    assert bundle.train.images.shape[1:] == (3, 8, 8)
    assert bundle.info.num_classes == 3 and set(bundle.train.labels.tolist()) == {0, 1, 2}
    assert len(bundle.info.mean) == 3


def test_synthetic_is_deterministic():
    a, b = load_data(synthetic()), load_data(synthetic())
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
        assert torch.equal(getattr(a, name).labels, getattr(b, name).labels)
    assert a.info == b.info and a.fingerprint == b.fingerprint


@pytest.fixture
def one_thread():
    # Tiny convs on a shared 2-CPU machine: OpenMP waits make 2 threads up to 50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_is_learnable(one_thread):
    """A tiny CNN learns it to high accuracy in a few epochs (unit tests of training rely on it)."""
    torch.manual_seed(0)
    bundle = load_data(synthetic(synthetic_size=1024))
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = BatchLoader(bundle.train, bundle.info, 64, shuffle=True, augment=True, seed=0)
    for epoch in range(3):
        loader.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    correct = 0
    with torch.no_grad():
        for x, y in BatchLoader(bundle.test, bundle.info, 256, shuffle=False, augment=False):
            correct += (model(x).argmax(1) == y).sum().item()
    assert correct / len(bundle.test) > 0.9


# Splits ---------------------------------------------------------------------------------
def test_split_same_spec_identical_and_split_seed_changes_it():
    a, b = load_data(synthetic()), load_data(synthetic())
    c = load_data(synthetic(split_seed=1))
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    # Same pool of training images, only divided differently; the test split is untouched.
    assert image_keys(a.train) | image_keys(a.val) == image_keys(c.train) | image_keys(c.val)
    assert torch.equal(a.test.images, c.test.images)


def test_train_and_val_are_disjoint():
    bundle = load_data(synthetic())
    train, val = image_keys(bundle.train), image_keys(bundle.val)
    assert len(train) == len(bundle.train) and len(val) == len(bundle.val)  # no duplicates
    assert not train & val


def test_fingerprint_equal_for_same_spec_and_differs_with_split():
    base = load_data(synthetic()).fingerprint
    assert isinstance(base, str) and int(base, 16) >= 0
    assert load_data(synthetic()).fingerprint == base
    # What a member varies never enters DataSpec; what changes the split changes the fingerprint.
    assert load_data(synthetic(augment=False)).fingerprint == base
    changed = [
        synthetic(split_seed=1),
        synthetic(val_fraction=0.2),
        synthetic(subset=100),
        synthetic(eval_subset=20),
        synthetic(classes=[0, 1]),
        synthetic(synthetic_size=256),
        synthetic(image_size=8),
    ]
    prints = {load_data(spec).fingerprint for spec in changed}
    assert base not in prints and len(prints) == len(changed)


def test_subset_and_eval_subset_sizes():
    full = load_data(synthetic())
    bundle = load_data(synthetic(subset=100, eval_subset=30))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (100, 30, 30)
    # subset takes the first images of the same training order; val keeps its first images.
    assert torch.equal(bundle.train.images, full.train.images[:100])
    assert torch.equal(bundle.val.images, full.val.images[:30])
    # The test subset is a seeded, class-mixed sample of the official test set.
    assert image_keys(bundle.test) <= image_keys(full.test)
    assert len(set(bundle.test.labels.tolist())) >= 5
    assert torch.equal(load_data(synthetic(eval_subset=30)).test.images, bundle.test.images)
    # Subsets larger than the split are the whole split.
    big = load_data(synthetic(subset=10_000, eval_subset=10_000))
    assert (len(big.train), len(big.val), len(big.test)) == (
        len(full.train),
        len(full.val),
        len(full.test),
    )


def test_classes_are_selected_and_relabelled_in_order():
    full = load_data(synthetic())
    bundle = load_data(synthetic(classes=[3, 1]))
    assert bundle.info.num_classes == 2
    assert bundle.info.class_names == ("class_3", "class_1")
    for name in ("train", "val", "test"):
        assert set(getattr(bundle, name).labels.tolist()) == {0, 1}
    # New label 0 is old class 3 and new label 1 is old class 1 (the test set is not shuffled).
    for new, old in ((0, 3), (1, 1)):
        expected = full.test.images[full.test.labels == old]
        assert torch.equal(bundle.test.images[bundle.test.labels == new], expected)
    pool = image_keys(bundle.train) | image_keys(bundle.val)
    old_pool = {
        img.numpy().tobytes()
        for split in (full.train, full.val)
        for img, label in zip(split.images, split.labels, strict=True)
        if int(label) in (1, 3)
    }
    assert pool == old_pool


def test_classes_out_of_range_names_the_field():
    with pytest.raises(ValueError, match=r"data\.classes"):
        load_data(synthetic(classes=[0, 10]))
    with pytest.raises(ValueError, match=r"data\.classes"):
        load_data(synthetic(classes=[2, 2]))


# BatchLoader ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle():
    return load_data(synthetic(synthetic_size=600, channels=3))


def collect(loader: BatchLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_loader_batches_shapes_and_dtypes(bundle):
    loader = BatchLoader(bundle.train, bundle.info, 64, shuffle=True, augment=True, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(bundle.train) // 64)
    x, y = batches[0]
    assert x.shape == (64, 3, 16, 16) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    dropped = BatchLoader(
        bundle.train, bundle.info, 64, shuffle=True, augment=False, drop_last=True
    )
    assert len(dropped) == len(bundle.train) // 64 == len(list(dropped))
    assert all(len(y) == 64 for _, y in dropped)


def test_loader_without_shuffle_keeps_order(bundle):
    loader = BatchLoader(bundle.val, bundle.info, 50, shuffle=False, augment=False)
    _, y = collect(loader)
    assert torch.equal(y, bundle.val.labels)


def test_loader_is_deterministic_per_seed_and_epoch(bundle):
    def run(seed, epoch):
        loader = BatchLoader(bundle.train, bundle.info, 64, shuffle=True, augment=True, seed=seed)
        loader.set_epoch(epoch)
        return collect(loader)

    x0, y0 = run(0, 0)
    x0b, y0b = run(0, 0)
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b)
    x1, y1 = run(0, 1)
    assert not torch.equal(y0, y1)  # another order in another epoch
    assert not torch.equal(x0, x1)
    assert not torch.equal(run(1, 0)[1], y0)  # another member seed, another order
    # Resumable: a fresh loader at epoch 1 equals one that went through epoch 0 first.
    loader = BatchLoader(bundle.train, bundle.info, 64, shuffle=True, augment=True, seed=0)
    collect(loader)
    loader.set_epoch(1)
    x1b, y1b = collect(loader)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)


def test_loader_shards_are_disjoint_and_cover_the_split(bundle):
    n = len(bundle.train)
    world = 7  # does not divide n: the order is padded like DistributedSampler
    assert n % world
    shards = []
    for rank in range(world):
        loader = BatchLoader(
            bundle.train,
            bundle.info,
            32,
            shuffle=True,
            augment=False,
            seed=3,
            rank=rank,
            world_size=world,
        )
        loader.set_epoch(2)
        index = loader.indices()
        assert len(index) == loader.num_samples == -(-n // world)
        assert sum(len(y) for _, y in loader) == len(index)
        shards.append(index)
    everything = torch.cat(shards)
    assert set(everything.tolist()) == set(range(n))
    assert len(everything) - len(set(everything.tolist())) == world * (-(-n // world)) - n
    # Disjoint apart from the padding: rank r's unique positions are its own.
    unpadded = [set(s.tolist()) for s in shards]
    overlap = sum(len(a & b) for i, a in enumerate(unpadded) for b in unpadded[i + 1 :])
    assert overlap <= world * (-(-n // world)) - n


def test_augmentation_changes_images_but_not_shape_or_labels(bundle):
    def run(augment):
        loader = BatchLoader(bundle.train, bundle.info, 64, shuffle=True, augment=augment, seed=0)
        return collect(loader)

    xa, ya = run(True)
    xp, yp = run(False)
    assert xa.shape == xp.shape and xa.dtype == xp.dtype == torch.float32
    assert torch.equal(ya, yp)  # same order: augmentation draws from its own generator
    changed = (xa != xp).flatten(1).any(1).float().mean()
    assert changed > 0.5


def plain_batch(info: DataInfo, split: Split, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    aug = collect(BatchLoader(split, info, 1000, shuffle=False, augment=True, seed=seed))[0]
    plain = collect(BatchLoader(split, info, 1000, shuffle=False, augment=False))[0]
    return aug, plain


def test_flip_only_augmentation_mirrors_about_half(bundle):
    info = dataclasses.replace(bundle.info, flip=True, crop_padding=0)
    aug, plain = plain_batch(info, bundle.train)
    same = (aug == plain).flatten(1).all(1)
    mirrored = (aug == plain.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0.3 < mirrored.float().mean() < 0.7


def test_no_flip_for_mnist_and_crop_is_a_shift(bundle):
    assert STANDARD_INFO["mnist"].flip is False
    assert STANDARD_INFO["fashion-mnist"].flip is True and STANDARD_INFO["cifar10"].flip is True
    assert STANDARD_INFO["mnist"].crop_padding == 4
    info = dataclasses.replace(bundle.info, flip=False, crop_padding=0)
    aug, plain = plain_batch(info, bundle.train)
    assert torch.equal(aug, plain)  # nothing to do: no flip, no crop
    # Crop only: each image is its original shifted by at most crop_padding, zero-filled.
    info = dataclasses.replace(bundle.info, flip=False, crop_padding=2)
    split = Split(bundle.train.images[:200], bundle.train.labels[:200])
    aug = collect(BatchLoader(split, info, 64, shuffle=False, augment=True, seed=0))[0]
    raw = split.images.float()
    pad = torch.nn.functional.pad(raw, (2, 2, 2, 2))
    scale = torch.tensor(info.std).view(1, -1, 1, 1) * 255
    shift = torch.tensor(info.mean).view(1, -1, 1, 1) * 255
    back = (aug * scale + shift).round()
    for i in range(len(split)):
        matches = [
            torch.allclose(back[i], pad[i, :, dy : dy + 16, dx : dx + 16], atol=0.5)
            for dy in range(5)
            for dx in range(5)
        ]
        assert any(matches)


def test_normalisation_gives_zero_mean_unit_std(bundle):
    x, _ = collect(BatchLoader(bundle.train, bundle.info, 128, shuffle=False, augment=False))
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=0.02)
    assert torch.allclose(std, torch.ones(3), atol=0.05)


def test_channels_last(bundle):
    loader = BatchLoader(
        bundle.train, bundle.info, 32, shuffle=True, augment=True, channels_last=True
    )
    x, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    plain = BatchLoader(bundle.train, bundle.info, 32, shuffle=True, augment=True)
    assert torch.equal(x, next(iter(plain))[0])  # same values, other layout


def test_loader_rejects_bad_arguments(bundle):
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(
            bundle.train, bundle.info, 8, shuffle=False, augment=False, rank=2, world_size=2
        )
    with pytest.raises(ValueError, match="channels"):
        BatchLoader(bundle.train, STANDARD_INFO["mnist"], 8, shuffle=False, augment=False)


def test_loader_restores_thread_count(bundle):
    before = torch.get_num_threads()
    for _ in BatchLoader(bundle.train, bundle.info, 128, shuffle=True, augment=True):
        assert torch.get_num_threads() == before


# Not found ------------------------------------------------------------------------------
def test_data_not_found_message(tmp_path, monkeypatch):
    empty_system = tmp_path / "system"
    empty_system.mkdir()
    monkeypatch.setattr(data_sources, "SYSTEM_DATA_ROOT", empty_system)
    monkeypatch.setenv(data_sources.CACHE_ENV, str(tmp_path / "cache"))
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    with pytest.raises(DataNotFoundError) as excinfo:
        load_data(DataSpec(name="fashion-mnist", dir=str(user_dir), download=False))
    message = str(excinfo.value)
    assert f"data.dir={user_dir}" in message
    assert str(empty_system / "fashion-mnist") in message
    assert str(tmp_path / "cache") in message
    assert "data.download=false" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "set data.dir" in message


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, orchestrator.data; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_subset_per_member_draws_each_members_own_training_images():
    from orchestrator.config import DataSpec
    from orchestrator.data import load_data

    spec = DataSpec(name="synthetic", synthetic_size=512, subset=100, subset_per_member=True)
    a, b, a_again = (
        load_data(spec, member_seed=0),
        load_data(spec, member_seed=1),
        load_data(spec, member_seed=0),
    )
    assert len(a.train) == len(b.train) == 100
    assert not torch.equal(a.train.images, b.train.images)
    assert torch.equal(a.train.images, a_again.train.images)
    # Validation and test are shared: the aggregator compares members on the same images.
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.images, b.test.images)
    assert a.fingerprint == b.fingerprint
    shared = DataSpec(name="synthetic", synthetic_size=512, subset=100)
    assert torch.equal(
        load_data(shared, member_seed=0).train.images, load_data(shared, member_seed=1).train.images
    )
