"""Stem / stages / head of every registered family, for transfer learning.

Transfer code freezes the stem and the first K stages and replaces the head; it must not know
each architecture's attribute names, so this module is the one place that does. Modules that
belong to none of the parts (MobileNetV3's `classifier.0` before the head Linear) are left to
the caller: they train unless everything but the head is frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torchvision.models import MobileNetV3, ResNet, ShuffleNetV2

from orchestrator.models.resnet import CifarResNet
from orchestrator.models.tiny import TinyNet


@dataclass
class ModelParts:
    stem: list[nn.Module]
    stages: list[nn.Module]
    head: nn.Module  # the classifier Linear
    head_name: str  # its dotted path in the (unwrapped) model, e.g. "fc" or "classifier.3"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside DDP / DataParallel / AveragedModel / torch.compile wrappers."""
    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel, AveragedModel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _has_stride(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def _cifar_parts(model: nn.Module) -> ModelParts:
    return ModelParts([model.stem], [model.layer1, model.layer2, model.layer3], model.fc, "fc")


def _resnet_parts(model: ResNet) -> ModelParts:
    stem = [model.conv1, model.bn1, model.relu, model.maxpool]
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    return ModelParts(stem, stages, model.fc, "fc")


def _mobilenet_parts(model: MobileNetV3) -> ModelParts:
    # features[0] is the stem conv; a stage is a run of blocks at one resolution, so a stride-2
    # block starts a new stage. The final 1x1 conv (features[-1]) joins the last stage.
    stages: list[list[nn.Module]] = []
    for block in list(model.features)[1:-1]:
        if not stages or _has_stride(block):
            stages.append([])
        stages[-1].append(block)
    stages[-1].append(model.features[-1])
    head = model.classifier[3]
    return ModelParts([model.features[0]], [nn.ModuleList(s) for s in stages], head, "classifier.3")


def _shufflenet_parts(model: ShuffleNetV2) -> ModelParts:
    stages = [model.stage2, model.stage3, nn.ModuleList([model.stage4, model.conv5])]
    return ModelParts([model.conv1, model.maxpool], stages, model.fc, "fc")


_PARTS: dict[type, Callable[[nn.Module], ModelParts]] = {
    CifarResNet: _cifar_parts,
    TinyNet: _cifar_parts,
    ResNet: _resnet_parts,
    MobileNetV3: _mobilenet_parts,
    ShuffleNetV2: _shufflenet_parts,
}


def model_parts(model: nn.Module) -> ModelParts:
    """Stem, stages (input to output) and head of a registered model (wrappers are unwrapped)."""
    model = unwrap_model(model)
    for cls, parts in _PARTS.items():
        if isinstance(model, cls):
            return parts(model)
    known = ", ".join(cls.__name__ for cls in _PARTS)
    raise ValueError(f"no stem/stages/head known for {type(model).__name__} (known: {known})")
