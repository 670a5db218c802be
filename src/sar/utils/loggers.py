"""Build the Lightning logger named by the `logger` config group, writing inside the run directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger


def build_logger(cfg: Mapping[str, Any], run_dir: Path, run_name: str, config: dict | None = None) -> Logger:
    kind = cfg.get("type", "csv")
    if kind == "csv":
        # Lightning's CSV writer deletes an existing metrics.csv; a resumed run keeps it as metrics-part<k>.csv.
        previous = run_dir / "csv" / "metrics.csv"
        if previous.exists():
            k = len(list(previous.parent.glob("metrics-part*.csv")))
            previous.rename(previous.with_name(f"metrics-part{k}.csv"))
        return CSVLogger(save_dir=str(run_dir), name="", version="csv")
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard")
    if kind == "wandb":
        # One W&B run per run directory: its id is kept in wandb_run_id.txt, so a resumed run (ckpt_path=last
        # or auto-resume) continues the same W&B run instead of starting a new one.
        id_file = run_dir / "wandb_run_id.txt"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            import secrets

            run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
            if rank_zero_only.rank == 0:  # only the process that owns the W&B run records it
                id_file.write_text(run_id + "\n")
        logger = WandbLogger(
            project=cfg.get("project", "sar"), entity=cfg.get("entity"), name=run_name, save_dir=str(run_dir),
            mode=cfg.get("mode", "offline"), tags=list(cfg.get("tags") or []), id=run_id, resume="allow",
        )
        if config is not None:
            logger.log_hyperparams(config)
        return logger
    raise ValueError(f"unknown logger '{kind}' (csv, tensorboard, wandb)")
