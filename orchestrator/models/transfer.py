"""Transfer learning: initialise a model from earlier weights and choose what trains.

`load_init_state` reads `model.init.source`; `apply_init` copies every tensor whose name and shape
fit, adapts the first conv to a different input-channel count, and leaves a head of a different
class count (or any head, with `reset_head`) freshly initialised; `freeze_for_transfer` sets
requires_grad and returns the parameters to optimise. Pitfall: freezing parameters does not freeze BatchNorm running
statistics, which `model.train()` would keep updating; call `set_frozen_bn_eval(model)` after
every `model.train()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from orchestrator.models.parts import model_parts, unwrap_model

if TYPE_CHECKING:  # config imports models.resnet, so a runtime import here would be circular
    from orchestrator.config import InitSpec

TORCHVISION_PREFIX = "torchvision:"
SNAPSHOT_FILE = "model.pt"
ACCEPTED_SOURCES = (
    "a checkpoint file (a state_dict, or a dict whose 'model' holds one), a snapshot directory "
    f"containing {SNAPSHOT_FILE}, or 'torchvision:<WeightsEnum>.<NAME>' "
    "(e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1)"
)
# Prefixes that wrappers add to state_dict keys: DDP/DataParallel/AveragedModel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def load_init_state(source: str) -> dict[str, Tensor]:
    """The state_dict named by `source` (see ACCEPTED_SOURCES), on CPU, wrapper prefixes removed."""
    if source.startswith(TORCHVISION_PREFIX):
        return _torchvision_state(source)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / SNAPSHOT_FILE).is_file():
            raise ValueError(
                f"model.init.source={source!r} is a directory without {SNAPSHOT_FILE}; "
                f"accepted: {ACCEPTED_SOURCES}"
            )
        path = path / SNAPSHOT_FILE
    elif not path.is_file():
        raise ValueError(
            f"model.init.source={source!r} does not exist; accepted: {ACCEPTED_SOURCES}"
        )
    try:
        # weights_only: a checkpoint is data; never run pickled code from it.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model.init.source={source!r}: cannot read {path}: {exc}") from exc
    return _state_dict_of(checkpoint, source)


def _torchvision_state(source: str) -> dict[str, Tensor]:
    import torchvision.models as tvm  # only this source form needs the weights registry

    name = source[len(TORCHVISION_PREFIX) :]
    try:
        weights = tvm.get_weight(name)
    except Exception as exc:
        raise ValueError(
            f"model.init.source={source!r}: unknown torchvision weights {name!r} ({exc}); "
            "use e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1"
        ) from exc
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:
        raise ValueError(
            f"model.init.source={source!r}: the torchvision weights could not be fetched ({exc}). "
            "They download from the internet on first use; without access, save them once "
            "elsewhere (torch.save(model.state_dict(), 'weights.pt')) and set model.init.source "
            "to that local checkpoint file"
        ) from exc
    return _state_dict_of(state, source)


def _state_dict_of(checkpoint: Any, source: str) -> dict[str, Tensor]:
    # Member checkpoints are dicts with "model" (and optimizer, epoch, ...); accept raw too.
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"model.init.source={source!r} holds {type(checkpoint).__name__}, not a state_dict"
        )
    state = {_strip_prefixes(str(k)): v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if not state:
        raise ValueError(
            f"model.init.source={source!r} holds no tensors; accepted: {ACCEPTED_SOURCES}"
        )
    return state


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def adapt_input_channels(weight: Tensor, in_channels: int) -> Tensor:
    """A conv weight (O, C, k, k) re-made for `in_channels` inputs: tiled when it is a multiple
    of C, else the channel mean broadcast; scaled by C/in_channels so that an image whose
    channels are all equal gives the same response as before (e.g. RGB -> grayscale = sum)."""
    source_channels = weight.shape[1]
    if in_channels % source_channels == 0:
        new = weight.repeat(1, in_channels // source_channels, 1, 1)
    else:
        new = weight.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1)
    return (new * (source_channels / in_channels)).contiguous()


def _first_conv_key(model: nn.Module) -> str | None:
    stem_ids = {id(m) for part in model_parts(model).stem for m in part.modules()}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and id(module) in stem_ids:
            return f"{name}.weight"
    return None


def apply_init(model: nn.Module, init: InitSpec) -> dict[str, Any]:
    """Load `init.source` into `model` in place.

    Returns {"loaded": number of tensors set, "adapted": first-conv keys re-made for the input
    channels, "skipped": source keys not used (unknown or shape mismatch, e.g. a head of another
    class count, which stays freshly initialised), "missing": model keys the source lacks}.
    Raises ValueError when nothing but the head fits (the source is another architecture).
    """
    model = unwrap_model(model)
    if init.source is None:
        raise ValueError(
            f"model.init.study={init.study!r} has not been resolved to a checkpoint: studies "
            "are resolved by `ensemble run` / `ensemble train-member` before training"
        )
    source = load_init_state(init.source)
    target = model.state_dict()
    head_prefix = model_parts(model).head_name + "."
    first_conv = _first_conv_key(model)

    new: dict[str, Tensor] = {}
    adapted, skipped = [], []
    for key, value in source.items():
        want = target.get(key)
        if want is None or (init.reset_head and key.startswith(head_prefix)):
            skipped.append(key)
        elif value.shape == want.shape:
            new[key] = value
        elif (
            key == first_conv
            and value.dim() == 4
            and (value.shape[0], value.shape[2:]) == (want.shape[0], want.shape[2:])
        ):
            new[key] = adapt_input_channels(value, want.shape[1])
            adapted.append(key)
        else:
            skipped.append(key)

    body = [
        k for k in new if not k.startswith(head_prefix) and not k.endswith("num_batches_tracked")
    ]
    if not body:
        raise ValueError(
            f"model.init.source={init.source!r}: no weights except the head fit this "
            f"{type(model).__name__} (wrong architecture?); checkpoint keys look like "
            f"{list(source)[:3]}, the model's like {list(target)[:3]}"
        )
    # strict=False: missing keys (e.g. a new head) keep their fresh initialisation.
    model.load_state_dict(new, strict=False)
    missing = [k for k in target if k not in new]
    return {"loaded": len(new), "adapted": adapted, "skipped": skipped, "missing": missing}


def freeze_for_transfer(model: nn.Module, init: InitSpec) -> list[nn.Parameter]:
    """Set requires_grad for `init.train` and return the parameters that still train.

    finetune: everything; linear_probe: only the head; freeze_stages: the stem and the first
    `init.freeze_stages` stages are frozen (0 freezes the stem alone), the rest trains.
    """
    model = unwrap_model(model)
    parts = model_parts(model)
    frozen: list[nn.Module]
    if init.train == "finetune":
        frozen = []
    elif init.train == "linear_probe":
        frozen = [model]
    elif init.train == "freeze_stages":
        k, n = init.freeze_stages, len(parts.stages)
        if k > n:
            raise ValueError(
                f"model.init.freeze_stages={k} is out of range: {type(model).__name__} has {n} "
                f"stages, so allowed values are 0..{n}"
            )
        frozen = [*parts.stem, *parts.stages[:k]]
    else:
        raise ValueError(
            f"model.init.train={init.train!r}; allowed: finetune, linear_probe, freeze_stages"
        )
    for p in model.parameters():
        p.requires_grad_(True)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    if init.train == "linear_probe":
        for p in parts.head.parameters():
            p.requires_grad_(True)
    set_frozen_bn_eval(model)
    return [p for p in model.parameters() if p.requires_grad]


def set_frozen_bn_eval(model: nn.Module) -> int:
    """Put BatchNorm layers whose parameters are all frozen into eval mode, so their running
    statistics stay those of the source. Call after every `model.train()` (which undoes it).
    BatchNorm without affine parameters cannot be told apart and is left alone. Returns how
    many layers were switched."""
    switched = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
                switched += 1
    return switched
