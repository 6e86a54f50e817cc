"""The Tune trainable: one trial = one member, trained by a Ray Train `TorchTrainer`.

Driver and worker are split as in Ray's train_tune_interop example: Tune runs this function
(it needs no CPU of its own, see resources.py), which builds ScalingConfig/RunConfig and fits
a TorchTrainer whose workers run `worker.train_worker`. `TuneReportCallback` forwards rank-0
metrics (and each checkpoint's path) to Tune, so ASHA and the progress view see every epoch.

The TorchTrainer's run is named by the trial key under `<run storage>/members`: re-running the
study re-uses the name, and Ray Train resumes that member from its latest snapshot.
"""

from __future__ import annotations

import json
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.cluster.storage import join, read_text, write_text
from orchestrator.cluster.trials import Trial, trial_key
from orchestrator.cluster.worker import train_worker
from orchestrator.config import StudySpec, with_values

COMPLETE_MARKER = "COMPLETE.json"


def member_driver(config: dict[str, Any]) -> None:
    """config: base spec dict, trial dict, members_storage URI, optional tracking ids."""
    base = StudySpec.model_validate(config["spec"])
    trial = trial_of(config, base)
    spec = with_values(base, trial.values)
    res = spec.resources
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "spec": spec.to_dict(),
            "member": trial.member,
            "seed": trial.seed,
            "trial": trial.to_dict(),
            "cpus_per_worker": res.cpus_per_worker,
            "tracking": config.get("tracking"),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers_per_member,
            use_gpu=res.gpus_per_worker > 0,
            resources_per_worker={"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker}
            if res.gpus_per_worker > 0
            else {"CPU": res.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=trial.key,
            storage_path=config["members_storage"],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),  # every snapshot
            failure_config=ray.train.FailureConfig(max_failures=res.max_failures),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    checkpoints = sorted(c.path for c, _ in result.best_checkpoints)
    summary = {
        "trial": trial.to_dict(),
        "metrics": {
            k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float | str)
        },
        "checkpoints": checkpoints,
        "path": result.path,
    }
    # Written last: its presence is what makes a re-run skip this member.
    write_text(
        join(config["members_storage"], trial.key, COMPLETE_MARKER), json.dumps(summary, indent=2)
    )


def trial_of(config: dict[str, Any], base: StudySpec) -> Trial:
    """The explicit trial (grid/random), or one built from Optuna's sampled values."""
    if "trial" in config:
        return Trial.from_dict(config["trial"])
    values = dict(config["search"])
    return Trial(trial_key(0, values), 0, base.seeds()[0], -1, values)


def read_complete(members_storage: str, key: str) -> dict[str, Any] | None:
    text = read_text(join(members_storage, key, COMPLETE_MARKER))
    return json.loads(text) if text is not None else None
