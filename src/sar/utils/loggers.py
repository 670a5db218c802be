"""The Lightning loggers of the `logger` config group, each writing inside the run directory.

Each ``conf/logger/<name>.yaml`` names one of the factories below as its ``_target_``; sar.train calls it with
``run_dir``, ``run_name`` and ``config`` (the resolved run config) besides the file's own keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

__all__ = ["csv_logger", "tensorboard_logger", "wandb_logger"]


def csv_logger(run_dir: Path, run_name: str, config: dict | None = None) -> CSVLogger:
    """``<run_dir>/csv/metrics.csv``. Lightning's CSV writer deletes an existing metrics.csv; a resumed run keeps
    it as ``metrics-part<k>.csv``."""
    previous = Path(run_dir) / "csv" / "metrics.csv"
    if previous.exists():
        k = len(list(previous.parent.glob("metrics-part*.csv")))
        previous.rename(previous.with_name(f"metrics-part{k}.csv"))
    return CSVLogger(save_dir=str(run_dir), name="", version="csv")


def tensorboard_logger(run_dir: Path, run_name: str, config: dict | None = None) -> TensorBoardLogger:
    """TensorBoard event files in ``<run_dir>/tensorboard``."""
    return TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard")


def wandb_logger(run_dir: Path, run_name: str, config: dict | None = None, *, project: str, entity: str | None,
                 mode: str, tags: list[str] | None = None) -> WandbLogger:
    """One W&B run per run directory: its id is kept in ``wandb_run_id.txt``, so a resumed run (ckpt_path=last or
    auto-resume) continues the same W&B run instead of starting a new one; the run config is logged."""
    id_file = Path(run_dir) / "wandb_run_id.txt"
    if id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        import secrets

        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        if rank_zero_only.rank == 0:  # only the process that owns the W&B run records it
            id_file.write_text(run_id + "\n")
    logger = WandbLogger(project=project, entity=entity, name=run_name, save_dir=str(run_dir), mode=mode,
                         tags=list(tags or []), id=run_id, resume="allow")
    if config is not None:
        logger.log_hyperparams(config)
    return logger


def build_logger(cfg: Any, run_dir: Path, run_name: str, config: dict | None = None) -> Any:
    """The logger of a ``logger`` config (its ``_target_``), for this run directory."""
    from sar.utils.instantiate import build

    return build(cfg, "logger", run_dir=Path(run_dir), run_name=run_name, config=config)
