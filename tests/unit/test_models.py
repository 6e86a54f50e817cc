"""CIFAR ResNets (He et al. 2016, Sec. 4.2), the model registry and its parts."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from orchestrator.config import MODEL_NAMES, ModelSpec
from orchestrator.models import count_parameters, create_model, list_models, model_parts
from orchestrator.models.resnet import CifarResNet, resolve_block, valid_depths_message

# Option-A (parameter-free shortcut) counts for 3x32x32 inputs and 10 classes.
OPTION_A_COUNTS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}
PAPER_COUNTS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}  # Table 6


def build(name: str, c: int = 3, size: int = 32, classes: int = 10, **fields) -> nn.Module:
    spec = ModelSpec(name=name, **fields)
    return create_model(spec, in_channels=c, image_size=size, num_classes=classes)


@pytest.mark.parametrize("depth", sorted(PAPER_COUNTS))
def test_cifar_resnet_param_counts_match_paper(depth):
    n = count_parameters(build("resnet", depth=depth))
    assert n == OPTION_A_COUNTS[depth]
    assert abs(n - PAPER_COUNTS[depth]) / PAPER_COUNTS[depth] < 0.02


def test_resnet164_is_bottleneck_with_about_1_7m_params():
    model = build("resnet", depth=164)
    assert model.block == "bottleneck"
    assert abs(count_parameters(model) - 1.7e6) / 1.7e6 < 0.02
    assert model.fc.in_features == 256  # 64 * expansion 4


SHAPES = [(1, 28, 10), (3, 32, 10), (3, 16, 5), (2, 96, 7)]  # (channels, side, classes)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("c", "size", "classes"), SHAPES)
def test_forward_shapes_every_registered_model(name, c, size, classes):
    model = build(name, c, size, classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, c, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_forward_shape_smallest_input_and_bottleneck_resnet():
    model = build("resnet", 1, 8, 3, depth=29).eval()  # 29 = 9*3+2 -> bottleneck
    assert model.block == "bottleneck"
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_plain_has_no_shortcuts_same_params_but_different_output():
    torch.manual_seed(0)
    resnet = build("resnet", depth=20).eval()
    plain = build("plain", depth=20).eval()
    assert count_parameters(plain) == count_parameters(resnet)  # option A adds no parameters
    plain.load_state_dict(resnet.state_dict())  # identical layers, identical names
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), resnet(x))
    # Plain bottlenecks drop even the projection shortcuts.
    assert not any("downsample" in k for k in build("plain", depth=29).state_dict())
    assert any("downsample" in k for k in build("resnet", depth=29).state_dict())


@pytest.mark.parametrize(("depth", "expansion"), [(20, 1), (29, 4)])
@pytest.mark.parametrize("size", [32, 9])
def test_stride2_downsampling_halves_spatial_size_and_doubles_channels(depth, expansion, size):
    model = CifarResNet(depth).eval()
    shapes = {}
    for name in ("layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, o.shape)
        )
    model(torch.randn(2, 3, size, size))
    half, quarter = (size + 1) // 2, (size + 3) // 4  # stride-2 3x3 conv, padding 1: ceil
    assert shapes["layer1"] == (2, 16 * expansion, size, size)
    assert shapes["layer2"] == (2, 32 * expansion, half, half)
    assert shapes["layer3"] == (2, 64 * expansion, quarter, quarter)
    first = model.layer2[0]
    conv = first.conv1 if expansion == 1 else first.conv2  # bottleneck strides in its 3x3
    assert conv.stride == (2, 2) and conv.kernel_size == (3, 3)


@pytest.mark.parametrize(
    ("depth", "block", "expected"),
    [
        (20, "auto", "basic"),
        (110, "auto", "basic"),
        (164, "auto", "bottleneck"),
        (29, "auto", "bottleneck"),
        (164, "basic", "basic"),
        (32, "bottleneck", None),
        (47, "basic", None),
        (21, "auto", None),
        (2, "auto", None),
    ],
)
def test_resolve_block(depth, block, expected):
    assert resolve_block(depth, block) == expected


def test_invalid_depth_is_rejected_with_the_valid_depths():
    assert resolve_block(21, "auto") is None
    message = valid_depths_message("auto")
    assert "6n+2" in message and "20, 32, 44, 56, 110" in message
    assert "9n+2" in message and "164" in message
    assert "9n+2" not in valid_depths_message("basic")
    with pytest.raises(ValidationError, match="6n\\+2"):
        ModelSpec(name="resnet", depth=21)
    with pytest.raises(ValueError, match="depth 21"):
        CifarResNet(21)


@pytest.mark.parametrize("name", ["resnet", "plain", "tiny", "resnet18", "mobilenet_v3_small"])
def test_channels_last_forward_matches_contiguous(name):
    model = build(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_width_multiplier_scales_channels():
    assert build("resnet", width=2.0).stem[0].out_channels == 32
    assert build("resnet", width=0.01).stem[0].out_channels == 1  # rounded, at least 1
    small = count_parameters(build("mobilenet_v3_small", width=0.5))
    assert small < count_parameters(build("mobilenet_v3_small"))


def test_small_images_get_stride1_stem_without_maxpool():
    small, large = build("resnet18", size=32), build("resnet18", size=224)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    assert large.conv1.stride == (2, 2) and isinstance(large.maxpool, nn.MaxPool2d)
    assert build("mobilenet_v3_large", 1, 28).features[0][0].stride == (1, 1)
    assert build("shufflenet_v2_x1_0", 1, 28).conv1[0].in_channels == 1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_parts_cover_stem_stages_and_head(name):
    model = build(name, 1, 28, 7)
    parts = model_parts(model)
    assert model.get_submodule(parts.head_name) is parts.head
    assert isinstance(parts.head, nn.Linear) and parts.head.out_features == 7
    assert parts.stem and len(parts.stages) >= 3
    groups = [parts.stem, *([s] for s in parts.stages), [parts.head]]
    ids = [{id(p) for m in g for p in m.parameters()} for g in groups]
    assert all(ids), "every part has parameters"
    assert sum(map(len, ids)) == len(set().union(*ids)), "parts do not overlap"


def test_count_parameters_includes_frozen():
    model = build("tiny")
    before = count_parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == before < 10_000


def test_list_models_names_counts_and_descriptions():
    rows = list_models(in_channels=3, image_size=32, num_classes=10)
    names = [name for name, _, _ in rows]
    assert names[:6] == ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet164"]
    assert {"plain20", "plain110", "tiny", "resnet50", "resnet101"} <= set(names)
    assert {"mobilenet_v3_small", "mobilenet_v3_large", "shufflenet_v2_x1_0"} <= set(names)
    counts = {name: n for name, n, _ in rows}
    assert counts["resnet20"] == counts["plain20"] == OPTION_A_COUNTS[20]
    assert all(description for _, _, description in rows)


def test_unknown_model_name_is_rejected():
    spec = ModelSpec.model_construct(name="vgg16", depth=20, block="auto", width=1.0)
    with pytest.raises(ValueError, match="registered"):
        create_model(spec, in_channels=3, image_size=32, num_classes=10)
