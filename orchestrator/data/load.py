"""`load_data(spec)`: the data a member trains and evaluates on, identical for every member.

Order of operations (each step only uses data.split_seed for randomness):
1. read the official train / test sets (or generate the synthetic set);
2. data.classes: keep those classes in both, relabelled 0..k-1 in the given order;
3. imagefolder without test/: carve a test split (fraction data.val_fraction) out of the rest;
4. val = first round(val_fraction * N) of a seeded permutation of the training set, train = rest;
5. data.subset: the first `subset` training images; data.eval_subset: the first `eval_subset`
   validation images and a seeded random `eval_subset` of the test images.
Normalisation for imagefolder/synthetic is computed from step 4's training part (before
data.subset, so a quick run and a full run normalise alike).
data.image_size, data.channels and data.num_classes only apply to imagefolder / synthetic; the
torchvision data sets keep their native size (28 or 32 px).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from orchestrator.data import splits
from orchestrator.data.info import STANDARD_INFO, DataInfo, channel_stats, default_crop_padding
from orchestrator.data.readers import RawData, read_imagefolder, read_torchvision
from orchestrator.data.sources import resolve_dataset_root
from orchestrator.data.splits import DataBundle
from orchestrator.data.synthetic import make_synthetic

if TYPE_CHECKING:
    from orchestrator.config import DataSpec

IMAGEFOLDER_SIZE = 32
SYNTHETIC_SIZE = 16


def load_data(spec: DataSpec, member_seed: int | None = None) -> DataBundle:
    """The data a member sees. `member_seed` matters only with data.subset_per_member: then
    the member's `subset` training images are its own seeded draw from the training pool
    (bagging-style diversity); validation and test never depend on it."""
    raw, info, extra = _read(spec)

    # 2. class selection (positions below index the official sets).
    all_classes = info.num_classes
    train_pos, train_labels = splits.select_classes(raw.train_labels, spec.classes, all_classes)
    if spec.classes is not None:
        names = info.class_names
        info = replace(
            info,
            num_classes=len(spec.classes),
            class_names=tuple(names[c] for c in spec.classes) if names else None,
        )

    # 3. test split: official, or carved out of the (class-selected) training set.
    if raw.test_images is not None and raw.test_labels is not None:
        test_images = raw.test_images
        test_pos, test_labels = splits.select_classes(raw.test_labels, spec.classes, all_classes)
    else:
        rest, carved = splits.carve_test(len(train_pos), spec.val_fraction, spec.split_seed)
        test_images, test_pos, test_labels = (
            raw.train_images,
            train_pos[carved],
            train_labels[carved],
        )
        train_pos, train_labels = train_pos[rest], train_labels[rest]
        extra["test"] = "carved"

    # 4. train / val.
    tr, va = splits.train_val_indices(len(train_pos), spec.val_fraction, spec.split_seed)
    if info.name in ("imagefolder", "synthetic"):
        mean, std = channel_stats(raw.train_images.index_select(0, train_pos[tr]))
        info = replace(info, mean=mean, std=std)

    # 5. subsets.
    if spec.subset is not None:
        if spec.subset_per_member and member_seed is not None:
            draw = torch.Generator().manual_seed(
                splits.derived_seed(spec.split_seed, f"member-{member_seed}")
            )
            tr = tr[torch.randperm(len(tr), generator=draw)[: spec.subset]]
        else:
            tr = tr[: spec.subset]
    if spec.eval_subset is not None:
        va = va[: spec.eval_subset]
    te = splits.test_subset(len(test_pos), spec.eval_subset, spec.split_seed)

    train = _take(raw.train_images, train_pos[tr], train_labels[tr])
    val = _take(raw.train_images, train_pos[va], train_labels[va])
    test = _take(test_images, test_pos[te], test_labels[te])
    fingerprint = splits.fingerprint(
        name=spec.name,
        classes=spec.classes,
        split_seed=spec.split_seed,
        val_fraction=spec.val_fraction,
        subset=spec.subset,
        eval_subset=spec.eval_subset,
        sizes=(len(train), len(val), len(test)),
        val_index=train_pos[va],
        test_index=test_pos[te],
        extra=extra,
    )
    return DataBundle(info=info, train=train, val=val, test=test, fingerprint=fingerprint)


def _take(images: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor) -> splits.Split:
    return splits.Split(images.index_select(0, positions).contiguous(), labels.contiguous())


def _read(spec: DataSpec) -> tuple[RawData, DataInfo, dict[str, Any]]:
    """The official sets, the data set's DataInfo (before class selection) and fingerprint extras."""
    if spec.name == "synthetic":
        size = spec.image_size or SYNTHETIC_SIZE
        channels, num_classes = spec.channels or 1, spec.num_classes or 10
        raw = make_synthetic(num_classes, channels, size, spec.synthetic_size)
        info = DataInfo(
            "synthetic",
            channels,
            size,
            num_classes,
            (0.5,) * channels,
            (0.5,) * channels,
            flip=False,  # prototypes are not mirror-symmetric: a flip would change the class
            crop_padding=max(1, size // 16),
            class_names=raw.class_names,
        )
        extra = {
            "image_size": size,
            "channels": channels,
            "num_classes": num_classes,
            "synthetic_size": spec.synthetic_size,
        }
        return raw, info, extra
    root = resolve_dataset_root(spec)
    if spec.name == "imagefolder":
        size = spec.image_size or IMAGEFOLDER_SIZE
        raw = read_imagefolder(root, size)
        names = raw.class_names or ()
        info = DataInfo(
            "imagefolder",
            3,
            size,
            len(names),
            (0.5,) * 3,
            (0.5,) * 3,
            flip=True,
            crop_padding=default_crop_padding(size),
            class_names=raw.class_names,
        )
        return raw, info, {"image_size": size}
    raw = read_torchvision(spec.name, root)
    info = replace(STANDARD_INFO[spec.name], class_names=raw.class_names)
    return raw, info, {}
