"""Transfer learning: loading `model.init.source`, head replacement, freezing."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from orchestrator.config import InitSpec, ModelSpec
from orchestrator.models import apply_init, create_model, freeze_for_transfer, model_parts
from orchestrator.models.transfer import load_init_state, set_frozen_bn_eval


def build(name: str = "tiny", classes: int = 10, c: int = 3, **fields) -> nn.Module:
    spec = ModelSpec(name=name, **fields)
    return create_model(spec, in_channels=c, image_size=16, num_classes=classes)


def train_a_little(model: nn.Module, params, steps: int = 3, classes: int = 5) -> None:
    # Momentum and weight decay would move any parameter handed to the optimizer even at
    # zero gradient, so this also checks that only trainable parameters are returned.
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        model.train()
        set_frozen_bn_eval(model)
        x = torch.randn(4, 3, 16, 16, generator=gen)
        y = torch.randint(0, classes, (4,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.fixture
def source_model() -> nn.Module:
    """A 10-class tiny model whose weights and BN statistics differ from a fresh one."""
    torch.manual_seed(1)
    model = build(classes=10)
    train_a_little(model, model.parameters(), classes=10)
    return model


@pytest.fixture
def checkpoint(tmp_path, source_model) -> str:
    path = tmp_path / "source.pt"
    torch.save(source_model.state_dict(), path)
    return str(path)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_body_equal(model: nn.Module, source: nn.Module) -> None:
    src = source.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, src[key]), key


def test_init_from_checkpoint_replaces_head_keeps_other_weights(checkpoint, source_model):
    model = build(classes=5)
    summary = apply_init(model, InitSpec(source=checkpoint))
    assert_body_equal(model, source_model)
    assert model.fc.out_features == 5
    assert set(summary["skipped"]) == {"fc.weight", "fc.bias"}
    assert summary["loaded"] == len(source_model.state_dict()) - 2


def test_init_from_snapshot_dir_with_model_pt(tmp_path, source_model):
    snap = tmp_path / "snapshots" / "3"
    snap.mkdir(parents=True)
    torch.save({"model": source_model.state_dict(), "epoch": 3}, snap / "model.pt")
    model = build(classes=5)
    apply_init(model, InitSpec(source=str(snap)))
    assert_body_equal(model, source_model)


def test_init_from_checkpoint_dict_with_model_key(tmp_path, source_model):
    path = tmp_path / "ckpt.pt"
    # A member checkpoint: model (DDP-wrapped keys here) plus optimizer state and metadata.
    state = {f"module.{k}": v for k, v in source_model.state_dict().items()}
    torch.save({"model": state, "optimizer": {"state": {}}, "epoch": 7, "spec": {"a": 1}}, path)
    model = build(classes=5)
    apply_init(model, InitSpec(source=str(path)))
    assert_body_equal(model, source_model)


def test_init_same_class_count_loads_head_too(checkpoint, source_model):
    model = build(classes=10)
    summary = apply_init(model, InitSpec(source=checkpoint))
    assert summary["skipped"] == [] and summary["missing"] == []
    assert torch.equal(model.fc.weight, source_model.fc.weight)


def test_reset_head_keeps_a_fresh_head_even_when_its_shape_fits(checkpoint, source_model):
    # Source and target both have 10 classes, but other ones: the head must not be reused.
    torch.manual_seed(5)
    fresh = build(classes=10)
    torch.manual_seed(5)
    model = build(classes=10)
    summary = apply_init(model, InitSpec(source=checkpoint, reset_head=True))
    assert_body_equal(model, source_model)
    assert torch.equal(model.fc.weight, fresh.fc.weight)
    assert not torch.equal(model.fc.weight, source_model.fc.weight)
    assert set(summary["skipped"]) == {"fc.weight", "fc.bias"}


def test_disabled_init_is_the_from_scratch_arm(checkpoint):
    spec = ModelSpec(name="tiny", init=InitSpec(source=checkpoint, enabled=False))
    assert spec.transfer is None
    assert ModelSpec(name="tiny", init=InitSpec(source=checkpoint)).transfer.source == checkpoint


def test_unresolved_study_init_is_refused_by_apply_init():
    with pytest.raises(ValueError, match="model.init.study='runs/src' has not been resolved"):
        apply_init(build(classes=5), InitSpec(study="runs/src"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of source"),
        ({"source": "a.pt", "study": "runs/src"}, "exactly one of source"),
        ({"source": "a.pt", "study_name": "src"}, "study_name is only used with"),
        ({"study": "runs/src", "weights": "best"}, "weights"),
    ],
)
def test_init_spec_needs_exactly_one_source(fields, message):
    with pytest.raises(ValueError, match=message):
        InitSpec(**fields)


def test_init_resnet20_into_5_classes(tmp_path):
    torch.manual_seed(0)
    source = build("resnet", depth=20)
    torch.save({"model": source.state_dict()}, tmp_path / "r20.pt")
    model = build("resnet", classes=5, depth=20)
    apply_init(model, InitSpec(source=str(tmp_path / "r20.pt")))
    assert_body_equal(model, source)


def test_first_conv_adapted_to_input_channels(checkpoint, source_model):
    gray = build(classes=5, c=1)
    summary = apply_init(gray, InitSpec(source=checkpoint))
    assert summary["adapted"] == ["stem.0.weight"]
    # Summing over RGB keeps the response to a gray image (R = G = B) unchanged.
    expected = source_model.stem[0].weight.sum(dim=1, keepdim=True)
    assert torch.allclose(gray.stem[0].weight, expected)
    six = build(classes=5, c=6)
    apply_init(six, InitSpec(source=checkpoint))
    assert torch.allclose(six.stem[0].weight[:, 3:] * 2, source_model.stem[0].weight)


def test_wrong_architecture_raises_naming_the_source(tmp_path):
    path = tmp_path / "r20.pt"
    torch.save(build("resnet", depth=20).state_dict(), path)
    with pytest.raises(ValueError, match="wrong architecture") as err:
        apply_init(build(classes=5), InitSpec(source=str(path)))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("kind", ["missing_file", "dir_without_model_pt", "not_a_state_dict"])
def test_bad_source_gives_value_error_naming_model_init_source(tmp_path, kind):
    source = tmp_path / "nope.pt"
    if kind == "dir_without_model_pt":
        source = tmp_path
    elif kind == "not_a_state_dict":
        torch.save([1, 2, 3], source)
    with pytest.raises(ValueError, match="model.init.source"):
        apply_init(build(), InitSpec(source=str(source)))


def test_unknown_torchvision_weights_give_value_error():
    with pytest.raises(ValueError, match="model.init.source.*unknown torchvision weights"):
        load_init_state("torchvision:NoSuch_Weights.IMAGENET1K_V1")


def test_unfetchable_torchvision_weights_suggest_a_local_checkpoint(monkeypatch):
    # No network in tests: make the download fail the way an offline machine does.
    weights = tvm.ResNet18_Weights.IMAGENET1K_V1

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(type(weights), "get_state_dict", offline)
    with pytest.raises(ValueError, match="could not be fetched.*local checkpoint"):
        load_init_state("torchvision:ResNet18_Weights.IMAGENET1K_V1")


def test_linear_probe_trains_only_the_head(checkpoint):
    model = build(classes=5)
    apply_init(model, InitSpec(source=checkpoint))
    params = freeze_for_transfer(model, InitSpec(source=checkpoint, train="linear_probe"))
    assert {id(p) for p in params} == {id(model.fc.weight), id(model.fc.bias)}
    before = snapshot(model)
    train_a_little(model, params)
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("fc."):
            assert not torch.equal(after[key], value), f"head {key} did not train"
        else:  # parameters and BN running_mean/var/num_batches_tracked alike
            assert torch.equal(after[key], value), f"frozen {key} changed"


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_freeze_stages_k_freezes_stem_and_first_k_stages(checkpoint, k):
    model = build(classes=5)
    apply_init(model, InitSpec(source=checkpoint))
    freeze = InitSpec(source=checkpoint, train="freeze_stages", freeze_stages=k)
    params = freeze_for_transfer(model, freeze)
    before = snapshot(model)
    train_a_little(model, params)
    after = model.state_dict()
    frozen = ("stem", "layer1", "layer2", "layer3")[: k + 1]
    for key, value in before.items():
        if key.startswith(frozen):
            assert torch.equal(after[key], value), f"frozen {key} changed"
        elif not key.endswith("num_batches_tracked"):
            assert not torch.equal(after[key], value), f"trainable {key} did not change"


def test_freeze_stages_out_of_range_names_field_and_range(checkpoint):
    with pytest.raises(ValueError, match=r"model.init.freeze_stages=4.*0\.\.3"):
        freeze_for_transfer(build(), InitSpec(source="x", train="freeze_stages", freeze_stages=4))


def test_finetune_trains_everything():
    model = build()
    for p in model.parameters():
        p.requires_grad_(False)
    params = freeze_for_transfer(model, InitSpec(source="x", train="finetune"))
    assert len(params) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x1_0"])
def test_linear_probe_on_torchvision_models_leaves_only_the_head(name):
    model = build(name, classes=5)
    params = freeze_for_transfer(model, InitSpec(source="x", train="linear_probe"))
    head = model_parts(model).head
    assert {id(p) for p in params} == {id(p) for p in head.parameters()}
    model.train()
    assert set_frozen_bn_eval(model) > 0
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
