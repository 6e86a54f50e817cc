"""Hold GPU worker nodes up before a study is submitted, and let them go afterwards.

Why: a study is planned against the nodes that are alive when it starts (orchestrator/cluster/
resources.py checks that one member fits a node and runs as many members at once as the live
CPUs/GPUs allow). On a cluster that has scaled to zero GPU nodes a GPU study is rejected, and on
a cluster with one GPU node it never runs more members than that node holds. So ask Ray's
autoscaler for the GPUs first, wait until they are up, then submit:

    python request_gpus.py 2      # keep at least 2 GPUs in the cluster; waits until they are up
    python request_gpus.py 0      # drop the request: idle GPU nodes end after the idle timeout

Run it on the head node, where it joins the running cluster (infra/README.md shows the `ray exec`
and `kubectl exec` lines). The request persists until the next call replaces it.
"""

from __future__ import annotations

import argparse
import sys
import time


def gpu_bundles(gpus: int) -> list[dict[str, float]]:
    """One single-GPU bundle per GPU: the autoscaler packs them onto as few GPU nodes as fit."""
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    return [{"GPU": 1}] * gpus


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gpus", type=int, help="GPUs to keep in the cluster (0 releases them)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for the GPUs (default 1800)"
    )
    args = parser.parse_args(argv)
    if args.gpus < 0:
        parser.error("gpus must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address="auto", logging_level="ERROR")
    request_resources(bundles=gpu_bundles(args.gpus))
    if args.gpus == 0:
        print("GPU request dropped; idle GPU nodes end after the cluster's idle timeout")
        return 0
    deadline = time.monotonic() + args.timeout
    while (have := ray.cluster_resources().get("GPU", 0)) < args.gpus:
        if time.monotonic() > deadline:
            print(
                f"only {have:g} of {args.gpus} GPUs after {args.timeout:g} s; the request stays "
                "in place (check `ray status` for quota or capacity errors)",
                file=sys.stderr,
            )
            return 1
        print(f"{have:g}/{args.gpus} GPUs up, waiting ...", flush=True)
        time.sleep(max(0.0, min(15.0, deadline - time.monotonic())))
    print(f"{have:g} GPUs up; submit the study now")
    return 0


if __name__ == "__main__":
    sys.exit(main())
