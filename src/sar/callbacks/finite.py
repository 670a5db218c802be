"""Stop a diverging run before it can write a checkpoint or a metric (one rule for every task).

The rule, enforced by :class:`FiniteGuard`:

* training: the loss must be finite before it is back-propagated (``on_before_backward``: no optimiser step is
  taken with it), and every tensor the ``training_step`` returns besides the loss (the network's raw outputs,
  under the key ``outputs``) must be finite;
* validation: every tensor ``validation_step`` returns (the decoded predictions) must be finite.

A violation raises :class:`NonFiniteError` naming the stage, the global step, the epoch, the batch and the
tensor. The run stops there: no checkpoint is written after it (``last.ckpt`` and the best checkpoint stay as
they were; :class:`sar.utils.checkpoint_io.AtomicCheckpointIO` also refuses non-finite weights as a second
line), no validation with non-finite predictions reaches the checkpoint selection, and ``metrics.json`` is not
written. A task opts in by returning its tensors from its steps; the callback needs nothing else.

Note: a finite but huge loss is not an error by itself (the weights of a run with a far too large learning rate
may stay finite for a while); the run is stopped at the first step whose outputs overflow.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from sar.utils.checkpoint_io import named_tensors

__all__ = ["FiniteGuard", "NonFiniteError", "nonfinite_tensors"]


class NonFiniteError(RuntimeError):
    """Training or validation produced a NaN / inf (see the module docstring)."""


def nonfinite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names of the floating tensors (nested in dicts / lists) holding a NaN or inf. Runs every training step:
    the per-tensor flags are gathered on the tensors' device and read back once (one host sync on a GPU)."""
    named = [(name, t) for name, t in named_tensors(obj, prefix) if t.is_floating_point()]
    if not named:
        return []
    devices = {t.device for _, t in named}
    flags = [torch.isfinite(t).all() for _, t in named]
    finite = (torch.stack(flags) if len(devices) == 1 else torch.stack([f.cpu() for f in flags])).tolist()
    return [name or "tensor" for (name, _), ok in zip(named, finite) if not ok]


class FiniteGuard(pl.Callback):
    """Raise :class:`NonFiniteError` at the first non-finite loss, training output or validation prediction."""

    def __init__(self, check_train_outputs: bool = True, check_val_outputs: bool = True) -> None:
        self.check_train_outputs = check_train_outputs
        self.check_val_outputs = check_val_outputs

    @staticmethod
    def _where(trainer: pl.Trainer, stage: str, batch_idx: int | None) -> str:
        batch = f", batch {batch_idx}" if batch_idx is not None else ""
        return f"{stage} at global step {trainer.global_step} (epoch {trainer.current_epoch}{batch})"

    def _fail(self, trainer: pl.Trainer, stage: str, batch_idx: int | None, names: list[str]) -> None:
        raise NonFiniteError(
            f"non-finite values in {', '.join(names[:5])} during {self._where(trainer, stage, batch_idx)}: the run "
            "diverged (lower optim.lr, add trainer.gradient_clip_val, or check the data). Stopped before any "
            "checkpoint of this state was written; the last good checkpoint is unchanged."
        )

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if names := nonfinite_tensors(loss, "loss"):
            self._fail(trainer, "training", None, names)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.check_train_outputs and (names := nonfinite_tensors(outputs)):
            self._fail(trainer, "training", batch_idx, names)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.check_val_outputs and (names := nonfinite_tensors(outputs, "predictions")):
            self._fail(trainer, f"validation (loader {dataloader_idx})", batch_idx, names)
