"""DDP on CPU (gloo, 2 processes): a training run completes, and evaluation equals one process's exactly.

The validation sets have an odd number of samples (7 GT boxes, 9 detector boxes), so Lightning's
DistributedSampler pads them with repeated samples: the gathered predictions must be de-duplicated by their
dataset index, or the keypoint error / PCK (and the AP with an oracle) would differ from one process's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli_runs import run_module
from conftest import local_ddp_env

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("scripts") / "ddp_validate.py"



@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `python -m sar.train` run with trainer=ddp on 2 CPU processes (the training test and the
    checkpoint of the evaluation tests)."""
    tmp = tmp_path_factory.mktemp("ddp")
    run_dir = tmp / "run"
    run_module(
        "sar.train", f"hydra.run.dir={run_dir}", f"dataset.cache_dir={tmp / 'data'}",
        "dataset.synthetic.num_train=32", "dataset.synthetic.num_val=4", "dataset.num_workers=0",
        "dataset.batch_size=4", "dataset.val_batch_size=4", "input_size=[64,64]", "head.deconv.channels=32",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32",
        "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=2",
        "optim.warmup_iters=2", "optim.base_batch_size=4", timeout=420, env=local_ddp_env(),
    )
    return run_dir


def validate(ckpt: Path, out: Path, devices: int, mode: str) -> list[dict]:
    # The network's outputs depend on the batch's composition at the 1e-9 level (CPU kernels differ with the
    # batch): the model runs with batches of 1, so that every crop's numbers are bitwise the same in both runs;
    # the oracle (no network) with uneven batches of 3.
    batch = "1" if mode == "model" else "3"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(ckpt), str(out), str(devices), batch, mode],
                          check=False, capture_output=True, text=True, timeout=420, env=local_ddp_env())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return [json.loads((out / f"metrics_rank{r}.json").read_text()) for r in range(devices)]


def test_ddp_training_run_completes(ddp_run: Path) -> None:
    metrics = json.loads((ddp_run / "metrics.json").read_text())
    for key in ("AP", "AP50", "AR", "kpt_error_px", "PCK@0.05"):
        assert isinstance(metrics[key], float)
    assert metrics["global_step"] == 2
    assert (ddp_run / "checkpoints" / "last.ckpt").exists()
    assert (ddp_run / "results_keypoints.json").exists()
    scaled = yaml.safe_load((ddp_run / "config.yaml").read_text())["optim"]["scaled"]
    assert scaled["world_size"] == 2 and scaled["global_batch_size"] == 8
    assert scaled["lr"] == pytest.approx(2 * scaled["base_lr"])  # linear rule, base batch 4


@pytest.mark.parametrize("mode", ["model", "oracle"])
def test_ddp_validation_equals_one_process(ddp_run: Path, tmp_path: Path, mode: str) -> None:
    ckpt = next((ddp_run / "checkpoints").glob("best-epoch*.ckpt"))
    single = validate(ckpt, tmp_path / "one", 1, mode)[0]
    ranks = validate(ckpt, tmp_path / "two", 2, mode)
    assert single["world_size"] == 1 and all(r["world_size"] == 2 for r in ranks)

    # the padding path is exercised: odd loader sizes, and the two shards together hold a repeat
    shards = [json.loads((tmp_path / "two" / f"shard_rank{r}.json").read_text()) for r in range(2)]
    sizes = shards[0]["sizes"]
    assert any(n % 2 == 1 for n in sizes.values())
    for loader, n in sizes.items():
        assert sum(s["counts"][loader] for s in shards) == n + n % 2

    expected = single["metrics"]
    assert {"AP", "AP50", "AP75", "AR", "kpt_error_px", "PCK@0.05"} <= set(expected)
    if mode == "oracle":
        assert 0.05 < expected["AP"] < 1.0 and expected["kpt_error_px"] > 0
    for rank in ranks:  # exactly the same numbers, computed once and broadcast: every rank logs them
        assert rank["metrics"] == expected
        assert rank["logged"] == single["logged"]
    assert (tmp_path / "two" / "results_rank0" / "results_keypoints.json").exists()
    assert not (tmp_path / "two" / "results_rank1").exists()  # only rank 0 writes files
    one = json.loads((tmp_path / "one" / "results_rank0" / "results_keypoints.json").read_text())
    two = json.loads((tmp_path / "two" / "results_rank0" / "results_keypoints.json").read_text())
    assert one == two


def test_ddp_inside_a_local_sweep(tmp_path: Path) -> None:
    """`-m` with 2 jobs x 2 DDP processes (default sweep dir): each job's rank 1 runs that job only, in that
    job's directory (sar.utils.hydra_ddp), and the next job starts its own ranks."""
    run_module(
        "sar.train", "-m", "head=sar,heatmap", f"dataset.cache_dir={tmp_path / 'data'}",
        "dataset.synthetic.num_train=16", "dataset.synthetic.num_val=2", "dataset.num_workers=0",
        "dataset.batch_size=4", "dataset.val_batch_size=4", "input_size=[64,64]", "head.deconv.channels=32",
        "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
        "trainer.limit_train_batches=1", "optim.warmup_iters=1", timeout=420, cwd=tmp_path, env=local_ddp_env(),
    )
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1 and not (tmp_path / "outputs").exists()  # no rank ran elsewhere
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [j.name[:2] for j in jobs] == ["0_", "1_"]
    for job in jobs:
        assert (job / "metrics.json").exists() and (job / "train_ddp_process_1.log").exists()
        scaled = yaml.safe_load((job / "config.yaml").read_text())["optim"]["scaled"]
        assert scaled["world_size"] == 2
    assert (sweeps[0] / "summary.md").exists()


def test_loaders_pin_memory_only_for_a_cuda_trainer():
    from types import SimpleNamespace

    import pytorch_lightning as pl
    import torch

    from sar.data.datamodule import pin_memory

    dm = pl.LightningDataModule()
    assert pin_memory(dm) is False  # no trainer yet
    for device, expected in [("cpu", False), ("cuda", True)]:
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        assert pin_memory(dm) is expected
