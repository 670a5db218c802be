"""SLURM: the `hydra/launcher=slurm` preset composes with the trainer's numbers, a sweep submits the sbatch
script we expect (with stand-in `srun` / `sbatch` executables), and Lightning's SLURMEnvironment takes the
ranks from the SLURM variables of a task."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import sar  # noqa: F401  (registers the sar.uid resolver)
from cli_runs import run_module
from sar.utils.config import compose_train_config


def test_slurm_launcher_composes_from_trainer() -> None:
    cfg = compose_train_config("hydra/launcher=slurm", "trainer=multinode", "trainer.num_nodes=3",
                               "trainer.devices=2", "hydra.launcher.partition=gpu",
                               "hydra.launcher.timeout_min=600", return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (3, 2, 2)
    assert launcher["timeout_min"] == 600 and launcher["partition"] == "gpu"
    assert launcher["max_num_timeout"] == 3 and launcher["additional_parameters"] == {"requeue": True}
    assert launcher["signal_delay_s"] == 120
    assert launcher["submitit_folder"].startswith(str(cfg.hydra.sweep.dir))
    defaults = compose_train_config("hydra/launcher=slurm", "trainer=multinode", return_hydra_config=True)
    assert (defaults.hydra.launcher.nodes, defaults.hydra.launcher.tasks_per_node) == (2, 4)


def _stand_in(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_sweep_submits_the_expected_job_array(tmp_path: Path) -> None:
    """`python -m sar.train -m hydra/launcher=slurm ...` up to `sbatch`: the stand-in sbatch keeps the script
    and refuses the job, so the sweep stops there (no cluster here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir / "srun", "exit 0\n")
    _stand_in(bin_dir / "sbatch", f'cp "$1" {tmp_path}/submitted.sh\necho "sbatch: stand-in" >&2\nexit 1\n')
    sweep = tmp_path / "sweep"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = run_module("sar.train", "-m", "hydra/launcher=slurm", "trainer=multinode", "trainer.num_nodes=2",
                      "trainer.devices=4", "hydra.launcher.partition=gpu", "head=sar,heatmap", "ckpt_path=last",
                      f"hydra.sweep.dir={sweep}", check=False, timeout=300, env=env, cwd=tmp_path)
    script = tmp_path / "submitted.sh"
    assert script.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    text = script.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --time=1440", "#SBATCH --partition=gpu", "#SBATCH --requeue", "#SBATCH --signal=USR2@120",
                 "#SBATCH --array=0-1%", "#SBATCH --job-name=train", "#SBATCH --cpus-per-task=8"):
        assert line in text, text
    assert "srun" in text and "submitit" in text
    assert str(sweep / ".submitit") in text  # logs and pickled jobs live in the sweep dir


def test_lightning_reads_slurm_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Task 5 of a 2-node x 4-GPU job (what srun sets): the trainer built from trainer=multinode is rank 5 of 8."""
    import pytorch_lightning as pl
    from lightning_fabric.plugins.environments import SLURMEnvironment

    for key in [k for k in os.environ if k.startswith(("SLURM_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"))]:
        monkeypatch.delenv(key)
    env = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
           "SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242",
           "SLURM_NODELIST": "node[01-02]"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = compose_train_config("trainer=multinode", "trainer.accelerator=cpu", "trainer.precision=32")
    t = cfg.trainer
    trainer = pl.Trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (5, 1, 1, 8)
    assert trainer.strategy.cluster_environment.main_address == "node01"
