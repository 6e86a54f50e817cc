"""CIFAR-style residual and plain networks (He et al. 2016, "Deep Residual Learning", Sec. 4.2).

Layout for an input of shape (B, C, H, W), width 1:

    stem    3x3 conv (16) + BN + ReLU                      -> (B, 16, H, W)
    layer1  n blocks at 16 channels                         -> (B, 16, H, W)
    layer2  n blocks; the first is a stride-2 3x3 conv      -> (B, 32, ceil(H/2), ceil(W/2))
    layer3  n blocks; the first is a stride-2 3x3 conv      -> (B, 64, ceil(H/4), ceil(W/4))
    pool    global average                                   -> (B, 64)
    fc      linear                                           -> (B, num_classes)

Basic blocks (two 3x3 convs) give depth 6n+2; bottleneck blocks (1x1, 3x3, 1x1 with expansion 4,
as in ResNet-164) give depth 9n+2. Basic blocks use the paper's option-A shortcut (stride-2
subsample + zero-padded channels) so it adds no parameters: that is what makes ResNet-20..110
match the paper's 0.27M..1.7M and makes `residual=False` (plain) have exactly the same
parameters. Bottleneck blocks project with a 1x1 conv when the shape changes, as in ResNet-164.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCKS = ("auto", "basic", "bottleneck")
# The paper uses bottlenecks for its deepest nets (164, 1001); below that, basic blocks.
AUTO_BOTTLENECK_FROM = 164


def _fits(depth: int, per_block: int) -> bool:
    # depth = per_block * n + 2 (stem conv + fc) with n >= 1 blocks per stage.
    return depth > 2 and (depth - 2) % per_block == 0


def resolve_block(depth: int, block: str) -> str | None:
    """The block type ("basic" | "bottleneck") that builds `depth`, or None if none can.

    basic needs depth 6n+2, bottleneck 9n+2 (n >= 1). "auto" prefers bottleneck from depth 164
    on (the paper's ResNet-164), else basic, else bottleneck (e.g. 29, 47).
    """
    basic, bottleneck = _fits(depth, 6), _fits(depth, 9)
    if block == "basic":
        return "basic" if basic else None
    if block == "bottleneck":
        return "bottleneck" if bottleneck else None
    if block == "auto":
        if bottleneck and depth >= AUTO_BOTTLENECK_FROM:
            return "bottleneck"
        if basic:
            return "basic"
        return "bottleneck" if bottleneck else None
    return None


def valid_depths_message(block: str) -> str:
    """Names the depths that `block` allows, for error messages."""
    basic = "basic blocks need depth 6n+2 (20, 32, 44, 56, 110, ...)"
    bottleneck = "bottleneck blocks need depth 9n+2 (29, 47, 110, 164, ...)"
    if block == "basic":
        return basic
    if block == "bottleneck":
        return bottleneck
    return f"{basic}; {bottleneck}"


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class BasicBlock(nn.Module):
    """Two 3x3 convs; (B, in, H, W) -> (B, out, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes  # zero channels the option-A shortcut appends

    def shortcut(self, x: Tensor) -> Tensor:
        # Option A: parameter-free. Subsampling by slicing matches the stride-2 conv's output
        # size ceil(H/2) for odd H too.
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4; (B, in, H, W) -> (B, 4*planes, ...)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True):
        super().__init__()
        out_planes = planes * self.expansion
        self.residual = residual
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample: nn.Module | None = None
        if residual and (stride != 1 or in_planes != out_planes):
            # Projection shortcut (option B) where shapes change; plain nets have none at all.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)


class CifarResNet(nn.Module):
    """ResNet / plain net for small images; see the module docstring for shapes.

    Input (B, in_channels, H, W) with H, W >= 8 (any size: the pool is adaptive);
    output logits (B, num_classes). `residual=False` keeps every layer but drops the shortcuts
    (the paper's "plain" baseline for the degradation experiment).
    """

    def __init__(
        self,
        depth: int,
        block: str = "auto",
        width: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 10,
        residual: bool = True,
    ):
        super().__init__()
        resolved = resolve_block(depth, block)
        if resolved is None:
            raise ValueError(
                f"depth {depth} is not valid with block={block}: {valid_depths_message(block)}"
            )
        block_cls = BasicBlock if resolved == "basic" else Bottleneck
        per_block = 6 if resolved == "basic" else 9
        n = (depth - 2) // per_block
        self.depth, self.block, self.residual = depth, resolved, residual

        stem_width = _channels(16, width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        in_planes = stem_width
        stages = []
        for i, base in enumerate((16, 32, 64)):
            planes = _channels(base, width)
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(in_planes, planes, stride, residual))
                in_planes = planes * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.num_features = in_planes
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, 16w, H, W)
        x = self.layer1(x)  # (B, 16w*e, H, W)
        x = self.layer2(x)  # (B, 32w*e, H/2, W/2)
        x = self.layer3(x)  # (B, 64w*e, H/4, W/4)
        x = torch.flatten(self.pool(x), 1)  # (B, 64w*e)
        return self.fc(x)  # (B, num_classes)


def _init_weights(model: nn.Module) -> None:
    # Kaiming (fan_out, ReLU) as in the paper's reference implementation; BN starts as identity.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
