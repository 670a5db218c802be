"""Top-down LightningModule: PoseModel + loss + codec; validation decodes, maps to image space, evaluates.

The checkpoint carries the resolved config (``hyper_parameters["cfg"]``), so `evaluate`/`predict`/`export`
can rebuild the model and its codec from the file alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from sar.codecs import build_codec
from sar.data.spec import load_spec
from sar.evaluation.coco_ap import build_evaluator
from sar.evaluation.keypoint_error import keypoint_error, pck
from sar.models.losses import build_loss
from sar.models.pose_model import build_pose_model
from sar.systems.base import PoseSystem
from sar.systems.optim import layer_decay_param_groups, lr_factor  # noqa: F401 - lr_factor: re-exported
from sar.utils.instantiate import build
from sar.utils.scale import compute_scaling, describe_scaling, effective_lr

log = logging.getLogger(__name__)


def apply_affine(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply per-sample (B,2,3) affine matrices to (B,K,2) points."""
    return torch.einsum("bij,bkj->bki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_predictions(preds: dict[int, list[dict]]) -> dict[int, list[dict]]:
    """All ranks' prediction records (collective: every rank must call it), merged per dataloader.

    The DistributedSampler pads each loader to a multiple of the world size by repeating samples; records
    are de-duplicated by their dataset ``index`` and sorted by it, which reproduces the one-process order
    (so the metrics, OKS-NMS ties included, are those of a one-process run).
    """
    if _dist_ready() and torch.distributed.get_world_size() > 1:
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, preds)
    else:
        gathered = [preds]
    return merge_predictions(gathered)


def merge_predictions(parts: list[dict[int, list[dict]]]) -> dict[int, list[dict]]:
    """Merge per-rank ``{loader: records}``; records carrying ``index`` are de-duplicated and sorted by it."""
    merged: dict[int, list[dict]] = {}
    for part in parts:
        for loader, records in (part or {}).items():
            merged.setdefault(int(loader), []).extend(records)
    for loader, records in merged.items():
        if all("index" in r for r in records):
            unique = {int(r["index"]): r for r in records}
            merged[loader] = [unique[i] for i in sorted(unique)]
    return merged


def broadcast_from_zero(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (the value itself when not distributed)."""
    if not (_dist_ready() and torch.distributed.get_world_size() > 1):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class TopDownSystem(PoseSystem):
    """Top-down 2D pose (task.system of conf/task/topdown.yaml): crops in, keypoints in image pixels out."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        cfg = self.cfg
        self.spec = load_spec(cfg["dataset"]["spec"])
        self.model, self.heatmap_size = build_pose_model(cfg, self.spec.num_keypoints)
        self.codec = build_codec(cfg["head"]["codec"], input_size=list(cfg["input_size"]),
                                 heatmap_size=list(self.heatmap_size))
        self.loss = build_loss(cfg["head"]["loss"])
        self.flip_test = bool(cfg["task"].get("flip_test", True))
        self.register_buffer("flip_indices", torch.as_tensor(self.spec.flip_indices, dtype=torch.long), persistent=False)
        self._preds: dict[int, list[dict]] = {}
        self._vis: list[tuple[torch.Tensor, np.ndarray]] = []  # crops kept for W&B prediction images
        self.evaluator: Any = None  # built once in setup() from the attached DataModule's val set
        self._evaluator_file: Any = None  # the val file it was built from

    def setup(self, stage: str) -> None:
        """Build the evaluator (which reads and validates the val ground truth) once, before training or
        validation starts: a bad val file fails here, not after the first training epoch."""
        dm = self._trainer.datamodule if self._trainer is not None else None
        if stage not in ("fit", "validate") or dm is None or getattr(dm, "val_ann_file", None) is None:
            return
        if self.evaluator is None or self._evaluator_file != dm.val_ann_file:  # not again for the final validate
            self.build_evaluator(dm)

    def build_evaluator(self, dm: Any) -> Any:
        ev = self.cfg["task"]["evaluation"]
        self.evaluator = build_evaluator(
            self.cfg["dataset"]["evaluator"], dm.val_ann_file, self.spec,
            use_nms=bool(ev["use_nms"]), nms_thr=float(ev["nms_thr"]), kpt_score_thr=float(ev["kpt_score_thr"]),
            score_mode=str(ev["score_mode"]), **getattr(dm, "evaluator_options", {}),
        )
        self._evaluator_file = dm.val_ann_file
        return self.evaluator

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self.model(batch["image"])
        losses = self.loss(outputs, batch["targets"])
        bs = batch["image"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "total", batch_size=bs)
        # the raw outputs go back too (detached by Lightning): sar.callbacks.FiniteGuard checks them
        return {"loss": losses["total"], "outputs": outputs}

    # -- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_crops(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (B,K,2) in crop-input pixels and scores (B,K), with flip test when configured."""
        outputs = self.model(images)
        if not self.flip_test:
            return self.codec.decode(outputs)
        flipped = self.model(images.flip(-1))
        return self.codec.decode_flip(outputs, flipped, self.flip_indices.tolist())

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        keypoints, scores = self.predict_crops(batch["image"])
        meta = batch["meta"]
        in_image = apply_affine(meta["inv_warp"].to(keypoints), keypoints.float())
        kpts = torch.cat([in_image, scores.float()[..., None]], dim=-1).cpu().numpy()
        for i in range(kpts.shape[0]):
            record = {
                "image_id": int(meta["image_id"][i]),
                "ann_id": int(meta["ann_id"][i]),
                "keypoints": kpts[i].astype(np.float64),
                "bbox_score": float(meta["bbox_score"][i]),
                "area": float(meta["area"][i]),
            }
            if "index" in meta:  # dataset position: the id that removes DDP padding duplicates
                record["index"] = int(meta["index"][i])
            self._preds.setdefault(dataloader_idx, []).append(record)
        if self._wants_images() and len(self._vis) < self.NUM_LOGGED_IMAGES and dataloader_idx == len(
                self.trainer.val_dataloaders or [None]) - 1:  # GT-box loader: one person per crop
            take = self.NUM_LOGGED_IMAGES - len(self._vis)
            crops = torch.cat([keypoints.float(), scores.float()[..., None]], dim=-1)[:take].cpu().numpy()
            self._vis += list(zip(batch["image"][:take].cpu(), crops))
        return {"keypoints": keypoints, "scores": scores}  # checked by sar.callbacks.FiniteGuard

    NUM_LOGGED_IMAGES = 4  # validation crops drawn with their predicted skeletons, per validation (W&B only)

    def _wants_images(self) -> bool:
        from pytorch_lightning.loggers import WandbLogger

        return self._trainer is not None and self.trainer.is_global_zero and isinstance(self.logger, WandbLogger)

    def _log_prediction_images(self) -> None:
        """Log the kept crops with their predicted skeletons (spec links and colours) to W&B."""
        from sar.data.transforms import IMAGENET_MEAN, IMAGENET_STD
        from sar.utils.draw import draw_instances

        images = []
        for crop, kpts in self._vis:
            if crop.dtype == torch.uint8:  # the datasets' crops (RGB)
                rgb = crop.permute(1, 2, 0).numpy().astype(np.float64)
            else:  # a normalised float crop
                rgb = (crop.permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN) * 255.0
            bgr = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1])
            drawn = draw_instances(bgr, [kpts], self.spec, kpt_thr=-1.0)
            images.append(np.ascontiguousarray(drawn[..., ::-1]))
        self._vis = []
        if images:
            self.logger.log_image(key="val/predictions", images=images, step=int(self.global_step),
                                  caption=[f"crop {i}" for i in range(len(images))])

    def on_validation_epoch_start(self) -> None:
        self._preds = {}
        self._vis = []

    def on_validation_epoch_end(self) -> None:
        # Under DDP every rank holds its shard: gather all ranks' records (collective), compute the metrics
        # once on rank 0 (only rank 0 writes files), broadcast them, and log the same values on every rank.
        preds = gather_predictions(self._preds)
        self._preds = {}
        outcome: dict[str, Any] | None = None
        if self.trainer.world_size == 1:
            outcome = {"metrics": self.compute_metrics(preds) if preds else None}
        else:
            if self.trainer.is_global_zero:
                try:
                    outcome = {"metrics": self.compute_metrics(preds) if preds else None}
                except Exception as err:  # re-raised on every rank below, after the broadcast
                    outcome = {"error": f"{type(err).__name__}: {err}"}
                    log.exception("validation metrics failed on rank 0")
            outcome = broadcast_from_zero(outcome)
        if self._wants_images():
            self._log_prediction_images()
        if outcome and outcome.get("error"):
            raise RuntimeError(f"validation metrics failed on rank 0: {outcome['error']}")
        if not outcome or not outcome.get("metrics"):
            return
        self.last_metrics = {k: float(v) for k, v in outcome["metrics"].items()}
        for name, value in self.last_metrics.items():
            self.log(f"val/{name}", value, prog_bar=name in ("AP", "kpt_error_px"), add_dataloader_idx=False,
                     sync_dist=True)  # identical on every rank: the reduction keeps the value

    def compute_metrics(self, preds: dict[int, list[dict]]) -> dict[str, float]:
        """AP (and friends) on loader 0, keypoint error and strict PCK on the GT-box loader (the last one).

        Writes the results json into ``results_dir`` when it is set."""
        dm = self.trainer.datamodule
        evaluator = self.evaluator if self.evaluator is not None else self.build_evaluator(dm)
        metrics = evaluator.evaluate(preds[0], self.results_dir, prefix="results")
        if "kpt_error_px" in metrics or getattr(evaluator, "results_only", False):
            return {k: float(v) for k, v in metrics.items()}  # measured by the evaluator (MPII) / no GT (test-dev)
        gt_loader = max(preds)  # GT-box loader is the last one
        gt = dm.val_annotations  # read once by the DataModule
        metrics["kpt_error_px"] = float(keypoint_error(preds[gt_loader], gt))
        # strict PCK: fraction of labelled keypoints with error <= 0.05 * max(w, h) of the GT box
        metrics["PCK@0.05"] = float(pck(preds[gt_loader], gt, alpha=0.05))
        return {k: float(v) for k, v in metrics.items()}

    # -- bench / table ---------------------------------------------------------------------------------------
    @classmethod
    def bench_sections(cls) -> dict[str, Any]:
        """``sar.bench`` sections of the top-down task: input pipeline, train step, make-train, GPU, the up-front
        image check, mmpose side by side (peer), COCO evaluation at scale (eval), SAR against heatmap
        over training budgets (convergence)."""
        from sar import bench

        return {
            "pipeline": lambda args: bench.bench_pipeline(args.seconds),
            "step": lambda args: bench.bench_step(),
            "train": lambda args: bench.bench_train(args.overrides, fresh_data=args.fresh_data),
            "gpu": lambda args: bench.bench_gpu(args.overrides),
            "batch": lambda args: bench.bench_batch(args.overrides),
            "image_check": lambda args: bench.bench_image_check(),
            "peer": (bench.run_peer, bench.peer_block),
            "eval": (bench.run_eval, bench.eval_block),
            "convergence": (bench.run_convergence, bench.convergence_block),
        }

    @classmethod
    def table_layouts(cls) -> dict[str, Any]:
        """The paper's top-down tables (src/sar/paper_results.yaml) for ``sar.table``."""
        from sar.table import load_paper_results

        return load_paper_results()

    # -- prediction on raw images (sar.predict) ----------------------------------------------------------
    def predict_images(self, images: Any, ids: Any, det: Any, skipped: dict[int, str], *, batch_size: int,
                       num_workers: int, device: torch.device, use_nms: bool) -> tuple[list[dict[str, Any]], int]:
        """One crop per person box (``det``: boxes per image id; None: the whole image), decoded to image pixels,
        rescored and OKS-NMS'ed as the evaluator does (sar.systems.topdown_predict)."""
        from sar.systems.topdown_predict import predict_instances

        return predict_instances(self, images, ids, det, skipped, batch_size, num_workers, device, use_nms)

    # -- export (sar.export) -----------------------------------------------------------------------------
    def export_network(self) -> torch.nn.Module:
        return self.model

    def export_example(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        w, h = (int(v) for v in self.cfg["input_size"])
        return torch.randn(batch, 3, h, w, generator=generator)

    def export_metadata(self, output_names: Any, output_shapes: Any) -> dict[str, Any]:
        """Input normalisation, outputs, codec (with its sizes), flip and box padding, keypoint spec."""
        from sar.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        cfg = self.cfg
        w, h = (int(v) for v in cfg["input_size"])
        return {
            "input": {"name": "image", "shape": ["batch", 3, h, w], "input_size_wh": [w, h], "channel_order": "RGB",
                      "mean": [float(v) for v in IMAGENET_MEAN], "std": [float(v) for v in IMAGENET_STD],
                      "scale": "pixel / 255, then (x - mean) / std"},
            "outputs": {name: output_shapes[name] for name in output_names},
            "head": cfg["head"]["name"],
            "codec": {**dict(cfg["head"]["codec"]), "input_size": [w, h], "heatmap_size": list(self.heatmap_size)},
            "flip_test": bool(self.flip_test),
            "padding": float(cfg["task"]["padding"]),
            "spec": self.spec.name,
            "keypoint_names": list(self.spec.keypoint_names),
            "flip_indices": list(self.spec.flip_indices),
            "skeleton": [list(link) for link in self.spec.skeleton],
            "decoding": "docs/export.md",
        }

    # -- optimisation ------------------------------------------------------------------------------
    def scaled_lr(self) -> float:
        """The effective lr (``optim.scaled``, see sar.utils.scale), checked against the trainer's actual
        world size and accumulation; on a mismatch the trainer's numbers win (with a warning)."""
        o = self.cfg["optim"]
        planned = o.get("scaled")
        trainer = self._trainer
        if not isinstance(trainer, pl.Trainer):  # no trainer (or a stand-in): the planned / configured lr
            return effective_lr(o)
        actual = compute_scaling(o, int(self.cfg["dataset"]["batch_size"]), int(trainer.num_devices),
                                 int(trainer.num_nodes), int(trainer.accumulate_grad_batches))
        if planned and (planned["global_batch_size"], planned["lr"]) != (actual["global_batch_size"], actual["lr"]):
            log.warning("the trainer runs %s, not the planned %s: using the trainer's numbers",
                        describe_scaling(actual), describe_scaling(planned))
        elif not planned and trainer.is_global_zero:
            log.info("%s", describe_scaling(actual))
        return float(actual["lr"])

    def configure_optimizers(self):
        """``optim.optimizer`` (its ``_target_``, given the parameters and the effective lr; with
        ``optim.layer_decay`` the ViT layer-wise groups) and the per-step ``optim.lr_scheduler``."""
        o = self.cfg["optim"]
        lr = self.scaled_lr()
        params: Any = [p for p in self.parameters() if p.requires_grad]
        if o.get("layer_decay") not in (None, 1.0):  # ViT layer-wise lr decay (sar.systems.optim)
            params = layer_decay_param_groups(self, lr, float(o["weight_decay"]), float(o["layer_decay"]))
        optimizer = build(o["optimizer"], "optim.optimizer", params=params, lr=lr)

        def schedule_length() -> tuple[int, int]:
            total = int(self.trainer.estimated_stepping_batches)
            return total, max(total // max(int(self.trainer.max_epochs or 1), 1), 1)

        scheduler = build(o["lr_scheduler"], "optim.lr_scheduler", optimizer=optimizer,
                          schedule_length=schedule_length)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
