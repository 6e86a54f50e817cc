"""Batch augmentation and normalisation as tensor ops: no PIL, no per-sample Python loops.

`random_crop_flip` is torchvision's RandomCrop(padding=p) + RandomHorizontalFlip() applied to a
whole uint8 batch at once: zero-pad, then each sample gets its own crop offset (and flip), done
with two `gather`s. Zero padding happens on uint8 pixels, so padded pixels are black (0) before
normalisation, exactly as torchvision does it on images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """images: (B, C, H, W) on any device -> a new (B, C, H, W) tensor of the same dtype.

    The random numbers come from `generator` (a CPU generator), so the result depends only on its
    state, not on the device.
    """
    if padding <= 0 and not flip:
        return images
    b, c, h, w = images.shape
    p = max(padding, 0)
    padded = F.pad(images, (p, p, p, p)) if p else images  # (B, C, H+2p, W+2p), zeros
    oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    rows = oy[:, None] + torch.arange(h)  # (B, H): source row of each output row
    cols = ox[:, None] + torch.arange(w)  # (B, W)
    if flip:
        flipped = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    device = images.device
    rows, cols = rows.to(device, non_blocking=True), cols.to(device, non_blocking=True)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))  # (B, C, H, W+2p)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def normalizer(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """(scale, shift), each (1, C, 1, 1) float32: x_float = x_uint8 * scale - shift."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (1.0 / (255.0 * s)).to(device), (m / s).to(device)


def normalize(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std; keeps the memory format."""
    return images.float().mul_(scale).sub_(shift)
