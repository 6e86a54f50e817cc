"""The per-worker train function that Ray Train runs: one member (or one DDP rank of it)."""

from __future__ import annotations

from typing import Any

import ray.train
import ray.train.torch
import torch

from orchestrator.cluster.ray_sink import RayTrainSink
from orchestrator.config import StudySpec
from orchestrator.training.member import train_member
from orchestrator.training.sink import FanoutSink


def train_worker(loop_config: dict[str, Any]) -> None:
    """`loop_config`: spec (resolved dict), member, seed, trial_key, cpus_per_worker."""
    spec = StudySpec.model_validate(loop_config["spec"])
    if spec.model.transfer is not None and spec.model.transfer.study is not None:
        from orchestrator.tracking.init_source import materialize_init

        # Fetched here, where the member trains: the launcher's files may be on another node.
        spec = materialize_init(spec, loop_config["member"])
    if spec.train.threads is None:
        # Ray reserves whole CPUs per worker; use exactly those for torch's intra-op pool.
        torch.set_num_threads(max(1, int(loop_config["cpus_per_worker"])))
    device = ray.train.torch.get_device() if spec.train.device != "cpu" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    sink = RayTrainSink(extra_metrics={"member": loop_config["member"]})
    sinks = [sink]
    tracking = loop_config.get("tracking")
    if tracking:
        from orchestrator.tracking.member_sink import MlflowMemberSink

        sinks.append(MlflowMemberSink.from_config(tracking, loop_config["trial"]))
    train_member(
        spec,
        FanoutSink(sinks),
        member=loop_config["member"],
        seed=loop_config["seed"],
        device=device,
    )
