"""A checkpoint written before the `_target_` composition (codec/loss by `type`, no head.module, no task.system)
loads: its stored config is translated and the rebuilt system predicts exactly as the current one."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from sar.build import upgrade_config
from sar.train import run
from sar.utils.checkpoint import checkpoint_config, load_system
from test_resume import tiny_cfg


def legacy(cfg: dict) -> dict:
    """The config as the code before the change stored it."""
    cfg = copy.deepcopy(cfg)
    for key in ("system", "datamodule"):
        cfg["task"].pop(key)
    cfg.pop("family")
    head = cfg["head"]
    head.pop("module")
    head["codec"] = {"type": "sar", **{k: v for k, v in head["codec"].items() if k != "_target_"}}
    head["loss"] = {"type": "sar", **{k: v for k, v in head["loss"].items() if k != "_target_"}}
    for key in ("optimizer", "lr_scheduler"):
        cfg["optim"].pop(key)
    cfg["dataset"]["evaluator"] = "coco"
    return cfg


def test_old_checkpoint_loads_and_predicts_the_same(tmp_path: Path) -> None:
    run(tiny_cfg(tmp_path, "trainer.max_epochs=1", "final_eval=false"), tmp_path / "run")
    new_file = tmp_path / "run" / "checkpoints" / "last.ckpt"
    data = torch.load(new_file, map_location="cpu", weights_only=False)
    data["hyper_parameters"]["cfg"] = legacy(data["hyper_parameters"]["cfg"])
    old_file = tmp_path / "old.ckpt"
    torch.save(data, old_file)

    translated = checkpoint_config(old_file)
    assert translated["task"]["system"]["_target_"] == "sar.systems.topdown.TopDownSystem"
    assert translated["optim"]["optimizer"] == {"_target_": "torch.optim.Adam", "weight_decay": 0.0}
    assert upgrade_config(translated) == translated  # a current config passes unchanged
    new, old = load_system(new_file), load_system(old_file)
    assert type(old.codec) is type(new.codec) and old.codec.sigma == new.codec.sigma
    assert type(old.loss) is type(new.loss) and old.loss.lambda_ == new.loss.lambda_
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for a, b in zip(new.predict_crops(images), old.predict_crops(images)):
        assert torch.equal(a, b)
