"""A head and a task defined outside src/sar plug in by YAML alone (docs/extending.md): each trains and validates
through `python -m sar.train` with the test's config folder on Hydra's search path."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from cli_runs import run_module

HERE = Path(__file__).resolve().parent / "extending"


def sar_train(tmp_path: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    return run_module("sar.train", f"hydra.searchpath=[file://{HERE / 'conf'}]",
                      f"hydra.run.dir={tmp_path / name}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                      "logger=csv", *overrides, check=False, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_toy_head_trains_and_validates(tmp_path: Path) -> None:
    proc = sar_train(tmp_path, "toy_head", "head=toy", "backbone=resnet18", "input_size=[64,64]",
                     f"dataset.cache_dir={tmp_path / 'data'}", "dataset.synthetic.num_train=16",
                     "dataset.synthetic.num_val=4", "dataset.num_workers=0", "dataset.batch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "toy_head" / "config.yaml").read_text())
    assert config["head"]["module"]["_target_"] == "toy_parts.ToyHead"
    assert config["head"]["codec"]["_target_"] == "toy_parts.ToyCodec"
    metrics = json.loads((tmp_path / "toy_head" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and "AP" in metrics and metrics["kpt_error_px"] > 0
    assert (tmp_path / "toy_head" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_toy_task_trains_and_validates(tmp_path: Path) -> None:
    proc = sar_train(tmp_path, "toy_task", "task=toy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "toy_task" / "config.yaml").read_text())
    assert config["task"]["system"]["_target_"] == "toy_parts.ToySystem" and config["family"]["name"] == "toy"
    metrics = json.loads((tmp_path / "toy_task" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and 0 < metrics["centre_error_px"] < 32


def test_a_head_without_an_implementation_for_the_task_is_a_composition_error(tmp_path: Path) -> None:
    proc = sar_train(tmp_path, "bad", "task=toy", "head=sar")
    assert proc.returncode != 0
    assert "heads/toy/sar" in proc.stderr  # Hydra names the missing implementation file
    assert not (tmp_path / "bad").exists()


def test_bench_sections_and_table_layouts_come_from_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """sar.bench and sar.table ask the run's task (PoseSystem.bench_sections / table_layouts)."""
    from sar.bench import task_sections
    from sar.table import Run, load_paper_results, task_layouts

    assert list(task_sections("topdown")) == ["pipeline", "step", "train", "gpu", "batch", "image_check", "peer", "eval",
                                              "convergence"]
    old_run = Run(Path("a"), {})  # written before the task seam: a top-down run
    assert task_layouts([old_run]) == load_paper_results()
    monkeypatch.syspath_prepend(str(HERE))
    toy = Run(Path("b"), {}, system="toy_parts.ToySystem")  # PoseSystem's defaults: no layouts
    assert task_layouts([toy]) == {}
