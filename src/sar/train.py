"""`python -m sar.train [overrides]`: train and evaluate one run (or a Hydra multirun sweep with -m).

Everything a run produces lands in its run directory (``hydra.run.dir``): ``config.yaml`` (resolved),
``checkpoints/`` (best by the task's monitored metric, plus ``last.ckpt``), logger files, the COCO results
json of the final evaluation and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint

from sar.build import build_task
from sar.callbacks import LastCheckpoint
from sar.evaluation.results import METRICS_FILENAME
from sar.run_steps import build_lightning_trainer, finish_run, validate_checkpoint
from sar.stored_config import upgrade_config
from sar.utils.checkpoint_io import (
    is_readable_checkpoint,
    newest_readable_checkpoint,
    remove_stale_temp_files,
)
from sar.utils.config import to_container, write_run_config
from sar.utils.config_keys import require
from sar.utils.errors import one_line_errors
from sar.utils.hydra_ddp import sweep_job
from sar.utils.instantiate import build
from sar.utils.loggers import build_logger
from sar.utils.run_lock import env_global_rank
from sar.utils.scale import machine_description, prepare_run_config

log = logging.getLogger("sar.train")

def resolve_ckpt_path(ckpt_path: str | None, ckpt_dir: Path, auto_resume: bool = True) -> str | None:
    """`last` means this run directory's last.ckpt (None when there is none yet); else a path or None.

    With ``auto_resume`` a run whose directory already holds ``checkpoints/last.ckpt`` resumes from it even
    when ``ckpt_path`` is null (a requeued SLURM job restarts the same command in the same directory). When that
    ``last.ckpt`` cannot be read (a kill during a write on a filesystem without atomic moves, a full disk), the
    run resumes from the newest readable checkpoint of the directory, with a warning naming both.
    """
    if ckpt_path in (None, "", "null", "last"):
        if ckpt_path != "last" and not auto_resume:
            return None
        last = ckpt_dir / LastCheckpoint.path_name
        if not last.exists():
            return None
        if is_readable_checkpoint(last):
            log.info("resuming from %s (this run directory already has one; auto_resume=false to disable)", last)
            return str(last)
        fallback = newest_readable_checkpoint(ckpt_dir, exclude=last)
        if fallback is None:
            raise RuntimeError(f"{last} is not a readable checkpoint and {ckpt_dir} holds no other readable one: "
                               "start a new run directory, or pass ckpt_path=<file>")
        log.warning("%s is not a readable checkpoint: resuming from %s, the newest readable checkpoint of the run "
                    "directory", last, fallback)
        return str(fallback)
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path {path} does not exist")
    return str(path)


def read_resume_checkpoint(ckpt: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    """The checkpoint a run resumes from, memory-mapped (its config and progress are read, its tensors are not:
    Lightning loads them itself); an already loaded dict is returned as it is."""
    if isinstance(ckpt, Mapping):
        return ckpt
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)


def finished_metrics(ckpt: str | Mapping[str, Any], config: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """The saved metrics when the run in ``run_dir`` already did everything this config asks (its last
    checkpoint completed ``trainer.max_epochs`` epochs or reached ``trainer.max_steps``, and the final evaluation
    wrote ``metrics.json``); None when there is training (or the final evaluation) left to do. ``ckpt``: the
    checkpoint's path or its loaded dict."""
    metrics_file = run_dir / METRICS_FILENAME
    if not metrics_file.is_file():
        return None
    progress = read_resume_checkpoint(ckpt).get("sar_progress")
    if not progress:
        return None
    trainer = config["trainer"]
    # max_steps is an optional Trainer argument (+trainer.max_steps=...): absent, Lightning has no step limit
    max_epochs, max_steps = trainer["max_epochs"], trainer.get("max_steps")
    done = max_epochs is not None and int(max_epochs) >= 0 and progress["epochs_completed"] >= int(max_epochs)
    done = done or (max_steps is not None and int(max_steps) > 0 and progress["global_step"] >= int(max_steps))
    if not done:
        return None
    try:
        return json.loads(metrics_file.read_text())
    except ValueError:
        return None  # unreadable metrics: redo the final evaluation


# What must match for a resume to continue the same run.
RESUME_KEYS = ("backbone", "neck", "head", "input_size", "optim")
#: ``optim.optimizer`` keys that choose how the update is computed, not what it is: a run may resume with another
#: value (a checkpoint written before ``fused: true`` was in conf/optim resumes with it).
RESUME_FREE_OPTIMIZER_KEYS = ("fused", "foreach")


def check_resume_compatible(ckpt: str | Mapping[str, Any], config: dict[str, Any], source: str | None = None) -> None:
    """Refuse to resume from a checkpoint written by a different model / optimiser config, naming the keys.
    ``ckpt``: the checkpoint's path or its loaded dict (``source`` then names the file)."""
    ckpt_path = source or str(ckpt)
    saved = (read_resume_checkpoint(ckpt).get("hyper_parameters") or {}).get("cfg")
    if not saved:
        return
    # The stored config is data: it may predate keys or the current layout (translated as when it is built).
    saved, config = upgrade_config(saved), upgrade_config(config)

    def part(value: Any) -> Any:  # the lr scaling may differ (another device count), and the update's kernel
        if not isinstance(value, dict):
            return value
        value = {k: v for k, v in value.items() if k != "scaled"}
        if isinstance(value.get("optimizer"), dict):
            value["optimizer"] = {k: v for k, v in value["optimizer"].items() if k not in RESUME_FREE_OPTIMIZER_KEYS}
        return value

    differ = [k for k in RESUME_KEYS if part(saved.get(k)) != part(config[k])]
    differ += [f"dataset.{k}" for k in ("name", "spec") if saved["dataset"].get(k) != config["dataset"][k]]
    if differ:
        raise ValueError(
            f"cannot resume from {ckpt_path}: it was written by a run whose {', '.join(differ)} differ from this "
            f"run's. Start a new run directory (hydra.run.dir=...), pass auto_resume=false, or ckpt_path=<file>."
        )


def merge_head_evaluation(cfg: DictConfig) -> None:
    """A head's ``evaluation:`` block overrides ``task.evaluation`` (e.g. SAR's keypoint-score threshold, see
    conf/head/sar.yaml); the merged values are what the saved config and the checkpoint carry."""
    # head.evaluation is an optional block (only heads that change the evaluation have one, e.g. SAR's)
    head_eval = cfg.head.get("evaluation") if "head" in cfg else None
    if head_eval:
        with open_dict(cfg):
            cfg.task.evaluation = OmegaConf.merge(cfg.task.evaluation, head_eval)


def run(cfg: DictConfig, run_dir: Path, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Train and evaluate one run in ``run_dir``, holding the directory's lock (``run_lock``, sar.utils.run_lock)
    throughout; under DDP only global rank 0 takes it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    with build(cfg.run_lock, "run_lock", run_dir=run_dir, enabled=env_global_rank() == 0):
        return _run(cfg, run_dir, extra_callbacks)


def build_callbacks(config: dict[str, Any]) -> list[pl.Callback]:
    """The run's callbacks, in the order of the `callbacks` config (entries set to null are dropped)."""
    return [build(cb, f"callbacks.{name}") for name, cb in (require(config, "callbacks") or {}).items() if cb]


def build_trainer(config: dict[str, Any], run_dir: Path, callbacks: list[pl.Callback], logger: Any) -> pl.Trainer:
    """The Lightning Trainer of the run config's `trainer` block (:func:`sar.run_steps.build_lightning_trainer`)
    with the run's callbacks and logger."""
    return build_lightning_trainer(config["trainer"], run_dir, logger=logger, callbacks=callbacks)


def best_checkpoint_path(trainer: pl.Trainer) -> str | None:
    """The best checkpoint so far (the first ModelCheckpoint's), None when there is none."""
    best = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
    return (best.best_model_path or None) if best is not None else None


def _run(cfg: DictConfig, run_dir: Path, extra_callbacks: list[pl.Callback] | None) -> dict[str, Any]:
    merge_head_evaluation(cfg)
    prepare_run_config(cfg)  # validates trainer.precision; optim.scaled = global batch and effective lr
    config = to_container(cfg)
    ckpt_dir = run_dir / "checkpoints"
    if env_global_rank() == 0:
        remove_stale_temp_files(ckpt_dir)  # partial files of killed checkpoint writes (we hold the lock)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, ckpt_dir, bool(cfg.auto_resume))
    if ckpt_path:
        resume = read_resume_checkpoint(ckpt_path)  # read once for the two checks below
        check_resume_compatible(resume, config, ckpt_path)
        if (done := finished_metrics(resume, config, run_dir)) is not None:
            log.info("%s already finished this run (%s epochs; metrics in %s): nothing to do. Raise "
                     "trainer.max_epochs to continue it, or start a new run directory.", run_dir,
                     config["trainer"]["max_epochs"], run_dir / METRICS_FILENAME)
            return {**done, "already_finished": True}
    write_run_config(cfg, run_dir)
    pl.seed_everything(int(cfg.seed), workers=True)

    system, datamodule = build_task(config)
    # Every input is checked before the first step: records, images, non-empty loaders, a val set that can be
    # scored when a metric is monitored (the evaluator itself is built in the system's setup).
    datamodule.setup("fit")
    if hasattr(datamodule, "check_trainable"):
        datamodule.check_trainable(config["task"]["monitor"])
    callbacks = build_callbacks(config) + list(extra_callbacks or [])
    logger = build_logger(config["logger"], run_dir, str(cfg.run_name), config)
    trainer = build_trainer(config, run_dir, callbacks, logger)
    start = time.time()
    trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
    train_seconds = time.time() - start

    # the machine beside the seconds: the same epochs take twice as long on a slower 2-core CPU (BENCHMARKS.md)
    result: dict[str, Any] = {"run_dir": str(run_dir), "train_seconds": round(train_seconds, 1),
                              "machine": machine_description()}
    result["table"] = config["table"]
    if cfg.final_eval:
        best = best_checkpoint_path(trainer) or str(ckpt_dir / LastCheckpoint.path_name)
        result.update(validate_checkpoint(trainer, system, datamodule, best, run_dir))
        result["checkpoint"] = best
    result["epochs"] = int(trainer.current_epoch)
    result["global_step"] = int(trainer.global_step)
    return finish_run(trainer, result, run_dir, log)


@hydra.main(version_base="1.3", config_path="pkg://sar.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # -m with DDP: extra ranks re-run this job, not the sweep (sar.utils.hydra_ddp); a missing weights file or
    # config key: one line naming it (sar.utils.errors)
    with sweep_job(), one_line_errors("sar.train"):
        result = run(cfg, run_dir)
    return result.get(str(cfg.task.monitor).split("/")[-1])


if __name__ == "__main__":
    import sys

    from sar.utils.cli import check_overrides

    check_overrides(sys.argv[1:], "train", "sar.train")  # a misspelt key: one line naming it, not a traceback
    main()
