"""Data sets in memory, seeded splits shared by a study, and a fast batch loader.

    bundle = load_data(spec.data)            # DataBundle: info, train / val / test, fingerprint
    loader = BatchLoader(bundle.train, bundle.info, 128, shuffle=True, augment=True, seed=seed)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader: ...

Modules: info (DataInfo, normalisation), sources (where files are: data.dir, the Debian system
copy, the cache, a download), readers (torchvision -> uint8 tensors), synthetic (test data),
splits (Split, DataBundle, seeded indices, fingerprint), load (load_data), transforms (batch
augmentation), loader (BatchLoader). Importing this package loads no data and no torchvision.
"""

from orchestrator.data.errors import DataNotFoundError, DataSpecError
from orchestrator.data.info import DataInfo
from orchestrator.data.load import load_data
from orchestrator.data.loader import BatchLoader
from orchestrator.data.sources import cache_root, resolve_dataset_root
from orchestrator.data.splits import DataBundle, Split

__all__ = [
    "BatchLoader",
    "DataBundle",
    "DataInfo",
    "DataNotFoundError",
    "DataSpecError",
    "Split",
    "cache_root",
    "load_data",
    "resolve_dataset_root",
]
