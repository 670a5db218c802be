"""`python -m sar.predict` on the real COCO sample images (../shared/data/coco).

The checkpoint's SAR head is set by hand so that keypoint ``k`` is predicted at a known crop pixel
``p_k`` whatever the image (zero conv weights: equal selector logits, so the decoder takes cell 0, whose
hypothesis is ``-offset * input_size``). Where each keypoint must land in the image then follows from the
top-down box convention alone (box centre, aspect fixed to the crop's, padding 1.25), computed here
independently of the package's transforms: this checks the crop, the codec decoding and the inverse warp
end to end, and the results json / PNG files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference_helpers import TINY, compose_run_config, save_checkpoint
from sar.predict import main as predict_main
from sar.systems.topdown import TopDownSystem

K = 17
IN_W, IN_H = 64, 96
# Crop pixel of each keypoint: spread around the crop centre ((w-1)/2, (h-1)/2).
CROP_PTS = np.stack([
    (IN_W - 1) / 2 + (np.arange(K) % 5 - 2) * 4.0,
    (IN_H - 1) / 2 + (np.arange(K) // 5 - 1.5) * 8.0,
], axis=1)
COCO_IDS = {785, 40083, 196141, 197388}


@pytest.fixture(scope="module")
def fixed_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    system = TopDownSystem(compose_run_config(*TINY)).eval()
    head = system.model.head
    with torch.no_grad():
        for conv in (head.logit_conv, head.offset_conv, head.heatmap_conv):
            conv.weight.zero_()
        head.logit_conv.bias.zero_()
        offsets = -CROP_PTS / np.array([IN_W, IN_H])  # hypothesis of cell (0, 0) = -offset * input_size
        head.offset_conv.bias.copy_(torch.as_tensor(offsets.reshape(-1), dtype=torch.float32))
    return save_checkpoint(system, tmp_path_factory.mktemp("ckpt") / "fixed.ckpt")


def expected_keypoints(bbox: list[float]) -> np.ndarray:
    """Image position of CROP_PTS for an xywh box (padding 1.25, aspect w/h of the crop)."""
    x, y, w, h = bbox
    aspect = IN_W / IN_H
    sw, sh = (w, w / aspect) if w > h * aspect else (h * aspect, h)
    sw, sh = 1.25 * sw, 1.25 * sh
    centre = np.array([x + w / 2, y + h / 2])
    return centre + (CROP_PTS - [(IN_W - 1) / 2, (IN_H - 1) / 2]) * [sw / IN_W, sh / IN_H]


def image_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: cv2.imread(str(p)).shape[1::-1] for p in folder.glob("*.jpg")}


def check_entries(results: list[dict], sizes: dict[str, tuple[int, int]]) -> None:
    for r in results:
        kpts = np.asarray(r["keypoints"], dtype=np.float64)
        assert kpts.shape == (K * 3,)
        kpts = kpts.reshape(K, 3)
        np.testing.assert_allclose(kpts[:, :2], expected_keypoints(r["bbox"]), atol=1e-3)
        np.testing.assert_allclose(kpts[:, 2], 1.0 / (16 * 24), rtol=1e-5)  # uniform selector weights
        w, h = sizes[r["file_name"]]
        assert np.all((kpts[:, 0] >= 0) & (kpts[:, 0] <= w) & (kpts[:, 1] >= 0) & (kpts[:, 1] <= h))
        assert isinstance(r["image_id"], int) and isinstance(r["score"], float) and r["category_id"] == 1


def check_pngs(out: Path, folder: Path, expect_drawn: bool = True) -> None:
    for jpg in folder.glob("*.jpg"):
        png = cv2.imread(str(out / f"{jpg.stem}.png"))
        original = cv2.imread(str(jpg))
        assert png is not None and png.shape == original.shape
        if expect_drawn:
            assert np.abs(png.astype(int) - original.astype(int)).max() > 100  # skeleton pixels


def test_predict_whole_image_boxes(tmp_path: Path, shared_data: Path, fixed_ckpt: Path) -> None:
    folder = shared_data / "coco"
    out = tmp_path / "pred"
    cmd = [sys.executable, "-m", "sar.predict", f"ckpt={fixed_ckpt}", f"input={folder}", f"out={out}",
           "flip_test=false", "draw_kpt_thr=0"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "results_keypoints.json").read_text())
    sizes = image_sizes(folder)
    assert len(results) == 4
    assert {r["image_id"] for r in results} == COCO_IDS  # numeric file names are COCO ids
    assert {r["file_name"] for r in results} == set(sizes)
    for r in results:
        w, h = sizes[r["file_name"]]
        assert r["bbox"] == [0.0, 0.0, float(w), float(h)]  # no detections: the whole image is the box
        assert r["score"] == 0.0  # bbox_keypoint rescoring: no keypoint score above 0.2
    check_entries(results, sizes)
    check_pngs(out, folder)


def test_predict_single_image_without_coco_id(tmp_path: Path, shared_data: Path, fixed_ckpt: Path) -> None:
    src = shared_data / "coco" / "000000000785.jpg"
    image = tmp_path / "in" / "skier.jpg"
    image.parent.mkdir()
    image.write_bytes(src.read_bytes())
    summary = predict_main([f"ckpt={fixed_ckpt}", f"input={image}", f"out={tmp_path / 'pred'}", "flip_test=false",
                            "draw=false"])
    assert summary["images"] == 1 and summary["pngs"] == 0
    (result,) = json.loads((tmp_path / "pred" / "results_keypoints.json").read_text())
    assert result["image_id"] == -1 and result["file_name"] == "skier.jpg"
    check_entries([result], {"skier.jpg": cv2.imread(str(src)).shape[1::-1]})


def test_predict_with_detection_file(tmp_path: Path, shared_data: Path, fixed_ckpt: Path) -> None:
    folder = shared_data / "coco"
    det_file = folder / "test_coco_det_AP_H_56.json"
    dets = [d for d in json.loads(det_file.read_text()) if d.get("category_id", 1) == 1]
    out = tmp_path / "pred"
    summary = predict_main([f"ckpt={fixed_ckpt}", f"input={folder}", f"det={det_file}",
                            f"ann={folder / 'test_coco.json'}", f"out={out}", "flip_test=false", "use_nms=false",
                            "draw_kpt_thr=0"])
    results = json.loads((out / "results_keypoints.json").read_text())
    assert summary["boxes"] == len(dets) == len(results)  # one entry per person box (no NMS)
    id_of = {img["file_name"]: img["id"] for img in json.loads((folder / "test_coco.json").read_text())["images"]}
    assert sorted((r["image_id"], tuple(r["bbox"])) for r in results) == sorted(
        (d["image_id"], tuple(np.float32(d["bbox"]).tolist())) for d in dets)
    for r in results:
        assert r["image_id"] == id_of[r["file_name"]]
    check_entries(results, image_sizes(folder))
    check_pngs(out, folder)

    # Default: per-image OKS-NMS as in evaluation removes duplicates of the same person.
    summary_nms = predict_main([f"ckpt={fixed_ckpt}", f"input={folder}", f"det={det_file}",
                                f"out={tmp_path / 'nms'}", "flip_test=false", "draw=false"])
    assert 0 < summary_nms["instances"] < len(dets)
