"""The claim studies of jobs/studies: each runs with --smoke on a real local Ray, and the
transfer claim's target starts each member from its source study's members (via MLflow)."""

from __future__ import annotations

import pytest
import torch

from orchestrator import config
from orchestrator.tracking.init_source import (
    InitSourceError,
    materialize_init,
    resolve_init_studies,
)
from orchestrator.tracking.reader import find_study, load_members, resolve_store
from tests.conftest import FASHION_MNIST_SYSTEM, STUDIES
from tests.integration.study_helpers import ensemble, members_dir

pytestmark = [pytest.mark.slow]

TRANSFER_SOURCE = STUDIES / "claim_transfer_source.yaml"
TRANSFER_TARGET = STUDIES / "claim_transfer_vs_scratch.yaml"
# Every claim study that needs nothing but itself (the transfer target needs its source).
SELF_CONTAINED = sorted(
    p.stem for p in STUDIES.glob("claim_*.yaml") if p not in (TRANSFER_SOURCE, TRANSFER_TARGET)
)


@pytest.fixture(autouse=True)
def _needs_fashion_mnist():
    if not FASHION_MNIST_SYSTEM.is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist (make test installs it)")


def finished_members(output) -> list:
    return sorted(members_dir(output).glob("*/COMPLETE.json"))


def test_every_claim_has_a_study():
    assert set(SELF_CONTAINED) >= {
        "claim_independent_vs_single",
        "claim_snapshot_ensemble",
        "claim_snapshot_independent_arm",
        "claim_polyak_vs_raw",
        "claim_plain_vs_residual_depth",
    }
    assert TRANSFER_SOURCE.is_file() and TRANSFER_TARGET.is_file()


@pytest.mark.parametrize("study", SELF_CONTAINED)
def test_claim_study_runs_with_smoke(study, tmp_path):
    out = tmp_path / study
    result = ensemble("run", STUDIES / f"{study}.yaml", "--smoke", "--output", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # --smoke: the first searched configuration, two members.
    assert len(finished_members(out)) == 2


@pytest.fixture(scope="module")
def transfer_source(tmp_path_factory):
    if not FASHION_MNIST_SYSTEM.is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist (make test installs it)")
    out = tmp_path_factory.mktemp("transfer") / "claim-transfer-source-smoke"
    result = ensemble("run", TRANSFER_SOURCE, "--smoke", "--output", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(finished_members(out)) == 2
    uri = resolve_store(out)
    return out, load_members(uri, find_study(uri, "claim-transfer-source-smoke").run_id)


def stem_weight(state: dict) -> torch.Tensor:
    return state["model"]["stem.0.weight"].flatten().float()


def test_study_init_resolves_member_k_to_the_kth_source_member(transfer_source):
    out, sources = transfer_source
    spec = config.smoke(config.load(TRANSFER_TARGET, [f"model.init.study={out}"]))
    for member in (0, 1, 2):
        resolved = materialize_init(spec, member)
        init = resolved.model.init
        source = sources[member % len(sources)]
        assert init.study is None and source.key in init.origin
        loaded = torch.load(init.source, map_location="cpu", weights_only=True)
        expected = source.snapshots[-1].load_weights()
        assert torch.equal(stem_weight(loaded), stem_weight(expected))


def test_transfer_target_members_start_from_their_source_members(transfer_source, tmp_path):
    source_dir, sources = transfer_source
    out = tmp_path / "target"
    result = ensemble(
        "run",
        TRANSFER_TARGET,
        "--smoke",
        "--output",
        out,
        "--set",
        f"model.init.study={source_dir}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    uri = resolve_store(out)
    targets = load_members(uri, find_study(uri, "claim-transfer-vs-scratch-smoke").run_id)
    assert len(targets) == 2
    source_stems = [stem_weight(s.snapshots[-1].load_weights()) for s in sources]
    for target in targets:
        init = target.spec["model"]["init"]
        own = sources[target.member % len(sources)]
        assert own.key in init["origin"] and init["reset_head"] is True
        # Two smoke epochs of fine-tuning move the weights only so far: each member's first
        # conv stays close to its own source member's (0.88 seen) and unrelated to the other
        # one, trained from another seed (near 0).
        stem = stem_weight(target.snapshots[-1].load_weights())
        similarity = [torch.nn.functional.cosine_similarity(stem, s, dim=0) for s in source_stems]
        n = len(sources)
        own, other = similarity[target.member % n], similarity[(target.member + 1) % n]
        assert own > 0.6 and own - other > 0.4, similarity


def test_missing_architecture_in_the_source_fails_naming_what_it_has(transfer_source):
    out, _ = transfer_source
    spec = config.smoke(config.load(TRANSFER_TARGET, [f"model.init.study={out}"]))
    spec = config.with_values(spec, {"search.space": {"model.name": ["mobilenet_v3_small"]}})
    from orchestrator.cluster.trials import expand_trials

    with pytest.raises(
        InitSourceError, match="no member of study claim-transfer-source-smoke"
    ) as e:
        resolve_init_studies(spec, expand_trials(spec))
    assert "name=mobilenet_v3_small" in str(e.value) and "name=resnet" in str(e.value)


@pytest.mark.parametrize("bad", ["no-store", "wrong-architecture"])
def test_bad_transfer_source_fails_before_any_training(transfer_source, tmp_path, bad):
    out, _ = transfer_source
    args = ["--set", f"model.init.study={out}"]
    if bad == "no-store":
        args = ["--set", f"model.init.study={tmp_path / 'nowhere'}"]
    else:
        args += ["--set", "search.space.model.name=[shufflenet_v2_x1_0]"]
    result = ensemble(
        "run", TRANSFER_TARGET, "--smoke", "--output", tmp_path / "t", *args, timeout=180
    )
    assert result.returncode != 0
    assert "model.init.study=" in " ".join(result.stderr.split())
    assert not members_dir(tmp_path / "t").exists()
