"""``python -m sar.bench eval``: COCO evaluation at COCO-val scale, per backend, and through mmpose's CocoMetric.

A synthetic ground truth of ``images`` images (0-6 persons each, COCO-like visibility) and ``instances`` detected
top-down instances (about 20 per image, as a person detector's boxes on COCO val: several near each person,
near-duplicates for OKS-NMS to remove, false positives, a fifth with every keypoint score <= 0.2 so that
``bbox_keypoint`` ties them at 0) is generated in memory from a seed. For each backend the evaluator's steps are
timed separately: rescoring + OKS-NMS + results list (``format_results``) and COCOeval (``compute_stats``); the
APs of the backends must agree to 1e-9. With ``peer_python`` the same ground truth and predictions go through
mmpose 1.3.2's ``CocoMetric.compute_metrics`` in that Python (``sar/peer/mmpose_coco_metric.py``, a subprocess).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("pycocotools", "faster_coco_eval")
PEER_SCRIPT = Path(__file__).resolve().parent / "peer" / "mmpose_coco_metric.py"


def synthetic_coco_val(images: int = 5000, instances: int = 100_000, seed: int = 0,
                       num_keypoints: int = 17) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground truth dict and the prediction records (dataset order) described in the module docstring."""
    if images < 1 or instances < 1:
        raise ValueError(f"need at least one image and one instance, got {images} and {instances}")
    rng = np.random.default_rng(seed)
    k = num_keypoints
    width, height = 640.0, 480.0
    gt_images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480} for i in range(images)]
    n_person = rng.integers(0, 7, images)
    owner = np.repeat(np.arange(images), n_person)  # image index of each person
    p = owner.size
    w = rng.uniform(30.0, 300.0, p)
    h = w * rng.uniform(1.2, 2.6, p)
    x0 = rng.uniform(0.0, width - 30.0, p)
    y0 = rng.uniform(0.0, height - 30.0, p)
    gxy = np.stack([x0[:, None] + w[:, None] * rng.random((p, k)), y0[:, None] + h[:, None] * rng.random((p, k))], -1)
    vis = rng.choice([0, 1, 2], (p, k), p=[0.3, 0.15, 0.55])
    areas = 0.55 * w * h
    annotations = []
    for j in range(p):
        kp = np.concatenate([gxy[j] * (vis[j, :, None] > 0), vis[j, :, None]], axis=1)
        annotations.append({"id": j + 1, "image_id": int(owner[j]) + 1, "category_id": 1, "iscrowd": 0,
                            "area": float(areas[j]), "bbox": [float(x0[j]), float(y0[j]), float(w[j]), float(h[j])],
                            "keypoints": kp.reshape(-1).round(2).tolist(), "num_keypoints": int((vis[j] > 0).sum())})
    gt = {"images": gt_images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person", "supercategory": "person",
                          "keypoints": [f"kpt_{i}" for i in range(k)], "skeleton": []}]}
    # detections: images drawn with weights, each detection near one of its image's persons or a false positive
    det_image = np.sort(rng.integers(0, images, instances))
    first_person = np.concatenate([[0], np.cumsum(n_person)[:-1]])
    has_person = n_person[det_image] > 0
    target = first_person[det_image] + (rng.random(instances) * np.maximum(n_person[det_image], 1)).astype(int)
    real = has_person & (rng.random(instances) > 0.15)
    noise = rng.choice([0.01, 0.04, 0.1, 0.3], instances, p=[0.3, 0.3, 0.25, 0.15])
    t = np.where(real, target, 0)
    centre = gxy[t] if p else np.zeros((instances, k, 2))
    size = np.sqrt(areas[t]) if p else np.full(instances, 100.0)
    xy = centre + rng.normal(0.0, 1.0, (instances, k, 2)) * (noise * size)[:, None, None]
    fp = ~real
    xy[fp] = rng.random((int(fp.sum()), 1, 2)) * [width, height] + rng.normal(0.0, 30.0, (int(fp.sum()), k, 2))
    kscore = rng.random((instances, k))
    low = rng.random(instances) < 0.2
    kscore[low] *= 0.2  # every keypoint score <= 0.2: instance score 0 under bbox_keypoint
    bbox_score = rng.choice([0.3, 0.5, 0.7, 0.9, 1.0], instances)
    det_area = np.where(real, areas[t] / 0.55 * 1.25**2, 1.0e4)
    kpts = np.concatenate([xy, kscore[..., None]], axis=-1)
    preds = [{"image_id": int(det_image[i]) + 1, "keypoints": kpts[i], "bbox_score": float(bbox_score[i]),
              "area": float(det_area[i])} for i in range(instances)]
    return gt, preds


def run_peer(peer_python: str, gt: dict[str, Any], preds: list[dict[str, Any]], sigmas: np.ndarray,
             score_mode: str = "bbox_keypoint", repeat: int = 1) -> dict[str, Any]:
    """mmpose's CocoMetric on ``gt`` / ``preds`` in ``peer_python``: its stats, results count and seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, preds_path = Path(tmp) / "gt.json", Path(tmp) / "preds.npz"
        gt_path.write_text(json.dumps(gt))
        np.savez(preds_path, image_id=np.array([p["image_id"] for p in preds]),
                 keypoints=np.stack([p["keypoints"] for p in preds]),
                 bbox_score=np.array([p["bbox_score"] for p in preds]),
                 area=np.array([p["area"] for p in preds]), sigmas=np.asarray(sigmas, dtype=np.float64))
        proc = subprocess.run([peer_python, str(PEER_SCRIPT), str(gt_path), str(preds_path), "--score-mode",
                               score_mode, "--repeat", str(repeat)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{peer_python} {PEER_SCRIPT.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_eval(images: int = 5000, instances: int = 100_000, peer_python: str | None = None, repeat: int = 1,
               seed: int = 0) -> dict[str, Any]:
    """Seconds of rescoring + OKS-NMS and of COCOeval per backend (best of ``repeat``), their APs (equal to 1e-9
    or a RuntimeError), and mmpose's CocoMetric on the same data when ``peer_python`` is given."""
    from sar.data.spec import load_spec
    from sar.evaluation.coco_ap import METRIC_NAMES, CocoEvaluator

    sigmas = np.asarray(load_spec("coco").sigmas, dtype=np.float64)
    gt, preds = synthetic_coco_val(images, instances, seed)
    out: dict[str, Any] = {"images": images, "instances": instances, "gt_persons": len(gt["annotations"]),
                           "repeat": repeat, "backends": {}}
    stats: dict[str, dict[str, float]] = {}
    for backend in BACKENDS:
        ev = CocoEvaluator(gt, sigmas, backend=backend)
        fmt_s, eval_s = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            results = ev.format_results(preds)
            t1 = time.perf_counter()
            stats[backend] = ev.compute_stats(results)
            t2 = time.perf_counter()
            fmt_s.append(t1 - t0)
            eval_s.append(t2 - t1)
        out["backends"][backend] = {"rescore_nms_s": round(min(fmt_s), 3), "cocoeval_s": round(min(eval_s), 3),
                                    "total_s": round(min(a + b for a, b in zip(fmt_s, eval_s)), 3),
                                    "results": len(results), "AP": stats[backend]["AP"]}
    diff = max(abs(stats["pycocotools"][n] - stats["faster_coco_eval"][n]) for n in METRIC_NAMES)
    out["max_abs_diff_between_backends"] = diff
    if diff > 1e-9:
        raise RuntimeError(f"the backends disagree by {diff:.3g}: {stats}")
    base = out["backends"]["pycocotools"]["total_s"]
    for r in out["backends"].values():
        r["speedup_vs_pycocotools"] = round(base / r["total_s"], 2) if r["total_s"] > 0 else None
    if peer_python:
        peer = run_peer(peer_python, gt, preds, sigmas, repeat=repeat)
        total = min(peer["seconds"])
        out["peer"] = {"total_s": round(total, 3), "results": peer["n_results"], "AP": peer["stats"]["AP"],
                       "max_abs_diff_to_sar": max(abs(peer["stats"][n] - stats["pycocotools"][n])
                                                  for n in METRIC_NAMES)}
        for r in out["backends"].values():
            r["speedup_vs_mmpose"] = round(total / r["total_s"], 2) if r["total_s"] > 0 else None
    else:
        out["peer"] = None
    return out


def eval_table(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md block of :func:`bench_eval`."""
    lines = [(f"{result['instances']} detected instances over {result['images']} images "
              f"({result['gt_persons']} GT persons), synthetic, best of {result['repeat']}.\n"),
             "| path | rescoring + OKS-NMS s | COCOeval s | total s | AP | vs pycocotools path | vs mmpose |",
             "|---|---|---|---|---|---|---|"]
    for backend, r in result["backends"].items():
        vs_peer = f"{r['speedup_vs_mmpose']}x" if "speedup_vs_mmpose" in r else "-"
        lines.append(f"| sar, {backend} | {r['rescore_nms_s']} | {r['cocoeval_s']} | {r['total_s']} | "
                     f"{r['AP']:.6f} | {r['speedup_vs_pycocotools']}x | {vs_peer} |")
    peer = result["peer"]
    if peer:
        lines.append(f"| mmpose 1.3.2 CocoMetric | - | - | {peer['total_s']} | {peer['AP']:.6f} | - | 1x |")
    lines.append("")
    lines.append(f"AP identical between backends: max |difference| over the 10 stats "
                 f"{result['max_abs_diff_between_backends']:.1e} (required <= 1e-9).")
    if peer:
        lines.append(f"mmpose's CocoMetric on the same file: max |difference| to sar {peer['max_abs_diff_to_sar']:.1e}.")
    else:
        lines.append("No peer given (`--peer-python`): mmpose's CocoMetric not run.")
    lines.append("Target: sar's fast path >= 3x faster than the pycocotools path.\n")
    return "\n".join(lines)
