"""`python -m sar.predict ckpt=<file> input=<image or folder> [det=<json> [ann=<json>]] [out=<dir>] [key=value ...]`

Keypoint prediction on images with nothing but a checkpoint (it carries the resolved run config, hence the
network, the codec and the keypoint spec). A multi-person checkpoint (``task=bottomup``) finds every person itself
(no ``det``). A top-down checkpoint takes person boxes:

* no ``det``: the whole image is the box (one person per image, box score 1);
* ``det=<multi-person checkpoint .ckpt>``: the people that checkpoint finds (the extent of each pose's keypoints,
  enlarged by :data:`POSE_BOX_SCALE`, scored by its pose score), so the two families combine;
* ``det=<COCO detection results json>`` (``[{image_id, bbox: [x, y, w, h], score, category_id}, ...]``): every
  person box (``category_id`` 1, ``score >= det_score_thr``) of the image. An image's COCO id comes from
  ``ann=<COCO json>`` (its ``images`` entries map ``file_name`` to ``id``), else from a numeric file name
  (``000000000785.jpg`` -> 785, the COCO convention).

The prediction itself is the task's (``system.predict_images`` of the checkpoint's task system,
:class:`sar.systems.base.PoseSystem`); for top-down checkpoints each box goes through the validation path of
training (:mod:`sar.systems.topdown_predict`: crop, ``predict_crops``, inverse warp) and instances are rescored and
OKS-NMS'ed per image as the checkpoint's evaluator does (``task.evaluation``).

Writes into ``out`` (default ``outputs/predict/<timestamp>_<random suffix>``):

* ``results_keypoints.json`` — COCO results: ``{"image_id", "category_id": 1, "keypoints": [x, y, score] * K,
  "score", "bbox", "file_name"}``; ``image_id`` is the COCO id when known, else ``-(1 + the image's position in
  the sorted input listing)`` (never a valid COCO id); ``file_name`` always names the image;
* ``<image stem>.png`` — the image with the predicted skeletons drawn with the spec's links and colours
  (instances with box score >= ``draw_bbox_thr``, keypoints with score > ``draw_kpt_thr``);
* ``summary.json`` — the summary the command prints, with the skipped images.

Bad inputs. The checkpoint and every input image are checked before anything is written: a file that is not a
readable checkpoint stops the run (nothing written, no output folder). An input image that is missing,
unreadable, truncated (``sar.data.image_check``) or fails to decode is skipped and counted: ``skipped`` and
``skipped_images`` (``{file, reason}``) in the summary; a run whose inputs are all bad stops with an error naming
them, without creating the output folder.

Keys (``key=value``): see ``DEFAULTS``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from sar import unique_suffix
from sar.data.formats import read_json
from sar.data.image_check import find_bad_images
from sar.data.topdown import read_image
from sar.evaluation.keypoint_error import load_coco_dict
from sar.evaluation.results import write_json_atomic
from sar.utils.checkpoint import checkpoint_config, load_system
from sar.utils.cli import parse_key_values
from sar.utils.draw import draw_instances

log = logging.getLogger("sar.predict")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PERSON_CATEGORY_ID = 1

DEFAULTS: dict[str, Any] = {
    "ckpt": "???",              # checkpoint written by `python -m sar.train`
    "input": "???",             # an image file or a folder of images (not recursive)
    "det": None,                # COCO detection results json; null: the whole image is the box
    "ann": None,                # COCO json whose `images` map file_name -> id (for `det`)
    "out": None,                # output folder; null: outputs/predict/<timestamp>
    "det_score_thr": 0.0,       # detections with a lower score are dropped
    "flip_test": None,          # null: the checkpoint's task.flip_test
    "use_nms": None,            # null: the checkpoint's task.evaluation.use_nms (per-image OKS-NMS)
    "batch_size": 32,
    "num_workers": 0,
    "device": "auto",           # auto (cuda when available) | cpu | cuda | cuda:1 ...
    "draw": True,               # write one PNG per image
    "draw_bbox_thr": 0.3,       # instances drawn: box score >= this
    "draw_kpt_thr": None,       # keypoints drawn: score > this; null: the checkpoint's evaluation.kpt_score_thr
    "draw_boxes": True,         # also draw the person boxes
}


def parse_args(argv: Sequence[str], defaults: Mapping[str, Any], prog: str = "sar.predict") -> Any:
    """``key=value`` arguments merged onto ``defaults`` (sar.utils.cli: unknown keys and missing required ones
    stop with one line naming them)."""
    return parse_key_values(argv, defaults, prog)


def list_images(path: str | Path) -> list[Path]:
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} is neither an image file nor a folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return images


def image_ids(images: Sequence[Path], ann: str | Path | None) -> list[int | None]:
    """COCO id per image (``ann``'s file_name -> id, else a numeric file stem), None when unknown."""
    if ann is not None:
        by_name = {Path(str(img["file_name"])).name: int(img["id"]) for img in load_coco_dict(ann)["images"]}
        ids = [by_name.get(p.name) for p in images]
        unknown = [p.name for p, i in zip(images, ids) if i is None]
        if unknown:
            log.warning("%d image(s) are not in %s (no COCO id): %s", len(unknown), ann, unknown[:5])
        return ids
    return [int(p.stem) if p.stem.isdigit() else None for p in images]


def read_detections(det_file: str | Path, score_thr: float) -> dict[int, list[tuple[np.ndarray, float]]]:
    """Person boxes ``(xywh, score)`` per image id from a COCO detection results json."""
    data = read_json(det_file)
    if not isinstance(data, list):
        raise ValueError(f"{det_file}: a detection file must be a COCO results list")  # noqa: TRY004
    boxes: dict[int, list[tuple[np.ndarray, float]]] = defaultdict(list)
    for i, det in enumerate(data):
        try:
            category = int(det.get("category_id", PERSON_CATEGORY_ID))
            box = np.asarray(det["bbox"], dtype=np.float32).reshape(4)
            score = float(det["score"])
            image_id = int(det["image_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{det_file}: detection #{i} is malformed ({err!r})") from err
        if category == PERSON_CATEGORY_ID and score >= score_thr and box[2] > 0 and box[3] > 0:
            boxes[image_id].append((box, score))
    return boxes


#: A person box taken from a multi-person pose is its keypoints' extent enlarged by this factor (keypoints sit
#: inside the person: a tight box around them misses the head top and the feet; our choice).
POSE_BOX_SCALE = 1.15


def boxes_from_checkpoint(ckpt: str, images: Sequence[Path], ids: Sequence[int], skipped: dict[int, str],
                          score_thr: float, device: torch.device, batch_size: int,
                          num_workers: int) -> dict[int, list[tuple[np.ndarray, float]]]:
    """Person boxes ``(xywh, score)`` per image id found by a multi-person checkpoint (``det=<file>.ckpt``): the
    extent of each predicted pose's keypoints, enlarged by :data:`POSE_BOX_SCALE`, with the pose's score."""
    finder = load_system(ckpt, checkpoint_config(ckpt), map_location=device)
    instances, _ = finder.predict_images(images, ids, None, skipped, batch_size=batch_size, num_workers=num_workers,
                                         device=device, use_nms=True)
    boxes: dict[int, list[tuple[np.ndarray, float]]] = defaultdict(list)
    for inst in instances:
        x, y, w, h = (float(v) for v in inst["bbox"])
        if inst["score"] < score_thr or w <= 0 or h <= 0:
            continue
        cx, cy, w, h = x + w / 2, y + h / 2, w * POSE_BOX_SCALE, h * POSE_BOX_SCALE
        boxes[int(inst["image_id"])].append((np.array([cx - w / 2, cy - h / 2, w, h], np.float32), inst["score"]))
    log.info("det=%s: %d person boxes on %d images", ckpt, sum(len(b) for b in boxes.values()), len(boxes))
    return boxes


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _skipped_list(images: Sequence[Path], skipped: Mapping[int, str]) -> list[dict[str, str]]:
    return [{"file": str(images[pos]), "reason": skipped[pos]} for pos in sorted(skipped)]


def _no_readable_image(cfg: Any, images: Sequence[Path], skipped: Mapping[int, str]) -> ValueError:
    listed = "\n".join(f"  {s['file']}: {s['reason']}" for s in _skipped_list(images, skipped)[:5])
    more = f"\n  ... and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return ValueError(f"no readable image in input={cfg.input}: {len(skipped)} of {len(images)} image(s) are "
                      f"missing, unreadable, truncated or undecodable; nothing written:\n{listed}{more}")


def predict(cfg: Any) -> dict[str, Any]:
    start = time.time()
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{unique_suffix()}"
    out_dir = Path(str(cfg.out)) if cfg.out else Path("outputs/predict") / stamp
    # Everything is validated (checkpoint, inputs) and predicted before the output folder is made.
    run_cfg = checkpoint_config(str(cfg.ckpt))
    if cfg.flip_test is not None:
        run_cfg["task"] = dict(run_cfg["task"], flip_test=bool(cfg.flip_test))
    device = resolve_device(str(cfg.device))
    system = load_system(str(cfg.ckpt), run_cfg, map_location=device)
    spec = system.spec
    ev = run_cfg["task"]["evaluation"]
    use_nms = bool(ev["use_nms"] if cfg.use_nms is None else cfg.use_nms)
    kpt_thr = float(ev["kpt_score_thr"])
    draw_kpt_thr = kpt_thr if cfg.draw_kpt_thr is None else float(cfg.draw_kpt_thr)

    images = list_images(str(cfg.input))
    bad = find_bad_images(images)
    skipped: dict[int, str] = {pos: bad[str(p)] for pos, p in enumerate(images) if str(p) in bad}
    if len(skipped) == len(images):
        raise _no_readable_image(cfg, images, skipped)
    ids = image_ids(images, cfg.ann)
    det = None
    if cfg.det and str(cfg.det).endswith(".ckpt"):  # person boxes from a multi-person checkpoint
        ids = [i if i is not None else -(pos + 1) for pos, i in enumerate(ids)]
        det = boxes_from_checkpoint(str(cfg.det), images, ids, dict(skipped), float(cfg.det_score_thr), device,
                                    int(cfg.batch_size), int(cfg.num_workers))
    elif cfg.det:
        det = read_detections(str(cfg.det), float(cfg.det_score_thr))
    # the task's prediction on raw images (sar.systems.base.PoseSystem.predict_images)
    instances, num_boxes = system.predict_images(images, ids, det, skipped, batch_size=int(cfg.batch_size),
                                                 num_workers=int(cfg.num_workers), device=device, use_nms=use_nms)
    if len(skipped) == len(images):
        raise _no_readable_image(cfg, images, skipped)
    results = [
        {"image_id": int(inst["image_id"]), "category_id": PERSON_CATEGORY_ID,
         "keypoints": [float(v) for v in inst["keypoints"].reshape(-1)], "score": float(inst["score"]),
         "bbox": [float(v) for v in inst["bbox"]], "file_name": images[inst["position"]].name}
        for inst in instances
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = write_json_atomic(results, out_dir / "results_keypoints.json")

    pngs = []
    if cfg.draw:
        by_image: dict[int, list[dict]] = defaultdict(list)
        for inst in instances:
            if inst["bbox_score"] >= float(cfg.draw_bbox_thr):
                by_image[inst["position"]].append(inst)
        stems = [p.stem for p in images]
        for pos, path in enumerate(images):
            if pos in skipped:
                continue
            try:
                image = read_image(str(path))
            except OSError as err:  # changed since it was predicted: counted, the other drawings go on
                skipped[pos] = str(err)
                continue
            drawn = by_image.get(pos, [])
            canvas = draw_instances(image, [d["keypoints"] for d in drawn], spec, draw_kpt_thr,
                                    boxes=[d["bbox"] for d in drawn] if cfg.draw_boxes else None)
            name = path.stem if stems.count(path.stem) == 1 else path.name
            png = out_dir / f"{name}.png"
            if not cv2.imwrite(str(png), canvas):
                raise OSError(f"could not write {png}")
            pngs.append(str(png))
    if skipped:
        log.warning("%d of %d image(s) skipped (missing, unreadable, truncated or undecodable): %s",
                    len(skipped), len(images), [images[p].name for p in sorted(skipped)][:5])
    summary = {"out": str(out_dir), "results": str(results_path), "images": len(images), "skipped": len(skipped),
               "boxes": num_boxes, "instances": len(results), "pngs": len(pngs),
               "seconds": round(time.time() - start, 1), "skipped_images": _skipped_list(images, skipped)}
    write_json_atomic(summary, out_dir / "summary.json", indent=2)
    log.info("predictions: %s", {k: v for k, v in summary.items() if k != "skipped_images"})
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    cfg = parse_args(sys.argv[1:] if argv is None else argv, DEFAULTS)
    summary = predict(cfg)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
