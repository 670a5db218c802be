"""Data-pipeline throughput: how many samples per second a DataLoader delivers (decode, augment, warp,
encode, collate), as called by ``python -m sar.bench``."""

from __future__ import annotations

import time

from torch.utils.data import DataLoader, Dataset

__all__ = ["pipeline_throughput"]


def pipeline_throughput(
    dataset: Dataset, num_workers: int = 2, batch_size: int = 32, seconds: float = 20.0, warmup_batches: int = 2
) -> float:
    """Samples per second delivered by a shuffled ``DataLoader`` over ``dataset``.

    Workers are started and ``warmup_batches`` batches consumed before the clock starts (worker start-up
    is not pipeline throughput); the loader is then drained for about ``seconds``, restarting epochs as
    needed (each restart's cost counts).
    """
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
        persistent_workers=num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(f"dataset of {len(dataset)} samples is smaller than one batch of {batch_size}")
    it = iter(loader)
    for _ in range(warmup_batches):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
    samples = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        samples += int(batch["image"].shape[0])
    elapsed = time.perf_counter() - start
    del it, loader
    return samples / elapsed
