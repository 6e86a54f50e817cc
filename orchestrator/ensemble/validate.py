"""Step 1 of `aggregate`: check that members can be combined, before any work is done.

Members exist, have snapshots, share data fingerprint, class count and the val/test label
arrays; weight files needed by weight jobs exist (local layouts). Every error names the
member (and artifact) at fault, and says what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from orchestrator.ensemble.errors import AggregateError
from orchestrator.ensemble.records import MemberRecord, SnapshotRef
from orchestrator.ensemble.weight_jobs import WEIGHTS_FILE


def _groups(members: Sequence[MemberRecord], value) -> dict:
    groups: dict = {}
    for m in members:
        groups.setdefault(value(m), []).append(m.key)
    return groups


def _describe(groups: dict) -> str:
    return "; ".join(f"{value!r} for {', '.join(keys)}" for value, keys in groups.items())


def read_artifact(member: MemberRecord, what: str, location: str, load):
    """Run a loader; a missing/unreadable artifact becomes an error naming member + artifact.

    Any failure of a loader counts: files raise OSError, np.load ValueError on a corrupt file,
    tracking/'s MLflow loaders their own MissingArtifactError (a RuntimeError).
    """
    try:
        return load()
    except AggregateError:
        raise
    except Exception as exc:
        where = f" at {location}" if location else ""
        raise AggregateError(f"member {member.key}: cannot read {what}{where}: {exc}") from exc


def validate_members(members: Sequence[MemberRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Check members can be combined; returns the shared (labels_val, labels_test)."""
    if not members:
        raise AggregateError(
            "no finished members to aggregate: the study has no member with stored snapshots "
            "(did the study run finish?)"
        )
    keys = [m.key for m in members]
    if dup := sorted({k for k in keys if keys.count(k) > 1}):
        raise AggregateError(f"member key(s) {', '.join(dup)} appear more than once")
    if empty := [m.key for m in members if not m.snapshots]:
        raise AggregateError(
            f"member(s) {', '.join(empty)} have no snapshots: not finished, or their snapshots "
            "are missing; aggregate the finished members only"
        )
    fingerprints = _groups(members, lambda m: m.data_fingerprint)
    if len(fingerprints) > 1:
        raise AggregateError(
            "members were trained on different data splits (data fingerprint "
            f"{_describe(fingerprints)}); their predictions cannot be combined: aggregate "
            "members of one study / data spec"
        )
    classes = _groups(members, lambda m: m.num_classes)
    if len(classes) > 1:
        raise AggregateError(f"members disagree on the number of classes: {_describe(classes)}")
    # The first member's labels are the reference every other member's must equal.
    first = members[0]
    reference: dict[str, np.ndarray] = {}
    for m in members:
        for split in ("val", "test"):
            labels = np.asarray(
                read_artifact(m, f"labels_{split}", "", lambda s=split, m=m: m.load_labels(s))
            )
            if split not in reference:
                reference[split] = labels
            elif labels.shape != reference[split].shape or not np.array_equal(
                labels, reference[split]
            ):
                raise AggregateError(
                    f"member {m.key}: its {split} labels differ from member {first.key}'s "
                    f"({labels.shape[0]} vs {reference[split].shape[0]} samples); members must "
                    "share one split"
                )
    return reference["val"].astype(np.int64), reference["test"].astype(np.int64)


def check_weights(member: MemberRecord, refs: Iterable[SnapshotRef]) -> None:
    """Fail early, naming the member, when a weight job would miss a local weights file."""
    # Only local layouts can be checked without loading; remote artifacts fail (named) in the job.
    for ref in refs:
        location = Path(ref.location) if ref.location else None
        if location is not None and location.is_dir() and not (location / WEIGHTS_FILE).is_file():
            raise AggregateError(
                f"member {member.key}: {ref.kind} {ref.index} has no {WEIGHTS_FILE} at {location} "
                "(needed for weight averaging); restore it or set weight_ensembles=False"
            )
