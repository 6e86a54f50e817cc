"""A very small registered conv net for fast tests (the timm `test_*` model idea).

Same part structure as `CifarResNet` (stem, layer1..3, fc), so transfer/freezing code paths are
exercised exactly as for the real models, in milliseconds. ~4.5k parameters for 3x32x32 / 10.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from orchestrator.models.resnet import _init_weights


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyNet(nn.Module):
    """(B, C, H, W) -> stem (B, 8, H, W) -> layer1 (B, 8, H, W) -> layer2 (B, 16, H/2, W/2)
    -> layer3 (B, 16, H/4, W/4) -> pool (B, 16) -> fc (B, num_classes). BatchNorm everywhere, so
    tests see running statistics like the real models have."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, 8, 1)
        self.layer1 = _conv_bn_relu(8, 8, 1)
        self.layer2 = _conv_bn_relu(8, 16, 2)
        self.layer3 = _conv_bn_relu(16, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
