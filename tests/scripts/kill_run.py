"""Run the tiny training of tests/test_resume.py in this process and SIGKILL it at a fixed point.

    python tests/scripts/kill_run.py RUN_DIR DATA_DIR POINT [overrides...]

POINT is ``step:<n>`` (kill at the start of the batch after ``n`` optimiser steps, i.e. once the step-``n``
checkpoint is on disk) or ``write:<n>`` (kill from inside the ``n``-th checkpoint write, after half of the
file's bytes went out: the write is cut exactly where a crash would cut it).
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sar.train import run
from sar.utils.checkpoint_io import AtomicCheckpointIO
from test_resume import tiny_cfg


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            die()


def kill_in_write(n: int) -> None:
    calls = {"n": 0}

    def write(self, checkpoint, fh) -> None:
        calls["n"] += 1
        if calls["n"] < n:
            torch.save(checkpoint, fh)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        fh.write(data[: len(data) // 2])
        fh.flush()
        die()

    AtomicCheckpointIO._write = write


def main() -> None:
    run_dir, data_dir, point, *overrides = sys.argv[1:]
    kind, value = point.split(":")
    callbacks = []
    if kind == "step":
        callbacks.append(KillAtStep(int(value)))
    else:
        kill_in_write(int(value))
    run(tiny_cfg(Path(data_dir), *overrides), Path(run_dir), extra_callbacks=callbacks)


if __name__ == "__main__":
    main()
