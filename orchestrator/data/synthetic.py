"""A small, learnable, deterministic data set for fast tests: no files, no network.

Each class has a fixed random prototype: smooth (random values on a coarse grid, bilinearly
upsampled) so that pad-and-crop shifts of a pixel keep it recognisable. An image is its class's
prototype plus Gaussian pixel noise, quantised to uint8. A tiny CNN separates the classes to high
accuracy in a few epochs; a linear model nearly does.

The data depends only on (num_classes, channels, image_size, size), never on data.split_seed or a
member's seed, so every member and every test run sees the same images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orchestrator.data.readers import RawData

SYNTHETIC_SEED = 1_234_567
# On the 0..1 scale. A tiny CNN (conv8 + linear) reaches 92-100% test accuracy after one epoch
# of 1024 images and ~99% after three; noisier data would make unit tests of training flaky.
NOISE_STD = 0.4


def make_synthetic(
    num_classes: int = 10, channels: int = 1, image_size: int = 16, size: int = 2048
) -> RawData:
    """`size` training images and `size // 4` test images, classes balanced and shuffled."""
    gen = torch.Generator().manual_seed(SYNTHETIC_SEED)
    coarse = max(2, image_size // 4)
    prototypes = torch.rand(num_classes, channels, coarse, coarse, generator=gen)
    prototypes = F.interpolate(
        prototypes, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    # Stretch each prototype to the full contrast range: upsampling shrinks it.
    low = prototypes.amin(dim=(1, 2, 3), keepdim=True)
    high = prototypes.amax(dim=(1, 2, 3), keepdim=True)
    # (0.15..0.85, so the noise is clipped less.)
    prototypes = 0.15 + 0.7 * (prototypes - low) / (high - low).clamp_min(1e-6)

    train_images, train_labels = _sample(
        prototypes, size, torch.Generator().manual_seed(SYNTHETIC_SEED + 1)
    )
    test_images, test_labels = _sample(
        prototypes, size // 4, torch.Generator().manual_seed(SYNTHETIC_SEED + 2)
    )
    names = tuple(f"class_{k}" for k in range(num_classes))
    return RawData(train_images, train_labels, test_images, test_labels, names)


def _sample(
    prototypes: torch.Tensor, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = prototypes.shape[0]
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    noise = torch.randn((n, *prototypes.shape[1:]), generator=gen) * NOISE_STD
    images = (prototypes[labels] + noise).clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return images.contiguous(), labels.to(torch.int64)
