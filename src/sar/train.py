"""`python -m sar.train [overrides]`: train and evaluate one run (or a Hydra multirun sweep with -m).

Everything a run produces lands in its run directory (``hydra.run.dir``): ``config.yaml`` (resolved),
``checkpoints/`` (best by the task's monitored metric, plus ``last.ckpt``), logger files, the COCO results
json of the final evaluation and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar

from sar.data.datamodule import TopDownDataModule
from sar.evaluation.results import report_metrics
from sar.systems.topdown import TopDownSystem
from sar.utils.config import print_config, save_config, to_container
from sar.utils.hydra_ddp import sweep_job
from sar.utils.loggers import build_logger
from sar.utils.scale import prepare_run_config

log = logging.getLogger("sar.train")

TRAINER_KEYS = (
    "accelerator", "devices", "num_nodes", "strategy", "precision", "max_epochs", "max_steps", "max_time",
    "check_val_every_n_epoch", "val_check_interval", "log_every_n_steps", "gradient_clip_val",
    "accumulate_grad_batches", "num_sanity_val_steps", "limit_train_batches", "limit_val_batches",
    "deterministic", "benchmark", "sync_batchnorm",
)


def resolve_ckpt_path(ckpt_path: str | None, ckpt_dir: Path, auto_resume: bool = True) -> str | None:
    """`last` means this run directory's last.ckpt (None when there is none yet); else a path or None.

    With ``auto_resume`` a run whose directory already holds ``checkpoints/last.ckpt`` resumes from it even
    when ``ckpt_path`` is null (a requeued SLURM job restarts the same command in the same directory).
    """
    if ckpt_path in (None, "", "null"):
        last = ckpt_dir / "last.ckpt"
        if auto_resume and last.exists():
            log.info("resuming from %s (this run directory already has one; auto_resume=false to disable)", last)
            return str(last)
        return None
    if ckpt_path == "last":
        last = ckpt_dir / "last.ckpt"
        return str(last) if last.exists() else None
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path {path} does not exist")
    return str(path)


RESUME_KEYS = ("backbone", "head", "input_size", "optim")  # what must match for a resume to continue the same run


def check_resume_compatible(ckpt_path: str, config: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint written by a different model / optimiser config, naming the keys."""
    import torch

    saved = (torch.load(ckpt_path, map_location="cpu", weights_only=False).get("hyper_parameters") or {}).get("cfg")
    if not saved:
        return
    def part(cfg: dict[str, Any], key: str) -> Any:  # the lr scaling may differ (another device count)
        value = cfg.get(key)
        return {k: v for k, v in value.items() if k != "scaled"} if isinstance(value, dict) else value

    differ = [k for k in RESUME_KEYS if part(saved, k) != part(config, k)]
    differ += [f"dataset.{k}" for k in ("name", "spec") if saved["dataset"].get(k) != config["dataset"].get(k)]
    if differ:
        raise ValueError(
            f"cannot resume from {ckpt_path}: it was written by a run whose {', '.join(differ)} differ from this "
            f"run's. Start a new run directory (hydra.run.dir=...), pass auto_resume=false, or ckpt_path=<file>."
        )


def merge_head_evaluation(cfg: DictConfig) -> None:
    """A head's ``evaluation:`` block overrides ``task.evaluation`` (e.g. SAR's keypoint-score threshold, see
    conf/head/sar.yaml); the merged values are what the saved config and the checkpoint carry."""
    head_eval = cfg.head.get("evaluation") if "head" in cfg else None
    if head_eval:
        with open_dict(cfg):
            cfg.task.evaluation = OmegaConf.merge(cfg.task.evaluation, head_eval)


def run(cfg: DictConfig, run_dir: Path, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    merge_head_evaluation(cfg)
    prepare_run_config(cfg)  # validates trainer.precision; optim.scaled = global batch and effective lr
    print_config(cfg)
    save_config(cfg, run_dir)
    pl.seed_everything(int(cfg.seed), workers=True)
    config = to_container(cfg)

    system = TopDownSystem(config)
    augmentation = {**config["task"]["augmentation"], **(config["dataset"].get("augmentation") or {})}
    datamodule = TopDownDataModule(
        config["dataset"], system.spec, system.codec, augmentation,
        padding=float(config["task"].get("padding", 1.25)), seed=int(cfg.seed),
    )
    ckpt_dir = run_dir / "checkpoints"
    monitor = config["task"]["monitor"]
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, monitor=monitor, mode=config["task"]["monitor_mode"], save_last=True, save_top_k=1,
        filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
    )
    callbacks: list[pl.Callback] = [checkpoint]
    every = config["trainer"].get("checkpoint_every_n_steps")
    if every:  # a rolling mid-epoch last.ckpt (preemptible clusters); resumes exactly (sar.data.sampler)
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=int(every), save_last=True,
                                         save_top_k=0, save_on_train_epoch_end=False))
    callbacks += [RichProgressBar(), LearningRateMonitor(logging_interval="step"), *(extra_callbacks or [])]
    trainer_kwargs = {k: v for k, v in config["trainer"].items() if k in TRAINER_KEYS and v is not None}
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=build_logger(config["logger"], run_dir, str(cfg.run_name), config),
        callbacks=callbacks,
        **trainer_kwargs,
    )
    start = time.time()
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), ckpt_dir, bool(cfg.get("auto_resume", True)))
    if ckpt_path:
        check_resume_compatible(ckpt_path, config)
    trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
    train_seconds = time.time() - start

    result: dict[str, Any] = {"run_dir": str(run_dir), "train_seconds": round(train_seconds, 1)}
    result["table"] = config.get("table")
    if cfg.get("final_eval", True):
        best = checkpoint.best_model_path or str(ckpt_dir / "last.ckpt")
        system.results_dir = run_dir
        trainer.validate(system, datamodule=datamodule, ckpt_path=best, verbose=False)
        result.update(system.last_metrics)
        result["checkpoint"] = best
    result["epochs"] = int(trainer.current_epoch)
    result["global_step"] = int(trainer.global_step)
    if trainer.is_global_zero:
        report_metrics(result, run_dir, log)
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with sweep_job():  # -m with DDP: extra ranks re-run this job, not the sweep (sar.utils.hydra_ddp)
        result = run(cfg, run_dir)
    return result.get(str(cfg.task.monitor).split("/")[-1])


if __name__ == "__main__":
    main()
