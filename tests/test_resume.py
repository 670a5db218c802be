"""Interrupt a run mid-epoch, resume it, and get exactly the uninterrupted run's weights and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module

from sar.train import run


class Interrupt(RuntimeError):
    pass


class InterruptAtStep(pl.Callback):
    """Raise once the optimiser has taken ``step`` steps (the step-``step`` checkpoint is on disk by then)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Interrupt(f"interrupted at step {self.step} (batch {batch_idx} of epoch {trainer.current_epoch})")


def tiny_cfg(tmp_path: Path, *extra: str):
    overrides = [
        f"dataset.cache_dir={tmp_path / 'data'}", "dataset.synthetic.num_train=40", "dataset.synthetic.num_val=6",
        "dataset.num_workers=0", "dataset.batch_size=4", "dataset.val_batch_size=8", "input_size=[64,64]",
        "backbone=resnet18", "head.deconv.channels=16", "head.deconv.num_layers=1",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=5",
        "trainer.checkpoint_every_n_steps=1", "optim.warmup_iters=3", *extra,
    ]
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The uninterrupted reference run: 2 epochs x 5 steps."""
    tmp = tmp_path_factory.mktemp("full")
    return tmp, run(tiny_cfg(tmp), tmp / "run")


def test_interrupted_run_resumes_exactly(full_run: tuple[Path, dict]) -> None:
    tmp, full = full_run
    broken_dir = tmp / "resumed"
    with pytest.raises(Interrupt):  # step 7 = batch 2 of epoch 2
        run(tiny_cfg(tmp), broken_dir, extra_callbacks=[InterruptAtStep(7)])
    ckpt = torch.load(broken_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 7
    before = (broken_dir / "csv" / "metrics.csv").read_text()
    resumed = run(tiny_cfg(tmp), broken_dir)  # auto-resume from the run directory's last.ckpt

    assert (broken_dir / "csv" / "metrics-part0.csv").read_text() == before  # the first part's log is kept
    assert resumed["global_step"] == full["global_step"] == 10
    a, b = weights(tmp / "run" / "checkpoints" / "last.ckpt"), weights(broken_dir / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key in ("AP", "AR", "kpt_error_px", "PCK@0.05"):
        assert resumed[key] == full[key], key


def assert_same_weights(a_file: Path, b_file: Path) -> None:
    a, b = weights(a_file), weights(b_file)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("points", [(5, 8), (1, 5, 9), (3, 4, 6)], ids=lambda p: "-".join(map(str, p)))
def test_repeated_interruptions_resume_exactly(full_run: tuple[Path, dict], tmp_path: Path, points) -> None:
    """Two and three interruptions, one of them at an epoch boundary (step 5: the epoch's last batch) after the
    process had itself resumed: the old code replayed the epoch (13-14 steps, weights off by up to 4)."""
    tmp, full = full_run
    broken_dir = tmp_path / "resumed"
    for step in points:
        with pytest.raises(Interrupt):
            run(tiny_cfg(tmp), broken_dir, extra_callbacks=[InterruptAtStep(step)])
    resumed = run(tiny_cfg(tmp), broken_dir)
    assert resumed["global_step"] == full["global_step"] == 10
    assert_same_weights(tmp / "run" / "checkpoints" / "last.ckpt", broken_dir / "checkpoints" / "last.ckpt")
    for key in ("AP", "AR", "kpt_error_px"):
        assert resumed[key] == full[key], key
    # one last checkpoint, one best: no last-v1 / best-v1 from a second writer or a relaunch
    names = sorted(p.name for p in (broken_dir / "checkpoints").iterdir())
    assert names.count("last.ckpt") == 1 and not [n for n in names if "-v" in n], names


def test_resume_without_the_sampler_state_would_differ(full_run: tuple[Path, dict], tmp_path: Path) -> None:
    """Control: resuming with the loader state dropped (the epoch replays from its start) changes the weights,
    so the equality above is not vacuous."""
    full = full_run[0] / "run"
    broken_dir = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        run(tiny_cfg(tmp_path), broken_dir, extra_callbacks=[InterruptAtStep(7)])
    last = broken_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    ckpt["loops"]["fit_loop"]["state_dict"].pop("combined_loader", None)
    torch.save(ckpt, last)
    run(tiny_cfg(tmp_path), broken_dir)
    a, b = weights(full / "checkpoints" / "last.ckpt"), weights(last)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from sar.train import check_resume_compatible

    config = OmegaConf.to_container(tiny_cfg(tmp_path), resolve=True)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"cfg": config}}, ckpt)
    check_resume_compatible(str(ckpt), config)  # same config: fine
    check_resume_compatible(str(ckpt), {**config, "optim": {**config["optim"], "scaled": {"lr": 1.0}}})
    # a run written before conf/optim chose the fused kernel resumes with it: the same update rule
    unfused = {k: v for k, v in config["optim"]["optimizer"].items() if k != "fused"}
    torch.save({"hyper_parameters": {"cfg": {**config, "optim": {**config["optim"], "optimizer": unfused}}}}, ckpt)
    check_resume_compatible(str(ckpt), config)
    other_rule = {**config["optim"], "optimizer": {**config["optim"]["optimizer"], "weight_decay": 0.5}}
    with pytest.raises(ValueError, match="optim differ"):
        check_resume_compatible(str(ckpt), {**config, "optim": other_rule})
    torch.save({"hyper_parameters": {"cfg": config}}, ckpt)
    other = {**config, "head": {**config["head"], "name": "heatmap"}, "input_size": [96, 128]}
    with pytest.raises(ValueError, match="head, input_size differ"):
        check_resume_compatible(str(ckpt), other)
