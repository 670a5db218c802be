"""A tie-heavy top-down prediction set on the real COCO sample, and MMPose ``CocoMetric``'s numbers for it.

The ground truth is the 4-image COCO sample (``test_coco.json``) repeated ``COPIES`` times under new image and
annotation ids. Every image copy gets at most 3 predictions (near its labelled persons, noise from an integer
generator so the file is the same on every machine) in one of four patterns, by copy: all keypoint scores
<= 0.2 (instance score 0 under ``bbox_keypoint``: the common tie), identical scores for all, a near-duplicate
pair with equal scores (OKS-NMS picks between them by the tie order), distinct scores. At most 3 predictions per
image keeps MMPose's tie order (``argsort()[::-1]``: reverse input order) independent of numpy's sort
implementation.

``python tests/tie_heavy.py --peer-python <mmpose 1.3.2 python>`` recomputes ``tests/data/tie_heavy_mmpose.json``
(the reference stats) with ``sar/peer/mmpose_coco_metric.py`` in the peer's venv.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

COPIES = 24
REFERENCE = Path(__file__).parent / "data" / "tie_heavy_mmpose.json"
#: (score_mode, use_nms) of the reference runs; MMPose's nms_mode is "oks_nms" or "none".
CASES = (("bbox_keypoint", True), ("bbox_keypoint", False), ("bbox_rle", True), ("bbox_rle", False))


class _Lcg:
    """Numbers in [0, 1) from a 32-bit linear congruential generator: exact integer arithmetic, same everywhere."""

    def __init__(self, seed: int) -> None:
        self.x = seed

    def __call__(self) -> float:
        self.x = (1664525 * self.x + 1013904223) % 2**32
        return self.x / 2**32


def tie_heavy_set(coco_gt: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The repeated ground truth and the prediction records (dataset order) described in the module docstring."""
    rnd = _Lcg(12345)
    gt: dict[str, Any] = {k: copy.deepcopy(v) for k, v in coco_gt.items() if k not in ("images", "annotations")}
    gt["images"], gt["annotations"] = [], []
    preds: list[dict[str, Any]] = []
    images = sorted(coco_gt["images"], key=lambda im: im["id"])
    for c in range(COPIES):
        for img in images:
            new_id = (c + 1) * 1_000_000 + int(img["id"])
            gt["images"].append({**img, "id": new_id})
            anns = [a for a in coco_gt["annotations"] if a["image_id"] == img["id"]]
            for a in anns:
                gt["annotations"].append({**copy.deepcopy(a), "id": (c + 1) * 1_000_000 + int(a["id"]),
                                          "image_id": new_id})
            people = [a for a in anns if a["num_keypoints"] > 0]
            pattern = (c + int(img["id"])) % 4
            chosen = [people[(c + j) % len(people)] for j in range(min(3, len(people)))]
            if pattern == 2 and chosen:  # near-duplicate pair, equal scores
                chosen = [chosen[0], chosen[0], *chosen[1:2]]
            base_scores = np.array([0.3 + 0.6 * rnd() for _ in range(17)])
            for j, a in enumerate(chosen):
                k = np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)
                x, y, w, h = (float(v) for v in a["bbox"])
                size = np.sqrt(float(a["area"]))
                noise = (0.02 + 0.12 * rnd()) * size
                xy = np.empty((17, 2))
                for t in range(17):
                    if k[t, 2] > 0:
                        xy[t] = k[t, :2] + noise * (np.array([rnd(), rnd()]) - 0.5)
                    else:
                        xy[t] = [x + w * rnd(), y + h * rnd()]
                if pattern == 2 and j == 1:  # the duplicate: the first prediction shifted by 1 px
                    xy = preds[-1]["keypoints"][:, :2] + 1.0
                if pattern == 0:
                    s = np.full(17, 0.05 + 0.15 * rnd()) if j == 0 else np.full(17, 0.1)
                    bbox_score = 0.9 if j < 2 else 0.6
                elif pattern in (1, 2):
                    s, bbox_score = base_scores, 0.8
                else:
                    s, bbox_score = np.array([0.3 + 0.6 * rnd() for _ in range(17)]), 0.5 + 0.5 * rnd()
                preds.append({"image_id": new_id, "keypoints": np.concatenate([xy, s[:, None]], axis=1),
                              "bbox_score": float(bbox_score), "area": float(a["area"])})
    return gt, preds


def mmpose_stats(peer_python: str, gt: dict[str, Any], preds: list[dict[str, Any]], sigmas: np.ndarray,
                 score_mode: str, use_nms: bool) -> dict[str, float]:
    """The stats of MMPose's CocoMetric for ``preds`` (``sar/peer/mmpose_coco_metric.py`` in the peer's Python)."""
    script = Path(__file__).resolve().parents[1] / "src" / "sar" / "peer" / "mmpose_coco_metric.py"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gt.json").write_text(json.dumps(gt))
        np.savez(Path(tmp) / "preds.npz", image_id=np.array([p["image_id"] for p in preds]),
                 keypoints=np.stack([p["keypoints"] for p in preds]),
                 bbox_score=np.array([p["bbox_score"] for p in preds]),
                 area=np.array([p["area"] for p in preds]), sigmas=sigmas)
        out = subprocess.run([peer_python, str(script), str(Path(tmp) / "gt.json"), str(Path(tmp) / "preds.npz"),
                              "--score-mode", score_mode, "--nms-mode", "oks_nms" if use_nms else "none"],
                             check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["stats"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-python", required=True)
    parser.add_argument("--coco", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "coco"
                                              / "test_coco.json"))
    args = parser.parse_args()
    from sar.data.spec import load_spec

    sigmas = np.asarray(load_spec("coco").sigmas, dtype=np.float64)
    gt, preds = tie_heavy_set(json.loads(Path(args.coco).read_text()))
    ref = {"source": "mmpose 1.3.2 CocoMetric (xtcocotools COCOeval), tests/tie_heavy.py", "n_predictions": len(preds),
           "cases": {f"{mode}/{'oks_nms' if nms else 'none'}": mmpose_stats(args.peer_python, gt, preds, sigmas,
                                                                              mode, nms) for mode, nms in CASES}}
    REFERENCE.write_text(json.dumps(ref, indent=1) + "\n")
    print(json.dumps(ref, indent=1))


if __name__ == "__main__":
    main()
