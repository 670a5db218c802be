"""``python -m sar.bench bottomup --task bottomup``: the four multi-person heads trained under one budget on the
embedded default (the same ``sar.train`` overrides for each), with the oracle AP of each head's codec beside them.

The oracle AP is the whole validation path scored on the ground truth itself: every val image's encoded targets
turned into the outputs a perfect head would give (the codec's ``oracle_outputs``), decoded, mapped back to image
pixels and scored by the dataset's evaluator, exactly as :meth:`BottomUpSystem.validation_step` does for the network
(no flip: a perfect output needs no second pass). It bounds what the head's decoding can reach on this val set.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

from sar.systems.bottomup import BottomUpSystem

__all__ = ["HEADS", "OracleBottomUpSystem", "bench_bottomup", "oracle_metrics"]

HEADS: tuple[str, ...] = ("sar_center", "sar_ae", "ae", "dekr")
METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR", "kpt_error_px", "train_seconds")


class OracleBottomUpSystem(BottomUpSystem):
    """:class:`BottomUpSystem` whose network is replaced by the codec's oracle outputs of the batch's targets."""

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        self._batch = batch
        return super().validation_step(batch, batch_idx, dataloader_idx)

    @torch.no_grad()
    def predict_poses(self, images: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        targets = {k: v.cpu() for k, v in self._batch["targets"].items()}
        return self.codec.decode(self.codec.oracle_outputs(targets))


def oracle_metrics(config: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of :class:`OracleBottomUpSystem` on the val set of a run config (a run's config.yaml), in this
    process on the CPU."""
    from sar.build import build_datamodule
    from sar.stored_config import upgrade_config

    config = upgrade_config(copy.deepcopy(dict(config)))
    config["dataset"] = {**config["dataset"], "num_workers": 0}
    config["task"] = {**config["task"], "flip_test": False, "test_scales": [1.0]}  # targets at the input size
    system = OracleBottomUpSystem(config)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(system, datamodule=build_datamodule(config, system), verbose=False)
    return system.last_metrics


def bench_bottomup(extra: Sequence[str], heads: Sequence[str] = HEADS) -> dict[str, dict[str, Any]]:
    """``python -m sar.train task=bottomup head=<head> <extra>`` for each head (one budget: the task's defaults
    plus ``extra``), each with its wall time, headline metrics and the oracle AP of its codec on the same val set."""
    from sar.bench import bench_dir, timed_train

    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out: dict[str, dict[str, Any]] = {}
    for head in heads:
        result = timed_train(["task=bottomup", f"head={head}"], bench_dir(f"{stamp}-bottomup-{head}"), extra,
                             METRICS)
        config = yaml.safe_load((Path(result["run_dir"]) / "config.yaml").read_text())
        result["oracle_AP"] = float(oracle_metrics(config)["AP"])
        out[head] = result
        print(json.dumps({head: result}))
    return out


def bottomup_table(result: Mapping[str, Mapping[str, Any]]) -> str:
    """The markdown block of :func:`bench_bottomup`."""
    rows = ["| head | AP | AP50 | AP75 | APM | APL | AR | kpt error (px) | oracle AP | train s | wall s | command |",
            "|---" * 12 + "|"]
    for head, r in result.items():
        rows.append(f"| {head} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} | {r['APM']:.3f} | {r['APL']:.3f} | "
                    f"{r['AR']:.3f} | {r['kpt_error_px']:.2f} | {r['oracle_AP']:.3f} | {r['train_seconds']} | "
                    f"{r['wall_s']} | `{r['command']}` |")
    return "\n".join(rows) + "\n"
