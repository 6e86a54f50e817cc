"""Read a data set's official splits into memory as uint8 tensors, with torchvision's classes.

Everything is held in memory: Fashion-MNIST is 47 MB, CIFAR 180 MB; an image folder is resized
once on load. Images are (N, C, H, W) uint8, labels (N,) int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from orchestrator.data.errors import DataNotFoundError
from orchestrator.data.sources import SOURCES


@dataclass
class RawData:
    """The official splits before class selection, validation split and subsets."""

    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor | None  # None: no official test split (imagefolder without test/)
    test_labels: torch.Tensor | None
    class_names: tuple[str, ...] | None


def read_torchvision(name: str, root: Path) -> RawData:
    """fashion-mnist, mnist, cifar10 or cifar100 from a root that `resolve_dataset_root` gave."""
    cls = SOURCES[name].dataset_class()
    try:
        train = cls(root=str(root), train=True, download=False)
        test = cls(root=str(root), train=False, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise DataNotFoundError(f"{name}: cannot read the files under {root}: {exc}") from exc
    train_images, train_labels = _as_tensors(train.data, train.targets)
    test_images, test_labels = _as_tensors(test.data, test.targets)
    return RawData(train_images, train_labels, test_images, test_labels, tuple(train.classes))


def _as_tensors(data, targets) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(data)
    if images.ndim == 3:  # MNIST-like: (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR: numpy (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(targets, dtype=torch.int64)
    return images.to(torch.uint8).contiguous(), labels.contiguous()


def read_imagefolder(root: Path, image_size: int) -> RawData:
    """An ImageFolder tree, each image converted to RGB and resized to image_size x image_size.

    Layout: `root/train/<class>/...` and `root/test/<class>/...` when `train/` exists (test/ is
    optional), else `root/<class>/...` (then there is no official test split and `load_data`
    carves one out of it with data.split_seed). The shorter side is resized to image_size and the
    centre cropped, so the aspect ratio is kept. Test classes are matched to train classes by name.
    """
    from torchvision import datasets, transforms

    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = root / "test" if (root / "test").is_dir() else None
    if train_dir == root and test_dir is not None:
        raise DataNotFoundError(
            f"data.dir={root} has a test/ folder but no train/ folder: put the training class "
            "folders under train/ (or remove test/ and a test split is carved out)"
        )
    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.PILToTensor(),
        ]
    )
    train = _image_folder(datasets.ImageFolder, train_dir, transform)
    images, labels = _decode_all(train, image_size)
    test_images = test_labels = None
    if test_dir is not None:
        test = _image_folder(datasets.ImageFolder, test_dir, transform)
        unknown = sorted(set(test.classes) - set(train.classes))
        if unknown:
            raise DataNotFoundError(
                f"data.dir={root}: test/ has classes that train/ lacks: {', '.join(unknown)}"
            )
        test_images, local = _decode_all(test, image_size)
        to_train = torch.tensor([train.class_to_idx[c] for c in test.classes], dtype=torch.int64)
        test_labels = to_train[local]
    return RawData(images, labels, test_images, test_labels, tuple(train.classes))


def _image_folder(cls, folder: Path, transform):
    try:
        return cls(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataNotFoundError(
            f"data.dir: no images in class folders under {folder}: {exc}"
        ) from exc


def _decode_all(dataset, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Decoding files is inherently per image; it happens once, at load time.
    n = len(dataset)
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    for i in range(n):
        images[i] = dataset[i][0]
    labels = torch.tensor(dataset.targets, dtype=torch.int64)
    return images, labels
