"""A study's trials: its search configurations crossed with its member seeds.

Grid and random search are expanded here, deterministically, into an explicit list of trials
that Tune runs as `tune.grid_search(trials)`. Being explicit is what makes a study resumable:
a re-run expands the same trials with the same keys, skips the finished ones and lets Ray
Train resume the unfinished ones from their (storage_path, name = trial key).
Optuna search is adaptive and is handed to Tune's OptunaSearch instead (see search.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.config import RangeSpec, StudySpec, with_values

# Random search draws from this seed (and the study name) so a re-run draws the same configs.
RANDOM_SEARCH_SEED = 20170301


@dataclass(frozen=True)
class Trial:
    """One ensemble member to train: a searched configuration and a seed."""

    key: str  # deterministic run name: m<member>-<config hash>
    member: int  # index among the study's members (the seed's position)
    seed: int
    config_index: int  # which searched configuration
    values: dict[str, Any]  # dotted field -> value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(**data)


def config_hash(values: dict[str, Any]) -> str:
    canonical = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def trial_key(member: int, values: dict[str, Any]) -> str:
    return f"m{member:03d}-{config_hash(values)}"


def sample_range(rng: random.Random, spec: RangeSpec) -> float | int:
    if spec.log:
        value = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
    else:
        value = rng.uniform(spec.low, spec.high)
    return int(round(value)) if spec.integer else value


def search_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """The searched configurations (grid: every combination; random: num_samples draws)."""
    space = spec.search.space
    if not space:
        return [{}]
    keys = sorted(space)
    if spec.search.algorithm == "grid":
        return [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(space[k] for k in keys))
        ]
    rng = random.Random(f"{RANDOM_SEARCH_SEED}:{spec.name}")
    configs = []
    for _ in range(spec.search.num_samples):
        configs.append(
            {
                k: sample_range(rng, space[k])
                if isinstance(space[k], RangeSpec)
                else rng.choice(space[k])
                for k in keys
            }
        )
    return configs


def expand_trials(spec: StudySpec) -> list[Trial]:
    """Every (configuration, seed) pair, each validated as a full spec before any training."""
    trials = []
    for index, values in enumerate(search_configs(spec)):
        with_values(spec, values)  # raises SpecError naming the field for an invalid combination
        for member, seed in enumerate(spec.seeds()):
            trials.append(Trial(trial_key(member, values), member, seed, index, values))
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        raise ValueError("two trials share a key: the search space repeats a configuration")
    return trials
