"""Member-loop throughput vs a minimal hand-written PyTorch loop, side by side in one run.

Both train the same model (default ResNet-20, channels_last) on the same batches of the same
data with SGD; they alternate A/B over several rounds so machine noise hits both alike, and the
figure is the ratio of median images/s. The member loop includes everything a member pays per
step: the batch loader with augmentation (pad+crop, flip), the LambdaLR schedule and the EMA
update; the minimal loop iterates pre-normalised tensors with no augmentation.

    .venv/bin/python benchmarks/member_loop_throughput.py --rounds 5 --images 5120
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from orchestrator import config
from orchestrator.data import BatchLoader, load_data
from orchestrator.models import create_model
from orchestrator.training.averaging import Polyak
from orchestrator.training.loop import Precision, train_one_epoch
from orchestrator.training.schedules import SchedulePlan


def build(spec, info):
    torch.manual_seed(0)
    model = create_model(
        spec.model,
        in_channels=info.channels,
        image_size=info.image_size,
        num_classes=info.num_classes,
    ).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=spec.train.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=spec.train.weight_decay,
    )
    return model, opt


def member_epoch(spec, data, epoch) -> float:
    model, opt = build(spec, data.info)
    batches = BatchLoader(
        data.train,
        data.info,
        spec.train.batch_size,
        shuffle=True,
        augment=True,
        seed=0,
        channels_last=True,
        drop_last=True,
    )
    batches.set_epoch(epoch)
    sched = SchedulePlan.from_spec(spec, len(batches)).scheduler(opt)
    polyak = Polyak(model, spec.polyak)
    start = time.perf_counter()
    train_one_epoch(
        model,
        batches,
        opt,
        sched,
        Precision("cpu", None),
        after_step=lambda: polyak.after_step(model, 0),
    )
    return len(batches) * spec.train.batch_size / (time.perf_counter() - start)


def minimal_epoch(spec, data, tensors) -> float:
    model, opt = build(spec, data.info)
    model.train()
    start = time.perf_counter()
    for x, y in tensors:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(tensors) * spec.train.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="jobs/studies/fashion_mnist_demo.yaml")
    parser.add_argument("--images", type=int, default=5120, help="training images per epoch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = config.load(args.study, [f"data.subset={args.images}", *args.overrides])
    data = load_data(spec.data)
    # The minimal loop's batches: the same images, normalised once, no augmentation.
    plain = BatchLoader(
        data.train,
        data.info,
        spec.train.batch_size,
        shuffle=True,
        augment=False,
        seed=0,
        channels_last=True,
        drop_last=True,
    )
    tensors = list(plain)
    member, minimal = [], []
    member_epoch(spec, data, 0)  # warm-up: allocator, kernels
    for r in range(args.rounds):
        minimal.append(minimal_epoch(spec, data, tensors))
        member.append(member_epoch(spec, data, r))
    result = {
        "model": f"{spec.model.name}{spec.model.depth}",
        "batch_size": spec.train.batch_size,
        "threads": args.threads,
        "images_per_epoch": len(tensors) * spec.train.batch_size,
        "member_loop_img_s": round(statistics.median(member), 1),
        "minimal_loop_img_s": round(statistics.median(minimal), 1),
        "ratio": round(statistics.median(member) / statistics.median(minimal), 3),
        "rounds": args.rounds,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
