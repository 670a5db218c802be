"""`python -m sar.evaluate ckpt=<file> [dataset=<option>] [overrides]`: evaluation only.

Runs the very validation path of training's final evaluation (the task's system and DataModule, ``sar.build`` +
``pl.Trainer.validate(ckpt_path=...)``) with the run config stored in the checkpoint, and writes the same files
into its own run directory (``hydra.run.dir``, default ``outputs/eval/<timestamp>``):

* ``config.yaml`` — the resolved config evaluated (the checkpoint's, with the changes below, plus an
  ``evaluate`` block naming the checkpoint);
* ``results_keypoints.json`` — the COCO results of the evaluated predictions (written by the evaluator);
* ``metrics.json`` — the dataset evaluator's metrics (AP ..., keypoint error in px, PCK@0.05), the checkpoint
  and the evaluation time.

What can change (``conf/evaluate.yaml``): the dataset (``dataset=<option>`` picks a config group option and with it
that dataset's evaluator; without it the checkpoint's dataset config is used and ``dataset.<key>=...`` overrides
apply to it), the evaluation knobs (``flip_test``, ``evaluation.{use_nms,nms_thr,kpt_score_thr,score_mode}``,
``batch_size``, ``num_workers``) and the trainer (``trainer.accelerator``, ``devices``, ``strategy``,
``precision``, ``limit_val_batches``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sar.build import build_task
from sar.data.spec import load_spec
from sar.evaluation.coco_ap import evaluator_name
from sar.run_steps import build_lightning_trainer, finish_run, validate_checkpoint
from sar.utils.checkpoint import checkpoint_config, inference_config
from sar.utils.config import CONF_DIR, write_run_config
from sar.utils.config_keys import require

log = logging.getLogger("sar.evaluate")

_DATASET_CHOICE = re.compile(r"^[+~]*dataset(@[^=]*)?=")


def rewrite_dataset_overrides(argv: Sequence[str]) -> list[str]:
    """Without ``dataset=<option>`` the composed config has no dataset node: ``dataset.<key>=v`` then becomes
    ``++dataset.<key>=v`` (a partial dataset config merged onto the checkpoint's by :func:`build_run_config`)."""
    if any(_DATASET_CHOICE.match(a) for a in argv):
        return list(argv)
    return ["++" + a if a.startswith("dataset.") else a for a in argv]


#: The keys of conf/evaluate.yaml that say what to change in the checkpoint's run config.
EVAL_KNOBS: tuple[str, ...] = ("flip_test", "test_scales", "evaluation", "batch_size", "num_workers", "trainer")


def evaluation_knobs(eval_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs of ``eval_cfg`` (:data:`EVAL_KNOBS`) over those of conf/evaluate.yaml, the only source of their
    defaults: a composed evaluate config has them all already; a partial one (a library caller's) gets the file's
    values for the rest."""
    base = OmegaConf.load(CONF_DIR / "evaluate.yaml")
    given = {k: eval_cfg[k] for k in EVAL_KNOBS if k in eval_cfg}
    merged = OmegaConf.merge(OmegaConf.create({k: base[k] for k in EVAL_KNOBS}), OmegaConf.create(given))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def resolve_trainer(eval_trainer: Mapping[str, Any], ckpt_trainer: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation's Trainer config (``_target_``): ``eval_trainer`` is the ``trainer`` block of
    conf/evaluate.yaml (every key present, plus any the user added), ``ckpt_trainer`` the checkpoint's. Null
    ``accelerator`` / ``precision`` are resolved from the checkpoint; other null values are left out (Lightning's
    default)."""
    def key(name: str) -> Any:
        return require(eval_trainer, name, "trainer")

    # null: the checkpoint's accelerator (cpu if it has none)
    accelerator = key("accelerator") or require(ckpt_trainer, "accelerator", "trainer") or "cpu"
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        log.warning("the checkpoint was trained with accelerator=%s, but no GPU is visible: evaluating on the CPU "
                    "(set trainer.accelerator to choose)", accelerator)
        accelerator = "cpu"
    precision = key("precision")
    if precision is None:
        precision = 32 if accelerator == "cpu" else require(ckpt_trainer, "precision", "trainer")
    for name in ("_target_", "devices", "strategy", "limit_val_batches"):
        key(name)  # stated in conf/evaluate.yaml
    out = {k: v for k, v in eval_trainer.items() if v is not None}
    out.update(accelerator=accelerator, precision=precision)
    return out


def build_run_config(
    eval_cfg: Mapping[str, Any], ckpt_cfg: Mapping[str, Any], dataset_choice: str | None, ckpt: str
) -> dict[str, Any]:
    """The run config to evaluate: the checkpoint's, with the dataset and the evaluation knobs replaced.

    Raises ``ValueError`` when the new dataset's keypoints are not the ones the network predicts.
    """
    run = copy.deepcopy(dict(ckpt_cfg))
    new_dataset = eval_cfg.get("dataset")  # conf/evaluate.yaml's defaults list leaves it out unless chosen
    if dataset_choice is not None:
        run["dataset"] = copy.deepcopy(dict(new_dataset))
    elif new_dataset:
        merged = OmegaConf.merge(OmegaConf.create(run["dataset"]), OmegaConf.create(dict(new_dataset)))
        run["dataset"] = OmegaConf.to_container(merged, resolve=True)
    trained = load_spec(ckpt_cfg["dataset"]["spec"])
    target = load_spec(run["dataset"]["spec"])
    if target.keypoint_names != trained.keypoint_names:
        raise ValueError(
            f"dataset {run['dataset']['name']!r} uses keypoint spec {target.name!r} ({target.num_keypoints} "
            f"keypoints), but the checkpoint {ckpt} predicts spec {trained.name!r} ({trained.num_keypoints} "
            "keypoints): evaluate it on a dataset with the same keypoints"
        )

    knobs = evaluation_knobs(eval_cfg)  # null: keep the checkpoint's value
    task = run["task"] = dict(run["task"])
    if knobs["flip_test"] is not None:
        task["flip_test"] = bool(knobs["flip_test"])
    if knobs["test_scales"] is not None:
        task["test_scales"] = [float(v) for v in knobs["test_scales"]]
    task["evaluation"] = dict(task["evaluation"])
    for key, value in knobs["evaluation"].items():
        if value is not None:
            task["evaluation"][key] = value
    decode = dict(eval_cfg.get("codec") or {})
    if decode:
        codec = run["head"] = dict(run["head"])
        target = codec["codec"]["_target_"]
        accepted = set(inspect.signature(hydra.utils.get_class(target)).parameters) - {"input_size", "heatmap_size"}
        unknown = sorted(set(decode) - accepted)
        if unknown:
            raise ValueError(f"codec.{unknown[0]}: not an argument of the checkpoint's codec {target} "
                             f"({', '.join(sorted(accepted))})")
        codec["codec"] = {**dict(codec["codec"]), **decode}
    if knobs["batch_size"] is not None:
        run["dataset"]["val_batch_size"] = int(knobs["batch_size"])
    if knobs["num_workers"] is not None:
        run["dataset"]["num_workers"] = int(knobs["num_workers"])
    eval_trainer = resolve_trainer(knobs["trainer"], run["trainer"])
    # the run's trainer settings as evaluated (the system may read them); the Trainer is built from evaluate.trainer
    run["trainer"] = {**dict(run["trainer"]), **{k: v for k, v in eval_trainer.items() if k in run["trainer"]}}
    run["evaluate"] = {"ckpt": ckpt, "dataset": dataset_choice or "checkpoint", "trainer": eval_trainer}
    return inference_config(run)


def run(cfg: DictConfig, run_dir: Path, dataset_choice: str | None) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = str(Path(str(cfg.ckpt)).expanduser().resolve())
    eval_cfg = OmegaConf.to_container(cfg, resolve=True)
    config = build_run_config(eval_cfg, checkpoint_config(ckpt), dataset_choice, ckpt)
    write_run_config(config, run_dir)

    system, datamodule = build_task(config)
    trainer = build_lightning_trainer(config["evaluate"]["trainer"], run_dir)
    start = time.time()
    metrics = validate_checkpoint(trainer, system, datamodule, ckpt, run_dir)
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "checkpoint": ckpt, "dataset": config["dataset"]["name"],
        "evaluator": evaluator_name(config["dataset"]["evaluator"]), "eval_seconds": round(time.time() - start, 1),
    }
    result.update(metrics)
    return finish_run(trainer, result, run_dir, log)


@hydra.main(version_base="1.3", config_path="pkg://sar.conf", config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    result = run(cfg, Path(hc.runtime.output_dir), hc.runtime.choices.get("dataset"))
    return result.get("AP")


def main() -> None:
    sys.argv = [sys.argv[0], *rewrite_dataset_overrides(sys.argv[1:])]
    _hydra_main()


if __name__ == "__main__":
    import sys

    from sar.utils.cli import check_overrides

    check_overrides(sys.argv[1:], "evaluate", "sar.evaluate")  # a misspelt key: one line naming it, not a traceback
    main()
