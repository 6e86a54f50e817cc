"""`BatchLoader`: (x, y) batches straight from an in-memory Split, fast and reproducible.

No DataLoader workers are needed: the data is already a uint8 tensor, and indexing, augmenting
(`transforms.random_crop_flip`) and normalising a batch are a handful of tensor ops. The full 54k
Fashion-MNIST training split with augmentation at batch 128 takes ~0.2 s on 2 CPUs
(measured: 0.18-0.2 s per epoch, also while the other CPU is busy).

Reproducibility: the shuffle order depends only on (seed, epoch), and the augmentation only on
(seed, epoch, rank), so a member resumed at epoch k sees exactly the batches it would have seen.
Pitfall (as with DistributedSampler): call `set_epoch(epoch)` before each epoch, or every epoch
repeats the same order and augmentation.

Sharding (rank / world_size) follows DistributedSampler: the shuffled order is padded by repeating
its start to a multiple of world_size, and rank r takes positions r, r + world_size, ...; every
rank gets the same number of samples (so DDP steps stay in lockstep), disjoint up to the padding.
For evaluation with world_size > 1 the padded duplicates are counted twice; evaluate on one rank
(or drop them) when exact numbers matter.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch

from orchestrator.data.info import DataInfo
from orchestrator.data.splits import Split
from orchestrator.data.transforms import normalize, normalizer, random_crop_flip


def _generator(*parts: int | str) -> torch.Generator:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class BatchLoader:
    """Iterates (x, y) batches from an in-memory Split: x float32 normalised, y int64."""

    def __init__(
        self,
        split: Split,
        info: DataInfo,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if split.images.shape[1] != len(info.mean):
            raise ValueError(
                f"split has {split.images.shape[1]} channels but info.mean has {len(info.mean)}"
            )
        self.split = split
        self.info = info
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._scale, self._shift = normalizer(info.mean, info.std, self.device)
        self._pin = self.device.type == "cuda" and torch.cuda.is_available()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (padded like DistributedSampler)."""
        return math.ceil(len(self.split) / self.world_size)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's positions in the split for the current epoch, in batch order."""
        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=_generator("order", self.seed, self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size == 1:
            return order
        total = self.num_samples * self.world_size
        if total > n:  # pad by repeating the start of the order (repeatedly if n is tiny)
            order = torch.cat([order, order.repeat(math.ceil(total / n))[: total - n]])
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self.indices()
        aug_gen = _generator("augment", self.seed, self.epoch, self.rank)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = index[start : start + self.batch_size]
            # A batch is ~100 KB: intra-op threads only add sync overhead, and on a busy machine
            # (other members, the model's own threads) OpenMP waits made an epoch 5-100x slower.
            # One thread while preparing it, restored before the caller's model code runs.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                x, y = self._batch(batch, aug_gen)
            finally:
                torch.set_num_threads(threads)
            yield x, y

    def _batch(
        self, batch: torch.Tensor, aug_gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.split.images.index_select(0, batch)  # uint8 (B, C, H, W)
        y = self.split.labels.index_select(0, batch)
        if self._pin:
            x, y = x.pin_memory(), y.pin_memory()
        # Move uint8 (4x fewer bytes than float), then augment and normalise on the device.
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.augment:
            x = random_crop_flip(x, self.info.crop_padding, self.info.flip, aug_gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return normalize(x, self._scale, self._shift), y
