from pathlib import Path

import pytest
import yaml

from orchestrator import config
from orchestrator.config import SpecError


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_defaults_are_a_valid_study():
    spec = config.load()
    assert spec.data.name == "fashion-mnist"
    assert spec.model.name == "resnet" and spec.model.depth == 20
    assert spec.seeds() == [0]


def test_every_issue_field_name_is_accepted(tmp_path):
    tree = {
        "data": {"name": "mnist", "dir": "/tmp/x", "subset": 100, "val_fraction": 0.2},
        "model": {"name": "resnet", "depth": 56, "width": 2, "init": {"source": "ckpt.pt"}},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "weight_decay": 1e-4},
        "schedule": {"kind": "cyclic", "cycles": 3, "restart_lr": 0.2},
        "polyak": {"kind": "swa", "decay": 0.99, "start_epoch": 1},
        "members": {"seeds": [3, 5, 7]},
    }
    spec = config.load(write(tmp_path, tree))
    assert spec.name == "study"  # file stem
    assert spec.model.init.source == "ckpt.pt" and spec.model.init.train == "finetune"
    assert spec.seeds() == [3, 5, 7]
    assert spec.schedule.restart_lr == 0.2


def test_dotted_overrides_are_parsed_as_yaml(tmp_path):
    path = write(tmp_path, {"name": "x"})
    spec = config.load(
        path,
        [
            "model.depth=56",
            "train.lr=0.01",
            "members.seeds=[1, 2]",
            "search.space.model.depth=[20, 32]",
        ],
    )
    assert spec.model.depth == 56 and spec.train.lr == 0.01
    assert spec.seeds() == [1, 2]
    assert spec.search.space == {"model.depth": [20, 32]}


def test_resolved_spec_round_trips_through_yaml(tmp_path):
    spec = config.load(
        write(tmp_path, {"name": "round", "model": {"depth": 32}}), ["train.epochs=4"]
    )
    again = config.load(write(tmp_path, yaml.safe_load(config.dump_yaml(spec))))
    assert again == spec


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("model.depth=21", ["model.depth", "6n+2", "20, 32, 44, 56, 110"]),
        ("model.deepth=20", ["model.deepth", "unknown key", "depth"]),
        ("train.epochs=-1", ["train.epochs", "-1"]),
        ("data.name=imagenet-xl", ["data.name", "fashion-mnist", "cifar10"]),
        ("schedule.kind=linear", ["schedule.kind", "'step', 'cosine' or 'cyclic'"]),
        ("polyak.kind=mean", ["polyak.kind", "'ema', 'swa' or 'none'"]),
        ("model.name=vgg16", ["model.name", "resnet", "mobilenet_v3_small"]),
        ("bogus=1", ["bogus", "unknown key", "model"]),
    ],
)
def test_bad_values_name_the_field_and_allowed_values(tmp_path, override, names):
    with pytest.raises(SpecError) as err:
        config.load(write(tmp_path, {"name": "bad"}), [override])
    for name in names:
        assert name in str(err.value)


def test_cycles_must_divide_the_main_phase():
    with pytest.raises(SpecError, match="schedule.cycles=4"):
        config.from_dict({"train": {"epochs": 6}, "schedule": {"kind": "cyclic", "cycles": 4}})


def test_members_count_and_seeds_must_agree():
    with pytest.raises(SpecError, match="members.count=3"):
        config.from_dict({"members": {"count": 3, "seeds": [1, 2]}})
    assert config.from_dict({"members": {"count": 3}}).seeds() == [0, 1, 2]


def test_unknown_search_dimension_is_rejected_before_training():
    with pytest.raises(SpecError, match="search.space.model.depht"):
        config.from_dict({"search": {"space": {"model.depht": [20, 32]}}})
    with pytest.raises(SpecError, match="must start with one of"):
        config.from_dict({"search": {"space": {"resources.cpus_per_worker": [1]}}})


def test_ranges_need_a_sampling_algorithm():
    with pytest.raises(SpecError, match="random or optuna"):
        config.from_dict({"search": {"space": {"train.lr": {"low": 0.01, "high": 0.1}}}})
    spec = config.from_dict(
        {
            "search": {
                "algorithm": "random",
                "space": {"train.lr": {"low": 0.01, "high": 0.1, "log": True}},
            }
        }
    )
    assert spec.search.space["train.lr"].log


def test_with_values_applies_a_trials_config():
    spec = config.from_dict({"name": "s"})
    trial = config.with_values(
        spec,
        {"model.depth": 32, "schedule.cycles": 2, "train.epochs": 4, "schedule.kind": "cyclic"},
    )
    assert trial.model.depth == 32 and trial.schedule.cycles == 2
    with pytest.raises(SpecError, match="model.depth"):
        config.with_values(spec, {"model.depth": 33})


def test_study_file_errors_are_clear(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        config.load(bad)
    with pytest.raises(SpecError, match="KEY=VALUE"):
        config.load(None, ["model.depth"])


def test_every_shipped_study_is_valid():
    studies = sorted((Path(__file__).resolve().parents[2] / "jobs" / "studies").glob("*.yaml"))
    assert any("demo" in p.name for p in studies)
    for path in studies:
        config.load(path)


def test_profiles_switch_a_study_between_sizes(tmp_path):
    path = write(
        tmp_path,
        {
            "name": "sized",
            "train": {"epochs": 4},
            "profiles": {"full": {"train.epochs": 200, "model.depth": 110}},
        },
    )
    assert config.load(path).train.epochs == 4
    full = config.load(path, ["train.lr=0.2"], profile="full")
    assert (full.train.epochs, full.model.depth, full.train.lr) == (200, 110, 0.2)
    with pytest.raises(SpecError, match="profiles: full"):
        config.load(path, profile="huge")


def test_a_broken_profile_fails_even_when_not_selected(tmp_path):
    path = write(tmp_path, {"name": "sized", "profiles": {"full": {"model.depth": 111}}})
    with pytest.raises(SpecError, match="profile full"):
        config.load(path)


def test_resolved_spec_drops_profiles_so_a_smoke_dump_loads_again(tmp_path):
    path = write(
        tmp_path,
        {"name": "sized", "members": {"count": 4}, "profiles": {"full": {"members.count": 8}}},
    )
    small = config.smoke(config.load(path))
    assert small.profiles == {}
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(config.dump_yaml(small))
    assert config.load(dumped).seeds() == small.seeds()
