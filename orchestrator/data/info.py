"""What a model and a loader need to know about a data set: shape, classes, normalisation.

Standard values are the usual per-channel training-set statistics; imagefolder and synthetic data
compute theirs from their training images (`channel_stats`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DataInfo:
    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    flip: (
        bool  # horizontal flip is a valid augmentation (False for mnist: digits are not symmetric)
    )
    crop_padding: int  # pad-and-random-crop padding in pixels (4 for 28/32 px images; 0 = no crop)
    class_names: tuple[str, ...] | None = None


# Fixed facts of the torchvision data sets (image_size and channels are what the files hold).
STANDARD_INFO: dict[str, DataInfo] = {
    "fashion-mnist": DataInfo("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,), True, 4),
    "mnist": DataInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,), False, 4),
    "cifar10": DataInfo(
        "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 4
    ),
    "cifar100": DataInfo(
        "cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 4
    ),
}


def default_crop_padding(image_size: int) -> int:
    """4 px for 28-32 px images, scaled with the side (1/8 of it, at least 1)."""
    return max(1, round(image_size / 8))


def channel_stats(
    images: torch.Tensor, chunk: int = 8192
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of uint8 images (N, C, H, W), in chunks.

    Chunked float64 sums so a large image folder never needs a full float copy in memory.
    Returns 0.5 / 0.5 per channel when there are no images (or a constant channel's std of 0).
    """
    n, c = images.shape[0], images.shape[1]
    if n == 0:
        return (0.5,) * c, (0.5,) * c
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        part = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    std = torch.where(std > 1e-6, std, torch.full_like(std, 0.5))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)
