"""Resumable training sampler and loader: exact mid-epoch resume without replaying data.

:class:`EpochSampler` yields ``(index, epoch)`` pairs: a permutation drawn from ``(seed, epoch)`` (or the
identity without shuffling). :class:`sar.data.topdown.TopDownDataset` seeds each sample's augmentation from
``(dataset seed, epoch, index)``, so what a training step sees depends only on the seed, the epoch and its
position in the epoch, not on the worker count or on RNG state kept in worker processes.

:class:`ResumableLoader` is a ``DataLoader`` with Lightning's ``state_dict`` / ``load_state_dict`` protocol.
Lightning stores its state in every checkpoint (``loops.fit_loop.state_dict.combined_loader``); the state
is the epoch and the number of batches the training loop has *processed* in it, read from the trainer when
the checkpoint is written (the loader's own iterator runs ahead because of prefetching). On resume the
sampler skips those samples of that epoch, so an interrupted run continues exactly where it stopped
(tests/test_resume.py checks final metrics equal an uninterrupted run's).

Rule under multi-process training: Lightning wraps the sampler in a ``DistributedSamplerWrapper`` that
shards (and reshuffles) the sampler's output per rank; the epoch still advances (the sampler counts its
passes), but a mid-epoch resume then restarts that epoch from its beginning (model, optimiser, scheduler
and loop counters are restored; a warning says so). End-of-epoch checkpoints resume exactly everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)

__all__ = ["EpochSampler", "ResumableLoader"]


class EpochSampler(Sampler):
    """``(index, epoch)`` pairs, shuffled by ``(seed, epoch)``; ``skip`` drops the first samples once."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, samples to drop)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_once(self, epoch: int, num_samples: int) -> None:
        """Drop the first ``num_samples`` of ``epoch`` the next time that epoch is iterated."""
        self.epoch = int(epoch)
        self._skip = (int(epoch), int(num_samples))

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Eager: the order is fixed when the iterator is created (DataLoader workers prefetch right away).
        epoch = self.epoch
        indices = self.order(epoch)
        if self._skip is not None and self._skip[0] == epoch:
            indices = indices[self._skip[1]:]
            self._skip = None
        self.epoch = epoch + 1  # a pass without set_epoch (e.g. inside a DistributedSamplerWrapper) advances
        return iter([(int(i), epoch) for i in indices])


class ResumableLoader(DataLoader):
    """Training ``DataLoader`` over an :class:`EpochSampler` whose position is saved in checkpoints.

    ``progress`` returns ``(epoch, batches processed in that epoch)`` from the trainer; the DataModule sets
    it. Without it the state is empty and a resume restarts the epoch.
    """

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def _epoch_sampler(self) -> EpochSampler | None:
        sampler = self.sampler
        return sampler if isinstance(sampler, EpochSampler) else None

    def state_dict(self) -> dict[str, Any]:
        if self.progress is None:
            return {}
        epoch, batches = self.progress()
        return {"epoch": int(epoch), "batches": int(batches), "batch_size": int(self.batch_size or 1)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        sampler = self._epoch_sampler()
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if sampler is None:
            log.warning("resuming mid-epoch under a distributed sampler: epoch %d restarts from its first batch "
                        "(model, optimiser and schedule are restored exactly)", epoch)
            return
        if batches >= len(self):  # the checkpoint closed the epoch: the next one starts fresh
            sampler.set_epoch(epoch + 1)
            return
        sampler.skip_once(epoch, batches * int(state.get("batch_size", self.batch_size or 1)))
        log.info("resuming epoch %d after %d processed batches", epoch, batches)
