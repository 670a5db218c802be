"""Validate a checkpoint with N CPU processes (used by tests/test_ddp.py).

    python tests/scripts/ddp_validate.py CKPT OUT_DIR DEVICES VAL_BATCH_SIZE [model|oracle]

``oracle`` replaces the network's output by the GT keypoints plus noise and random scores drawn from the
sample's dataset index (so AP is far from 0 and the ranking, OKS-NMS and COCOeval paths are exercised;
GT boxes only). DEVICES > 1 runs Lightning's `ddp` strategy (gloo): its launcher re-runs this script once per extra rank.
Every rank writes ``OUT_DIR/metrics_rank<r>.json`` (the metrics it logged) and, with its shard's size,
``OUT_DIR/shard_rank<r>.json``; only rank 0 may write its results json (``OUT_DIR/results_rank<r>/``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from sar.data.datamodule import TopDownDataModule
from sar.systems.topdown import TopDownSystem

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests folder: its helper modules
from oracle import OracleSystem


class NoisyOracle(OracleSystem):
    """Predictions = GT crop keypoints + index-seeded noise (independent of batch composition and rank)."""

    def perturb(
        self, index: int, keypoints: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + index)
        noise = torch.randn(keypoints.shape[0], 2, generator=gen)
        return keypoints + noise * (1.0 + index % 4), 0.1 + 0.9 * torch.rand(noise.shape[0], generator=gen)


class ShardCounter(pl.Callback):
    """Counts the samples this rank validated per loader (DistributedSampler shard incl. padding)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.counts[dataloader_idx] = self.counts.get(dataloader_idx, 0) + int(batch["image"].shape[0])


def main() -> None:
    ckpt, out, devices, val_bs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    oracle = len(sys.argv) > 5 and sys.argv[5] == "oracle"
    torch.set_num_threads(1)
    system = (NoisyOracle if oracle else TopDownSystem).load_from_checkpoint(ckpt, map_location="cpu")
    config = system.cfg
    dataset_cfg = dict(config["dataset"], val_batch_size=val_bs, num_workers=0)
    if oracle:
        dataset_cfg["val_bbox_file"] = None
    augmentation = {**config["task"]["augmentation"], **(config["dataset"].get("augmentation") or {})}
    datamodule = TopDownDataModule(dataset_cfg, system.spec, system.codec, augmentation,
                                   padding=float(config["task"].get("padding", 1.25)), seed=int(config["seed"]))
    counter = ShardCounter()
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         num_nodes=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[counter])
    system.results_dir = out / f"results_rank{trainer.global_rank}"  # only rank 0 may write there
    trainer.validate(system, datamodule=datamodule, verbose=False)
    rank = trainer.global_rank
    out.mkdir(parents=True, exist_ok=True)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    (out / f"metrics_rank{rank}.json").write_text(json.dumps({"metrics": system.last_metrics, "logged": logged,
                                                              "world_size": trainer.world_size}))
    sizes = {i: len(ds) for i, ds in enumerate(datamodule.val_sets)}
    (out / f"shard_rank{rank}.json").write_text(json.dumps({"counts": counter.counts, "sizes": sizes}))


if __name__ == "__main__":
    main()
