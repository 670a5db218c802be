"""Multi-person LightningModule (task.system of conf/task/bottomup.yaml): whole images in, every person out.

The network, loss, optimiser, evaluator set-up, DDP gathering and logging are the top-down system's
(:class:`sar.systems.topdown.TopDownSystem`); what differs is decoding: the head's codec turns the outputs of a
whole image (and of its mirror, with flip test) into up to ``max_proposals`` poses with instance scores
(docs/bottomup.md), which are mapped back to image pixels and scored by the dataset's COCO-format evaluator on
every person of the val set (no person boxes). The instance score is the codec's (``score_mode: bbox``: the
evaluator takes it as it is; the codec has already applied its OKS-NMS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sar.codecs.bottomup.common import finish_poses
from sar.data import transforms as T
from sar.data.bottomup import resolve_test_scales
from sar.evaluation.keypoint_error import oks_matched_errors
from sar.evaluation.results import write_json_atomic
from sar.systems.topdown import TopDownSystem

__all__ = ["BottomUpSystem"]

MAX_POSES = 1024  # poses one image may give (the codecs keep max_proposals = 30 by default)


def poses_in_image(poses: np.ndarray, inv_warp: np.ndarray) -> np.ndarray:
    """Decoded poses (M, K, 3: x, y in input pixels, score) with x, y mapped to image pixels by ``inv_warp``."""
    out = np.asarray(poses, dtype=np.float64).copy()
    if len(out):
        out[..., :2] = T.transform_points(out[..., :2], np.asarray(inv_warp, dtype=np.float64))
    return out


class BottomUpSystem(TopDownSystem):
    """Multi-person pose on whole images (docs/bottomup.md)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        if self.cfg["head"]["codec"].get("sigmas") is None:  # the pose NMS uses the dataset's OKS sigmas
            self.codec.sigmas = [float(s) for s in self.spec.sigmas]
        self.test_scales = resolve_test_scales(cfg)
        module = cfg["head"].get("module") or {}
        if getattr(self.codec, "reads_heatmaps", False) and not module.get("with_heatmap", True):
            raise ValueError("head.module.with_heatmap: false, but the codec decodes with the auxiliary heatmaps "
                             "(head.codec.refine: heatmap or keypoint_score: heatmap): set those to none / "
                             "confidence, or keep the heatmaps")

    @torch.no_grad()
    def predict_poses(self, images: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image of the batch: poses (M, K, 3) in the pixels of ``images`` (x, y, keypoint score) and scores
        (M,). Multi-scale test (``task.test_scales``, docs/bottomup.md): the batch is resized to ``input_size`` x
        each scale, each decoded on its own (flip test as configured), the poses brought back to the pixels of
        ``images`` and pooled, then the codec's OKS-NMS and its ``max_proposals`` best (DEKR's pose aggregation)."""
        if self.test_scales == (1.0,):
            return self._decode(images, self.codec)
        height, width = images.shape[-2:]
        base_w, base_h = (int(v) for v in self.cfg["input_size"])
        pooled: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(images.shape[0])]
        for scale in self.test_scales:
            size = (round(base_h * scale), round(base_w * scale))
            scaled = images if size == (height, width) else F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=size[0] < height)
            for i, (poses, scores) in enumerate(self._decode(scaled, None)):
                poses = poses.copy()
                poses[..., :2] = T.transform_points(poses[..., :2], T.resize_matrix(width / size[1], height / size[0]))
                pooled[i].append((poses, scores))
        k = self.spec.num_keypoints
        sigmas = self.codec.nms_sigmas(k)
        return [finish_poses(np.concatenate([p for p, _ in parts]).reshape(-1, k, 3),
                             np.concatenate([s for _, s in parts]), sigmas, self.codec.nms_thr,
                             self.codec.max_proposals) for parts in pooled]

    def _decode(self, images: torch.Tensor, codec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """One scale: the network on ``images`` (and its mirror), decoded by ``codec`` (None: this codec at the
        size of ``images`` and of the outputs)."""
        outputs = self.model(images)
        flipped = self.model(images.flip(-1)) if self.flip_test else None
        if codec is None:
            ref = next(v for v in outputs.values() if torch.is_tensor(v) and v.dim() == 4)
            codec = self.codec.at_size((images.shape[-1], images.shape[-2]), (ref.shape[-1], ref.shape[-2]))
        return codec.decode(outputs, flipped, self.flip_indices.tolist() if flipped is not None else None)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        meta = batch["meta"]
        decoded = self.predict_poses(batch["image"])
        records = self._preds.setdefault(dataloader_idx, [])  # an image set with no person found still scores (AP 0)
        all_poses = []
        for i, (poses, scores) in enumerate(decoded):
            inv = meta["inv_warp"][i].cpu().numpy().astype(np.float64)
            index = int(meta["index"][i])
            if len(scores) > MAX_POSES:
                raise ValueError(f"the codec returned {len(scores)} poses for one image (at most {MAX_POSES})")
            for j, kpts in enumerate(poses_in_image(poses, inv)):
                xy = kpts[:, :2]
                box_area = float(np.ptp(xy[:, 0]) * np.ptp(xy[:, 1]))
                records.append({
                    "image_id": int(meta["image_id"][i]), "ann_id": -1, "keypoints": kpts,
                    "bbox_score": float(scores[j]), "area": max(box_area, 1.0),
                    # unique per (image, pose): DDP padding repeats of an image are dropped by it (topdown)
                    "index": index * MAX_POSES + j,
                })
                all_poses.append(kpts)
        stacked = torch.as_tensor(np.stack(all_poses)) if all_poses else torch.zeros(0, self.spec.num_keypoints, 3)
        return {"poses": stacked}  # checked by sar.callbacks.FiniteGuard

    def compute_metrics(self, preds: dict[int, list[dict]]) -> dict[str, float]:
        """COCO-format AP/AR (CrowdPose: easy/medium/hard) of every decoded person on every val image, and
        ``kpt_error_px``: the keypoint error of the OKS-matched persons
        (:func:`sar.evaluation.keypoint_error.oks_matched_errors`), whose per-keypoint means and medians (also per
        COCO area range, beside APM / APL) go to ``results_keypoint_errors.json`` beside the results json."""
        dm = self.trainer.datamodule
        evaluator = self.evaluator if self.evaluator is not None else self.build_evaluator(dm)
        metrics = evaluator.evaluate(preds.get(0, []), self.results_dir, prefix="results")
        if metrics and hasattr(evaluator, "ground_truth"):
            errors = oks_matched_errors(evaluator.last_results, evaluator.ground_truth, evaluator.sigmas)
            metrics["kpt_error_px"] = errors["kpt_error_px"]
            if self.results_dir is not None:
                names = list(self.spec.keypoint_names)
                write_json_atomic({
                    "kpt_error_px": errors["kpt_error_px"], "matched": errors["matched"],
                    "unmatched": errors["unmatched"],
                    "mean_px": dict(zip(names, errors["per_keypoint"])),
                    "median_px": dict(zip(names, errors["median_per_keypoint"])),
                    "by_area": {name: {"matched": part["matched"], "unmatched": part["unmatched"],
                                       "median_px": dict(zip(names, part["median_per_keypoint"]))}
                                for name, part in errors["by_area"].items()},
                }, Path(self.results_dir) / "results_keypoint_errors.json", indent=1)
        return {k: float(v) for k, v in metrics.items()}

    # -- prediction on raw images (sar.predict) ----------------------------------------------------------
    def predict_images(self, images: Any, ids: Any, det: Any, skipped: dict[int, str], *, batch_size: int,
                       num_workers: int, device: torch.device, use_nms: bool) -> tuple[list[dict[str, Any]], int]:
        """Every person of every image (no boxes needed: ``det`` is refused), as in validation: the whole image
        warped to the square input, decoded (flip test as configured), mapped back to image pixels. An instance's
        ``bbox`` is its keypoints' extent; ``score`` is the codec's instance score."""
        if det is not None:
            raise ValueError("a multi-person checkpoint finds the people itself: drop det= (person boxes are for "
                             "top-down checkpoints, which can take them from this checkpoint: det=<this .ckpt>)")
        from sar.data.bottomup import input_warp
        from sar.data.topdown import read_image

        size = int(self.cfg["input_size"][0])
        instances: list[dict[str, Any]] = []
        pending: list[tuple[int, int | None, np.ndarray, torch.Tensor]] = []

        def flush() -> None:
            if not pending:
                return
            batch = torch.stack([p[3] for p in pending]).to(device)
            for (pos, image_id, inv, _), (poses, scores) in zip(pending, self.predict_poses(batch), strict=True):
                for kpts, score in zip(poses_in_image(poses, inv), scores, strict=True):
                    lo, hi = kpts[:, :2].min(0), kpts[:, :2].max(0)
                    instances.append({"image_id": image_id if image_id is not None else -(pos + 1),
                                      "keypoints": kpts, "bbox": np.array([*lo, *(hi - lo)]), "score": float(score),
                                      "bbox_score": float(score), "area": float(np.prod(hi - lo)), "position": pos})
            pending.clear()

        self.eval().to(device)
        for pos, (path, image_id) in enumerate(zip(images, ids, strict=True)):
            if pos in skipped:
                continue
            try:
                image = read_image(str(path))
            except OSError as err:
                skipped[pos] = str(err)
                continue
            matrix = input_warp(image.shape[1], image.shape[0], size)
            tensor = T.normalize_image(T.warp(image, matrix, (size, size)), bgr=True)
            pending.append((pos, image_id, T.invert_affine(matrix), tensor))
            if len(pending) >= batch_size:
                flush()
        flush()
        return instances, len(instances)

    # -- bench / table -------------------------------------------------------------------------------------
    @classmethod
    def bench_sections(cls) -> dict[str, Any]:
        """``sar.bench --task bottomup``: ``bottomup``, the four heads under one budget with their oracle AP
        (:mod:`sar.bench_bottomup`)."""
        from sar import bench_bottomup

        return {"bottomup": (lambda args: bench_bottomup.bench_bottomup(args.overrides), bench_bottomup.bottomup_table)}

    @classmethod
    def table_layouts(cls) -> dict[str, Any]:
        """The multi-person tables (src/sar/paper_results_bottomup.yaml: anchors of the host pipelines)."""
        from pathlib import Path

        from sar.table import load_paper_results

        return load_paper_results(Path(__file__).resolve().parents[1] / "paper_results_bottomup.yaml")
