"""Weight-space ensemble jobs (average -> BN recalibration -> inference) as Ray tasks.

The aggregator (ensemble/) plans `WeightJob`s and hands them to an executor; this one runs
them in parallel as Ray tasks, on a GPU when the cluster has one. Results come back in job
order, as the executor contract requires.
"""

from __future__ import annotations

import ray

from orchestrator.ensemble.weights import WeightJob, WeightResult, run_weight_job


class RayWeightExecutor:
    def __init__(self, gpus_per_job: float | None = None, cpus_per_job: float = 1.0):
        if gpus_per_job is None:
            # Inference-sized jobs: a quarter GPU each lets four share one device.
            gpus_per_job = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self.task = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job)(run_weight_job)

    def __call__(self, jobs: list[WeightJob]) -> list[WeightResult]:
        return ray.get([self.task.remote(job) for job in jobs])
