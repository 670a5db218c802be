"""Pins of the refactor of issue 10: initial weights and first training losses of three configs.

``python tests/regression_pins.py capture`` records them into ``tests/data/regression_pins.json`` (done once,
on the code before the change); ``tests/test_regression_pins.py`` recomputes them and compares.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module

PINS = Path(__file__).parent / "data" / "regression_pins.json"
COMMON = [
    "dataset.synthetic.num_train=40", "dataset.synthetic.num_val=6", "dataset.num_workers=0",
    "dataset.batch_size=4", "dataset.val_batch_size=8", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=0", "final_eval=false", "logger=csv",
    # full-size decoding, as when the pins were captured: DCT-reduced decoding (issue 14) changes the crops of the
    # small input sizes below by interpolation noise, by design (tests/test_decode.py)
    "task.max_decode_reduction=1",
]
CONFIGS = {
    "default": [],
    "resnet18_heatmap": ["backbone=resnet18", "head=heatmap", "input_size=[64,64]"],
    "resnet18_rle": ["backbone=resnet18", "head=rle", "input_size=[64,64]"],
}


def state_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Record(pl.Callback):
    def __init__(self) -> None:
        self.hash: str | None = None
        self.losses: list[float] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.hash = state_hash(pl_module.model)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def measure(name: str, data_dir: Path, run_dir: Path) -> dict:
    from sar.train import run

    overrides = [f"dataset.cache_dir={data_dir}", *COMMON, *CONFIGS[name]]
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    record = Record()
    run(cfg, run_dir, extra_callbacks=[record])
    return {"state_hash": record.hash, "losses": record.losses}


if __name__ == "__main__" and sys.argv[1:] == ["capture"]:
    with tempfile.TemporaryDirectory() as tmp:
        pins = {name: measure(name, Path(tmp) / "data", Path(tmp) / name) for name in CONFIGS}
    PINS.parent.mkdir(exist_ok=True)
    PINS.write_text(json.dumps(pins, indent=2) + "\n")
    print(json.dumps(pins, indent=2))
