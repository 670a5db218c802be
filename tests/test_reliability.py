"""No lost training, no silent divergence: atomic checkpoints, kills at fixed points, the run-directory lock,
the non-finite guard and relaunching a finished run (issue 9, sections 1-4)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from sar.callbacks import NonFiniteError
from sar.train import run
from sar.utils.checkpoint_io import AtomicCheckpointIO, NonFiniteCheckpointError, remove_stale_temp_files
from sar.utils.run_lock import LOCK_NAME, RunDirLock, RunDirLocked
from test_resume import Interrupt, InterruptAtStep, assert_same_weights, tiny_cfg

KILL_SCRIPT = Path(__file__).parent / "scripts" / "kill_run.py"


def kill_run(run_dir: Path, data_root: Path, point: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(KILL_SCRIPT), str(run_dir), str(data_root), point], check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The uninterrupted tiny run (2 epochs x 5 steps) every kill test is compared with."""
    tmp = tmp_path_factory.mktemp("ref")
    return tmp, run(tiny_cfg(tmp), tmp / "run")


# -- checkpoint IO ---------------------------------------------------------------------------------------------
def test_atomic_io_writes_in_the_target_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The staging file lives next to the target (not in $TMPDIR, possibly another filesystem)."""
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append((Path(a), Path(b))), real_replace(a, b))[1])
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    target = tmp_path / "ckpt" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    assert seen and seen[-1][1] == target and seen[-1][0].parent == target.parent
    assert torch.load(target)["state_dict"]["w"].sum() == 3
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_atomic_io_refuses_nonfinite_weights_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
    before = target.read_bytes()
    with pytest.raises(NonFiniteCheckpointError, match=r"state_dict\.w"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, target)
    with pytest.raises(NonFiniteCheckpointError, match="optimizer_states"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)},
                            "optimizer_states": [{"state": {0: {"exp_avg": torch.tensor([float("inf")])}}}]}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.ckpt.1234.tmp").write_bytes(b"partial")
    (tmp_path / "last.ckpt").write_bytes(b"keep")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".last.ckpt.1234.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_kill_inside_a_checkpoint_write_keeps_the_previous_checkpoint(reference, tmp_path: Path) -> None:
    """SIGKILL from inside the 10th checkpoint write (step 8), half of its bytes written: the step-7 last.ckpt
    stays whole, the partial file is cleaned up by the next run, which resumes and ends exactly as the
    uninterrupted run."""
    ref_root, ref = reference
    run_dir = tmp_path / "run"
    # checkpoint_every_n_steps=1: writes 1-5 are steps 1-5, 6-7 epoch 0's best and post-validation last, 10 step 8
    kill_run(run_dir, ref_root, "write:10")
    ckpt_dir = run_dir / "checkpoints"
    partial = list(ckpt_dir.glob(".*.tmp"))
    assert len(partial) == 1
    assert torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 7
    assert (run_dir / LOCK_NAME).exists()  # the killed run's lock is left behind ...
    resumed = run(tiny_cfg(ref_root), run_dir)  # ... and reclaimed: that process is dead
    assert not list(ckpt_dir.glob(".*.tmp")) and not (run_dir / LOCK_NAME).exists()
    assert resumed["global_step"] == 10
    assert_same_weights(ref_root / "run" / "checkpoints" / "last.ckpt", ckpt_dir / "last.ckpt")
    assert resumed["AP"] == ref["AP"]


def test_kill_after_a_step_resumes_exactly(reference, tmp_path: Path) -> None:
    ref_root, _ = reference
    run_dir = tmp_path / "run"
    kill_run(run_dir, ref_root, "step:6")
    resumed = run(tiny_cfg(ref_root), run_dir)
    assert resumed["global_step"] == 10
    assert_same_weights(ref_root / "run" / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last.ckpt")


def test_unreadable_last_checkpoint_falls_back_to_the_newest_readable(reference, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A truncated last.ckpt (a copy cut by a kill on a filesystem without atomic moves): resume from the newest
    readable checkpoint (here the best one, end of epoch 0) with a warning naming both files."""
    ref_root, _ = reference
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        run(tiny_cfg(ref_root), run_dir, extra_callbacks=[InterruptAtStep(7)])
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level("WARNING", logger="sar.train"):
        resumed = run(tiny_cfg(ref_root), run_dir)
    assert "last.ckpt is not a readable checkpoint" in caplog.text and "best-epoch000.ckpt" in caplog.text
    assert resumed["global_step"] == 10


# -- last.ckpt before validation ------------------------------------------------------------------------------
class CrashInValidation(pl.Callback):
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            raise Interrupt("validation failed")


def test_epoch_end_checkpoint_exists_before_validation(tmp_path: Path) -> None:
    """A crash in the first validation (a bad val image, an evaluator error) used to discard the whole training:
    no checkpoint existed before it. The epoch's last.ckpt is written before validation runs."""
    with pytest.raises(Interrupt):
        run(tiny_cfg(tmp_path, "trainer.checkpoint_every_n_steps=null"), tmp_path / "run",
            extra_callbacks=[CrashInValidation()])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 5 and ckpt["sar_progress"]["epoch_done"]


# -- divergence ------------------------------------------------------------------------------------------------
class Poison(pl.Callback):
    """Make the network produce NaN (weights finite but huge, like an lr=1e6 run) at a given point."""

    def __init__(self, at_step: int | None = None, at_validation_epoch: int | None = None) -> None:
        self.at_step, self.at_validation_epoch = at_step, at_validation_epoch

    @staticmethod
    def poison(pl_module) -> None:
        with torch.no_grad():
            for p in pl_module.model.parameters():
                p.mul_(1e19)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            self.poison(pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.at_validation_epoch and trainer.state.fn == "fit":
            self.poison(pl_module)


def test_divergence_in_training_stops_the_run_and_keeps_the_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, "trainer.checkpoint_every_n_steps=null", "trainer.max_epochs=3")
    with pytest.raises(NonFiniteError, match="global step 7"):
        run(cfg, run_dir, extra_callbacks=[Poison(at_step=7)])
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 5  # the last good one, from the end of epoch 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (run_dir / "metrics.json").exists()


def test_nonfinite_validation_never_becomes_best(tmp_path: Path) -> None:
    """Healthy epoch 0, NaN predictions in epoch 1's validation: the run stops there, best stays epoch 0 (the old
    code scored NaN predictions AP 1.0 and made them the best checkpoint)."""
    run_dir = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, "trainer.checkpoint_every_n_steps=null", "trainer.max_epochs=3")
    with pytest.raises(NonFiniteError, match=r"validation .*global step 10"):
        run(cfg, run_dir, extra_callbacks=[Poison(at_validation_epoch=1)])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    best = torch.load(run_dir / "checkpoints" / "best-epoch000.ckpt", map_location="cpu", weights_only=False)
    assert best["global_step"] == 5


# -- one run per directory -------------------------------------------------------------------------------------
def test_second_run_in_a_held_directory_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunDirLock(run_dir), pytest.raises(RunDirLocked, match=rf"pid {os.getpid()} on {socket.gethostname()}"):
        run(tiny_cfg(tmp_path), run_dir)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "config.yaml").exists()


def test_lock_of_a_dead_process_is_reclaimed_and_a_live_one_is_not(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "slurm_job_id": None, "started": "earlier"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    with RunDirLock(tmp_path) as lock:  # no flock held on it: its holder is gone
        assert lock.held and json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirLocked):
            RunDirLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_on_another_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across hosts only an earlier incarnation of the same SLURM job is taken as dead (a requeue)."""
    holder = {"host": "node-a", "pid": 1, "slurm_job_id": "77", "slurm_restart_count": 0, "started": "earlier"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    with pytest.raises(RunDirLocked, match="SLURM job 77"):
        RunDirLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with RunDirLock(tmp_path) as lock:
        assert lock.held


def test_relaunching_a_finished_run(tmp_path: Path) -> None:
    """Same config: says so and does nothing (no new files, metrics.json untouched); a larger max_epochs
    continues from the last checkpoint."""
    run_dir = tmp_path / "run"
    first = run(tiny_cfg(tmp_path, "trainer.max_epochs=1"), run_dir)
    files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    again = run(tiny_cfg(tmp_path, "trainer.max_epochs=1"), run_dir)
    assert again["already_finished"] and again["AP"] == first["AP"]
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == files
    more = run(tiny_cfg(tmp_path, "trainer.max_epochs=2"), run_dir)
    assert more["global_step"] == 10 and "already_finished" not in more
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if "-v" in p.name) == []


def test_the_evaluator_is_built_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setup builds it (reading and validating the val ground truth) for fit; the final validate reuses it."""
    from sar.systems import topdown

    calls = []
    real = topdown.build_evaluator
    monkeypatch.setattr(topdown, "build_evaluator", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    run(tiny_cfg(tmp_path, "trainer.max_epochs=1", "trainer.checkpoint_every_n_steps=null"), tmp_path / "run")
    assert len(calls) == 1


def test_nonfinite_tensors_names_each_bad_tensor() -> None:
    from sar.callbacks.finite import nonfinite_tensors

    outputs = {"a": torch.ones(3), "b": [torch.tensor([1.0, float("nan")]), torch.arange(3)],
               "c": torch.tensor([float("-inf")])}
    assert nonfinite_tensors(outputs, "outputs") == ["outputs.b[0]", "outputs.c"]
    assert nonfinite_tensors(torch.tensor(float("inf")), "loss") == ["loss"]
    assert nonfinite_tensors({"x": torch.ones(2), "i": torch.arange(2)}) == []
