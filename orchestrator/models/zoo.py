"""Model registry: `create_model(spec, ...)` builds any `ModelSpec.name` for the data's shape.

Families:
- "resnet" / "plain": `CifarResNet` (spec.depth, spec.block, spec.width), with / without shortcuts.
- "tiny": `TinyNet`, a ~4.5k-parameter conv net for fast tests.
- torchvision "resnet18", "resnet50", "resnet101", "mobilenet_v3_small", "mobilenet_v3_large",
  "shufflenet_v2_x1_0", always built with weights=None (pretrained weights come through
  `model.init`, see transfer.py). They are adapted to the data: the first conv takes
  `in_channels`; for small images (side <= 64) the stem is stride 1 and the resnets/shufflenet
  lose their max-pool (the usual CIFAR adaptation: otherwise 32x32 is 1x1 by the last stage);
  the head is sized for `num_classes`. `spec.width` is the MobileNets' width_mult and is ignored
  by the torchvision resnets and shufflenet (their width is fixed by the name).
  Pitfall: the small-image resnet stem is a 3x3 conv, so ImageNet `conv1` weights (7x7) are not
  loadable into it; transfer.py reports that key as skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torchvision.models as tvm
from torch import nn

from orchestrator.models.parts import ModelParts, model_parts
from orchestrator.models.resnet import CifarResNet
from orchestrator.models.tiny import TinyNet

if TYPE_CHECKING:  # config imports models.resnet, so a runtime import here would be circular
    from orchestrator.config import ModelSpec

SMALL_IMAGE = 64  # images up to this side get the stride-1 stem
MOBILENET_BN_MOMENTUM = 0.1  # PyTorch's default; see _torchvision_mobilenet

Builder = Callable[["ModelSpec", int, int, int], nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return add


def create_model(
    spec: ModelSpec, *, in_channels: int, image_size: int, num_classes: int
) -> nn.Module:
    """A freshly initialised model; input (B, in_channels, image_size, image_size) ->
    logits (B, num_classes)."""
    builder = _REGISTRY.get(spec.name)
    if builder is None:
        raise ValueError(f"model.name={spec.name!r} is unknown; registered: {', '.join(_REGISTRY)}")
    return builder(spec, in_channels, image_size, num_classes)


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable and frozen."""
    return sum(p.numel() for p in model.parameters())


@register_model("resnet")
def _resnet(spec: ModelSpec, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    return CifarResNet(spec.depth, spec.block, spec.width, in_channels, num_classes, residual=True)


@register_model("plain")
def _plain(spec: ModelSpec, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    return CifarResNet(spec.depth, spec.block, spec.width, in_channels, num_classes, residual=False)


@register_model("tiny")
def _tiny(spec: ModelSpec, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    return TinyNet(in_channels, num_classes)


def _new_conv(
    old: nn.Conv2d, in_channels: int, kernel: int, stride: int, padding: int
) -> nn.Conv2d:
    bias = old.bias is not None
    conv = nn.Conv2d(in_channels, old.out_channels, kernel, stride, padding, bias=bias)
    # torchvision's own init for these convs; nn.Conv2d's default would differ.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int, kernel: int, stride: int) -> nn.Conv2d:
    """`conv` itself when it already fits (so its shape stays ImageNet-checkpoint compatible),
    else a fresh conv with the same output channels."""
    if (in_channels, kernel, stride) == (conv.in_channels, conv.kernel_size[0], conv.stride[0]):
        return conv
    return _new_conv(conv, in_channels, kernel, stride, padding=kernel // 2)


def _torchvision_resnet(arch: str) -> Builder:
    def build(spec: ModelSpec, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
        model = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        small = image_size <= SMALL_IMAGE
        # CIFAR adaptation: 3x3 stride-1 stem, no max-pool (32x32 keeps 4x4 at layer4).
        kernel, stride = (3, 1) if small else (7, 2)
        model.conv1 = _adapt_first_conv(model.conv1, in_channels, kernel, stride)
        if small:
            model.maxpool = nn.Identity()
        return model

    return build


def _torchvision_mobilenet(arch: str) -> Builder:
    def build(spec: ModelSpec, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
        model = getattr(tvm, arch)(weights=None, num_classes=num_classes, width_mult=spec.width)
        stem = model.features[0]
        stem[0] = _adapt_first_conv(stem[0], in_channels, 3, 1 if image_size <= SMALL_IMAGE else 2)
        # torchvision builds MobileNetV3 with BatchNorm momentum 0.01, tuned for ImageNet's
        # hundreds of thousands of steps. After the hundred-odd steps of a small-data run the
        # running statistics still lag far behind the weights, and every eval-mode snapshot
        # is at chance at 84% training accuracy (Fashion-MNIST, 1000 images, 4 epochs of
        # batch 32: 19% vs 86% val with PyTorch's default 0.1, which we use).
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = MOBILENET_BN_MOMENTUM
        return model

    return build


@register_model("shufflenet_v2_x1_0")
def _shufflenet(spec: ModelSpec, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    model = tvm.shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    small = image_size <= SMALL_IMAGE
    model.conv1[0] = _adapt_first_conv(model.conv1[0], in_channels, 3, 1 if small else 2)
    if small:
        model.maxpool = nn.Identity()
    return model


for _arch in ("resnet18", "resnet50", "resnet101"):
    register_model(_arch)(_torchvision_resnet(_arch))
for _arch in ("mobilenet_v3_small", "mobilenet_v3_large"):
    register_model(_arch)(_torchvision_mobilenet(_arch))


# The catalogue `ensemble models` prints: display name -> (spec fields, description).
CATALOGUE: dict[str, tuple[dict, str]] = {
    **{
        f"resnet{d}": (dict(name="resnet", depth=d, block="basic"), f"CIFAR ResNet-{d}, basic blocks, option-A shortcuts")
        for d in (20, 32, 44, 56, 110)
    },
    "resnet164": (dict(name="resnet", depth=164, block="bottleneck"), "CIFAR ResNet-164, bottleneck blocks"),
    **{
        f"plain{d}": (dict(name="plain", depth=d, block="basic"), f"plain {d}-layer net (ResNet-{d} without shortcuts)")
        for d in (20, 32, 44, 56, 110)
    },
    "tiny": (dict(name="tiny"), "4-conv test net with BatchNorm (fast tests)"),
    "resnet18": (dict(name="resnet18"), "torchvision ResNet-18 (basic blocks)"),
    "resnet50": (dict(name="resnet50"), "torchvision ResNet-50 (bottleneck), accuracy"),
    "resnet101": (dict(name="resnet101"), "torchvision ResNet-101 (bottleneck), accuracy"),
    "mobilenet_v3_small": (dict(name="mobilenet_v3_small"), "torchvision MobileNetV3-Small, efficiency"),
    "mobilenet_v3_large": (dict(name="mobilenet_v3_large"), "torchvision MobileNetV3-Large, efficiency"),
    "shufflenet_v2_x1_0": (dict(name="shufflenet_v2_x1_0"), "torchvision ShuffleNetV2 1.0x, efficiency"),
}  # fmt: skip


def list_models(
    *, in_channels: int, image_size: int, num_classes: int
) -> list[tuple[str, int, str]]:
    """(display name, parameter count for this data shape, description) for every catalogue
    entry. Builds each model once on CPU without weights (a few seconds in all)."""
    from orchestrator.config import ModelSpec

    rows = []
    for name, (fields, description) in CATALOGUE.items():
        model = create_model(
            ModelSpec(**fields),
            in_channels=in_channels,
            image_size=image_size,
            num_classes=num_classes,
        )
        rows.append((name, count_parameters(model), description))
    return rows


__all__ = [
    "ModelParts",
    "count_parameters",
    "create_model",
    "list_models",
    "model_parts",
    "register_model",
]
