"""The steps ``sar.train`` and ``sar.evaluate`` share once a run config is settled: the Lightning Trainer of a
``trainer`` config, the evaluation of a checkpoint into the run directory, and the report at the end."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from sar.evaluation.results import report_metrics
from sar.utils.instantiate import build

__all__ = ["SAR_TRAINER_KEYS", "build_lightning_trainer", "finish_run", "validate_checkpoint"]

#: Keys of the `trainer` config that are sar's, not pytorch_lightning.Trainer arguments.
SAR_TRAINER_KEYS = ("checkpoint_every_n_steps",)


def build_lightning_trainer(
    trainer_cfg: Mapping[str, Any], run_dir: str | os.PathLike[str], **parts: Any
) -> pl.Trainer:
    """The Lightning Trainer of a `trainer` config (``_target_``) writing under ``run_dir``: every key is passed
    on (null: Lightning's default) except sar's own (:data:`SAR_TRAINER_KEYS`), with ``parts`` (``logger``,
    ``callbacks``)."""
    kwargs = {k: v for k, v in trainer_cfg.items() if k not in SAR_TRAINER_KEYS and v is not None}
    return build(kwargs, "trainer", default_root_dir=str(run_dir), **parts)


def validate_checkpoint(
    trainer: pl.Trainer, system: Any, datamodule: Any, ckpt_path: str, run_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Validate ``system`` with the weights of ``ckpt_path``; the evaluator's results json goes to ``run_dir``.
    Returns the system's metrics (``system.last_metrics``)."""
    system.results_dir = Path(run_dir)
    trainer.validate(system, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    return dict(system.last_metrics)


def finish_run(
    trainer: pl.Trainer, result: dict[str, Any], run_dir: str | os.PathLike[str], log: logging.Logger
) -> dict[str, Any]:
    """Write ``result`` to the run directory's metrics.json and log it (global rank 0 only); return it."""
    if trainer.is_global_zero:
        report_metrics(result, run_dir, log)
    return result
