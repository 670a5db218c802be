"""Score a prediction file with MMPose's ``CocoMetric`` (run with the peer's Python, not sar's).

    <mmpose python> mmpose_coco_metric.py GT.json PREDS.npz [--score-mode M] [--nms-mode M] [--kpt-thr T]
                                          [--nms-thr T] [--repeat R]

``PREDS.npz`` holds one top-down instance per row, in dataset order: ``image_id`` (N,), ``keypoints`` (N, K, 3:
x, y, score), ``bbox_score`` (N,), ``area`` (N,) and ``sigmas`` (K,). Each row becomes what
``CocoMetric.process`` stores for one data sample (``id`` = the row, float64 arrays), and
``CocoMetric.compute_metrics`` does the rest as in an MMPose test run (grouping by image, sort by id, rescoring,
OKS-NMS, results json, xtcocotools COCOeval). Prints one JSON line: the 10 COCO stats (sar's names), the number
of results written and the seconds of each ``compute_metrics`` call.
"""

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np

NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gt")
    parser.add_argument("preds")
    parser.add_argument("--score-mode", default="bbox_keypoint")
    parser.add_argument("--nms-mode", default="oks_nms")
    parser.add_argument("--kpt-thr", type=float, default=0.2)
    parser.add_argument("--nms-thr", type=float, default=0.9)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from mmpose.evaluation.metrics import CocoMetric

    with np.load(args.preds) as data:  # each data[key] reads the whole array again: read every array once
        arrays = {key: np.array(data[key]) for key in ("image_id", "keypoints", "bbox_score", "area", "sigmas")}
    kpts = arrays["keypoints"].astype(np.float64)
    bbox_scores = arrays["bbox_score"].astype(np.float64)
    areas = arrays["area"].astype(np.float64)
    image_ids = arrays["image_id"].tolist()
    results = [
        ({"id": i, "img_id": int(image_ids[i]), "category_id": 1, "keypoints": kpts[i:i + 1, :, :2].copy(),
          "keypoint_scores": kpts[i:i + 1, :, 2].copy(), "bbox_scores": bbox_scores[i:i + 1].copy(),
          "areas": areas[i:i + 1].copy()}, {})
        for i in range(kpts.shape[0])
    ]
    seconds = []
    stats = None
    n_results = 0
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        metric = CocoMetric(ann_file=args.gt, score_mode=args.score_mode, keypoint_score_thr=args.kpt_thr,
                            nms_mode=args.nms_mode, nms_thr=args.nms_thr, outfile_prefix=os.path.join(tmp, "r"))
        metric.dataset_meta = {"num_keypoints": kpts.shape[1], "sigmas": arrays["sigmas"].astype(np.float64)}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = metric.compute_metrics(list(results))
            seconds.append(time.perf_counter() - t0)
            stats = [float(out[k]) for k in ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75",
                                             "AR (M)", "AR (L)")]
        with open(os.path.join(tmp, "r.keypoints.json")) as f:
            n_results = len(json.load(f))
    print(json.dumps({"stats": dict(zip(NAMES, stats)), "n_results": n_results, "seconds": seconds}))


if __name__ == "__main__":
    main()
