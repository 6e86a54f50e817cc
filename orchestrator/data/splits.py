"""Seeded splits shared by every member of a study, and their fingerprint.

All randomness here comes from data.split_seed, never from a member's seed: members of one
study must validate on the very same images, or their cached predictions cannot be combined.
Indices are always positions in the official training / test set, so the fingerprint names
exactly which images a split holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from orchestrator.data.errors import DataSpecError
from orchestrator.data.info import DataInfo


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), contiguous
    labels: torch.Tensor  # int64 (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"Split.images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError("Split.labels must be int64 (N,) matching the images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataBundle:
    info: DataInfo
    train: Split
    val: Split
    test: Split
    fingerprint: str  # see `fingerprint`; equal for every member of a study


def derived_seed(split_seed: int, purpose: str) -> int:
    """A seed for one use of split_seed (e.g. "test-subset"), independent of the others."""
    digest = hashlib.sha256(f"{split_seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def select_classes(
    labels: torch.Tensor, classes: list[int] | None, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept positions, new labels): only `classes`, relabelled 0..k-1 in the given order."""
    if classes is None:
        return torch.arange(labels.shape[0]), labels
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise DataSpecError(
            f"data.classes: {bad} out of range; this data set has classes 0..{num_classes - 1}"
        )
    if len(set(classes)) != len(classes):
        raise DataSpecError(f"data.classes: {classes} lists a class twice")
    if not classes:
        raise DataSpecError("data.classes: must not be empty")
    mapping = torch.full((num_classes,), -1, dtype=torch.int64)
    mapping[torch.tensor(classes)] = torch.arange(len(classes))
    new = mapping[labels]
    kept = torch.nonzero(new >= 0).flatten()
    return kept, new[kept]


def train_val_indices(
    n: int, val_fraction: float, split_seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) positions: val = the first round(val_fraction * n) of a seeded permutation."""
    n_val = round(val_fraction * n)
    if n_val < 1 or n_val >= n:
        raise DataSpecError(
            f"data.val_fraction={val_fraction} of {n} training images leaves an empty "
            f"{'validation' if n_val < 1 else 'training'} split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return perm[n_val:], perm[:n_val]


def carve_test(n: int, fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, test) positions for data without an official test split (imagefolder without test/).

    test = the first round(fraction * n) of a permutation seeded from split_seed (a stream
    separate from the train/val permutation), sorted; rest keeps its original order.
    """
    n_test = round(fraction * n)
    if n_test < 1 or n_test >= n:
        raise DataSpecError(f"cannot carve a test split of fraction {fraction} from {n} images")
    perm = torch.randperm(
        n, generator=torch.Generator().manual_seed(derived_seed(split_seed, "test-carve"))
    )
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def test_subset(n: int, eval_subset: int | None, split_seed: int) -> torch.Tensor:
    """All n test positions, or a seeded random (so class-mixed) eval_subset of them, sorted."""
    if eval_subset is None or eval_subset >= n:
        return torch.arange(n)
    perm = torch.randperm(
        n, generator=torch.Generator().manual_seed(derived_seed(split_seed, "test-subset"))
    )
    return perm[:eval_subset].sort().values


def _index_digest(index: torch.Tensor) -> str:
    data = index.to(torch.int64).numpy().astype("<i8").tobytes()
    return hashlib.sha256(data).hexdigest()


def fingerprint(
    *,
    name: str,
    classes: list[int] | None,
    split_seed: int,
    val_fraction: float,
    subset: int | None,
    eval_subset: int | None,
    sizes: tuple[int, int, int],
    val_index: torch.Tensor,
    test_index: torch.Tensor,
    extra: dict[str, Any] | None = None,
) -> str:
    """A stable sha256 hex digest of what decides the split (never paths or member seeds).

    val_index / test_index are positions in the official train / test set. `extra` holds what
    defines generated or resized data (image_size, synthetic parameters).
    """
    payload = {
        "name": name,
        "classes": classes,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "subset": subset,
        "eval_subset": eval_subset,
        "sizes": list(sizes),
        "val_index": _index_digest(val_index),
        "test_size": int(test_index.numel()),
        "test_index": _index_digest(test_index),
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
