"""`python -m sar.export`: ONNX of backbone + neck + head with a dynamic batch, checked against PyTorch with
onnxruntime within 1e-4 (max abs), for the SAR head and the heatmap head."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from inference_helpers import TINY, compose_run_config, save_checkpoint
from sar.data.topdown import TopDownDataset
from sar.export import ExportWrapper, ParityError, check_parity
from sar.export import main as export_main
from sar.systems.topdown import TopDownSystem, apply_affine
from sar.utils.checkpoint import load_system

OUTPUTS = {"sar": ["logits", "offsets", "heatmap"], "heatmap": ["heatmap"]}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def docs_functions() -> dict:
    """The reference decoding functions of docs/export.md (its python code block), executed."""
    text = DOCS.read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def random_checkpoint(path: Path, head: str) -> Path:
    """A tiny checkpoint whose outputs vary a lot across cells and inputs (random head, non-trivial BN stats)."""
    torch.manual_seed(0)
    system = TopDownSystem(compose_run_config(*TINY, f"head={head}")).eval()
    with torch.no_grad():
        for p in system.model.head.parameters():
            p.normal_(0.0, 1.0)
        for m in system.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(system, path)


@pytest.mark.slow
@pytest.mark.parametrize(("head", "exporter"), [("sar", "auto"), ("heatmap", "torchscript")])
def test_onnx_matches_pytorch(tmp_path: Path, head: str, exporter: str) -> None:
    ckpt = random_checkpoint(tmp_path / f"{head}.ckpt", head)
    out = tmp_path / f"{head}.onnx"
    if exporter == "auto":  # through the real entry point once
        cmd = [sys.executable, "-m", "sar.export", f"ckpt={ckpt}", f"out={out}"]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "onnxruntime vs PyTorch max abs diff" in proc.stderr
    else:
        summary = export_main([f"ckpt={ckpt}", f"out={out}", f"exporter={exporter}"])
        assert summary["parity"] == "ok" and summary["exporter"] == exporter
        assert summary["max_abs_diff"] <= 1e-4

    meta = json.loads(out.with_suffix(".onnx.json").read_text())
    assert meta["outputs"].keys() == set(OUTPUTS[head]) and meta["head"] == head
    assert max(meta["export"]["parity_max_abs"].values()) <= 1e-4
    model = onnx.load(str(out))
    assert json.loads({p.key: p.value for p in model.metadata_props}["sar"])["keypoint_names"][0] == "nose"

    # Independent check: a batch size the export never saw, against the checkpoint reloaded in PyTorch.
    system = load_system(ckpt)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == OUTPUTS[head]
    images = torch.randn(5, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    got = dict(zip(OUTPUTS[head], session.run(None, {"image": images.numpy()})))
    with torch.no_grad():
        ref = system.model(images)
    for name in OUTPUTS[head]:
        assert got[name].shape == tuple(ref[name].shape)
        assert float(ref[name].std()) > 0.1  # the comparison is not between near-constant maps
        assert np.abs(got[name] - ref[name].numpy()).max() <= 1e-4, name

    if head == "sar":  # docs/export.md's decoding of the raw ONNX outputs = the package's codec
        decode_sar = docs_functions()["decode_sar"]
        ref_kpts, ref_scores = system.codec.decode(ref)
        # (on the PyTorch tensors: the random ReLU features leave exact ties between cells, which the ONNX
        # outputs, equal within 1e-4, may break the other way)
        kpts, scores = decode_sar(ref["logits"].numpy(), ref["offsets"].numpy(), (64, 96))
        np.testing.assert_allclose(kpts, ref_kpts.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-7, rtol=0)

    # The check fails loudly when the ONNX file no longer matches the network.
    with torch.no_grad():
        system.model.head.parameters().__next__().add_(0.01)
    with pytest.raises(ParityError, match="differ by more than"):
        check_parity(out, ExportWrapper(system.model, OUTPUTS[head]), images, 1e-4)


def test_docs_crop_to_image_is_the_inverse_warp(tmp_path: Path) -> None:
    """docs/export.md's crop -> image mapping equals the inverse warp of the top-down samples."""
    crop_to_image = docs_functions()["crop_to_image"]
    system = TopDownSystem(compose_run_config(*TINY))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), image)
    boxes = [[10.0, 20.0, 300.0, 100.0], [50.5, 3.0, 40.0, 250.0], [0.0, 0.0, 0.4, 0.2]]
    records = [{"image_path": str(path), "image_id": 1, "ann_id": -1, "bbox": np.float32(b), "bbox_score": 1.0,
                "area": 1.0, "keypoints": np.zeros((17, 2), np.float32), "visible": np.zeros(17, np.float32)}
               for b in boxes]
    dataset = TopDownDataset(records, system.spec, system.codec, train=False, padding=1.25)
    crop_pts = rng.uniform(-5, 100, (17, 2))
    for i, box in enumerate(boxes):
        inv = dataset[i]["meta"]["inv_warp"].double()
        expected = apply_affine(inv[None], torch.as_tensor(crop_pts)[None])[0].numpy()
        np.testing.assert_allclose(crop_to_image(crop_pts, box, (64, 96)), expected, atol=1e-3)
