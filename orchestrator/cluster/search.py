"""How Tune explores a study: explicit trials (grid/random), or Optuna; optional ASHA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune

from orchestrator.cluster.trials import Trial
from orchestrator.config import RangeSpec, StudySpec


@dataclass
class SearchPlan:
    param_space: dict[str, Any]
    num_samples: int = 1
    search_alg: Any = None
    scheduler: Any = None
    metric: str | None = None
    mode: str | None = None


def _domain(values: list[Any] | RangeSpec):
    if isinstance(values, list):
        return tune.choice(values)
    if values.integer:
        low, high = int(values.low), int(values.high) + 1  # randint's upper bound is exclusive
        return tune.lograndint(low, high) if values.log else tune.randint(low, high)
    return (
        tune.loguniform(values.low, values.high)
        if values.log
        else tune.uniform(values.low, values.high)
    )


def build_search(spec: StudySpec, remaining: list[Trial]) -> SearchPlan:
    search = spec.search
    plan = SearchPlan(param_space={})
    if search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        # Optuna adapts to results, so its configurations cannot be listed up front: each
        # trial trains the first seed, and is keyed by its sampled values (driver.py).
        plan.param_space["search"] = {key: _domain(values) for key, values in search.space.items()}
        plan.num_samples = search.num_samples
        plan.search_alg = OptunaSearch(seed=0)
        plan.metric, plan.mode = search.metric, search.mode
    else:
        plan.param_space["trial"] = tune.grid_search([t.to_dict() for t in remaining])
    if search.scheduler.kind == "asha":
        from ray.tune.schedulers import ASHAScheduler

        plan.scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=spec.train.epochs,
            grace_period=min(search.scheduler.grace_period, spec.train.epochs),
            reduction_factor=search.scheduler.reduction_factor,
        )
        plan.metric, plan.mode = search.metric, search.mode
    return plan
