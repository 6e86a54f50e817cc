"""What a member needs from the cluster, checked against what the cluster has.

Ray 2.60 on small machines: a Tune trial takes 1 CPU by default and each Train worker 1 more,
so two trials on 2 CPUs starve their own workers forever. The Tune driver therefore asks for
no CPU (a token amount of memory instead, as `{"cpu": 0}` alone is rejected) and concurrency
is capped by what the members' workers need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.config import ResourcesSpec

DRIVER_RESOURCES = {"cpu": 0, "memory": 100 * 1024**2}


class ResourceError(ValueError):
    pass


@dataclass(frozen=True)
class ClusterShape:
    total_cpus: float
    total_gpus: float
    max_node_cpus: float
    max_node_gpus: float

    @classmethod
    def from_nodes(cls, nodes: list[dict]) -> ClusterShape:
        alive = [n["Resources"] for n in nodes if n.get("Alive", True)]
        return cls(
            total_cpus=sum(r.get("CPU", 0) for r in alive),
            total_gpus=sum(r.get("GPU", 0) for r in alive),
            max_node_cpus=max((r.get("CPU", 0) for r in alive), default=0),
            max_node_gpus=max((r.get("GPU", 0) for r in alive), default=0),
        )


@dataclass(frozen=True)
class MemberPlan:
    cpus: float
    gpus: float
    max_concurrent: int


def plan_members(res: ResourcesSpec, cluster: ClusterShape, trials: int) -> MemberPlan:
    """Check one member's workers fit the cluster; derive how many members run at once."""
    if res.gpus_per_worker > cluster.max_node_gpus:
        raise ResourceError(
            f"resources.gpus_per_worker={res.gpus_per_worker:g} but no node of the cluster has that "
            f"many GPUs (largest: {cluster.max_node_gpus:g}, total: {cluster.total_gpus:g}); "
            "use 0 for CPU training or a fraction such as 0.25 to share a GPU"
        )
    if res.cpus_per_worker > cluster.max_node_cpus:
        raise ResourceError(
            f"resources.cpus_per_worker={res.cpus_per_worker:g} but the largest node has "
            f"{cluster.max_node_cpus:g} CPUs"
        )
    cpus = res.workers_per_member * res.cpus_per_worker
    gpus = res.workers_per_member * res.gpus_per_worker
    if cpus > cluster.total_cpus or gpus > cluster.total_gpus:
        raise ResourceError(
            f"one member needs {cpus:g} CPUs and {gpus:g} GPUs (resources.workers_per_member="
            f"{res.workers_per_member} x per-worker) but the cluster has {cluster.total_cpus:g} "
            f"CPUs and {cluster.total_gpus:g} GPUs"
        )
    limit = math.floor(cluster.total_cpus / cpus + 1e-9)
    if gpus > 0:
        limit = min(limit, math.floor(cluster.total_gpus / gpus + 1e-9))
    if res.max_concurrent_members:
        limit = min(limit, res.max_concurrent_members)
    return MemberPlan(cpus=cpus, gpus=gpus, max_concurrent=max(1, min(limit, max(trials, 1))))
