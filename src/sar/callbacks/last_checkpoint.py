"""The one writer of ``last.ckpt``: at every training epoch's end (before validation), after validation, and
every N optimiser steps.

Why one writer: two ``ModelCheckpoint(save_last=True)`` callbacks each keep their own "last" file
(``last.ckpt`` and ``last-v1.ckpt``), and a resume would pick whichever is named ``last.ckpt``, not the newest.
The best-by-metric checkpoint stays a ``ModelCheckpoint`` with ``save_last=False``.

Save points (all in the same file, written through the trainer's CheckpointIO, atomically with
:class:`sar.utils.checkpoint_io.AtomicCheckpointIO`):

* ``on_train_batch_end`` of the epoch's last batch: the training of the epoch is on disk before validation
  runs, so a crash in validation (a missing image, an evaluator error) loses nothing;
* ``on_train_batch_end`` every ``every_n_steps`` optimiser steps (preemptible clusters);
* ``on_validation_end`` of a fit (after the best checkpoint was chosen, so its bookkeeping is included).

Each checkpoint also carries ``checkpoint["sar_progress"]``: the epoch, the batches processed in it, whether
the epoch's training is complete, the epochs completed and the global step. ``sar.train`` reads it to tell a
finished run (relaunching it does nothing) from one to continue. (The loader's position is restored by
Lightning from the loader's own state, :mod:`sar.data.sampler`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

__all__ = ["LAST_NAME", "LastCheckpoint", "training_progress"]

LAST_NAME = "last.ckpt"


def training_progress(trainer: pl.Trainer) -> dict[str, Any]:
    """Where training stands: epoch, batches processed in it, whether its training is done, epochs completed,
    global step."""
    batches = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    total = trainer.num_training_batches
    epoch_done = total != float("inf") and batches >= int(total)
    return {
        "epoch": int(trainer.current_epoch),
        "batches": batches,
        "epoch_done": bool(epoch_done),
        "global_step": int(trainer.global_step),
        "epochs_completed": int(trainer.current_epoch) + int(epoch_done),
    }


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` at the save points of the module docstring."""

    path_name = LAST_NAME

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps or 0)

    @property
    def path(self) -> Path:
        return self.dirpath / LAST_NAME

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(str(self.path))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        last_batch = trainer.num_training_batches != float("inf") and batch_idx + 1 >= trainer.num_training_batches
        every = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        if last_batch or every:
            self._save(trainer)

    def _in_fit(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking and not trainer.fast_dev_run

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._in_fit(trainer):
            self._save(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["sar_progress"] = training_progress(trainer)
