"""Robust inputs of `sar.predict`, `sar.export` and checkpoint reading (issue 9, "no lost training").

* predict: unreadable images are skipped and counted (summary and summary.json); the output folder is made only
  once the checkpoint and the inputs are valid;
* export: the ONNX file is written and checked in a temporary folder next to the target and moved into place only
  after the parity check passed; a failure leaves the previous verified files as they were;
* checkpoints: a file that is not a readable checkpoint is named in the error; the ``weights_only=False``
  fallback is taken for the weights-only unpickling error only.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference_helpers import TINY, compose_run_config, save_checkpoint
from sar import export as export_mod
from sar.export import main as export_main
from sar.predict import main as predict_main
from sar.systems.topdown import TopDownSystem
from sar.utils import checkpoint as ckpt_mod
from sar.utils.checkpoint import CheckpointError, checkpoint_config, load_system, read_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    system = TopDownSystem(compose_run_config(*TINY)).eval()
    return save_checkpoint(system, tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def write_image(path: Path, seed: int = 0) -> Path:
    image = np.random.default_rng(seed).integers(0, 255, (60, 50, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def png_with_bad_pixel_data(path: Path) -> Path:
    """A PNG whose header and IEND are intact (it passes the up-front check) but whose pixel data is corrupt."""
    data = bytearray(cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (40, 40, 3), np.uint8))[1])
    pos = data.index(b"IDAT")
    (length,) = struct.unpack(">I", bytes(data[pos - 4:pos]))
    body = bytes(b ^ 0x5A for b in data[pos + 4:pos + 4 + length])  # garbage deflate stream, valid CRC
    data[pos + 4:pos + 4 + length] = body
    data[pos + 4 + length:pos + 8 + length] = struct.pack(">I", zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


# -- predict ---------------------------------------------------------------------------------------------------
def test_predict_skips_and_counts_unreadable_images(tmp_path: Path, ckpt: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.jpg")
    write_image(folder / "b.png", 1)
    good = (folder / "a.jpg").read_bytes()
    (folder / "c_truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "d_text.jpg").write_text("not an image")
    png_with_bad_pixel_data(folder / "e_corrupt.png")
    out = tmp_path / "pred"
    summary = predict_main([f"ckpt={ckpt}", f"input={folder}", f"out={out}", "flip_test=false"])
    assert summary["images"] == 5 and summary["skipped"] == 3 and summary["instances"] == 2
    skipped = {s["file"]: s["reason"] for s in summary["skipped_images"]}
    assert set(skipped) == {str(folder / n) for n in ("c_truncated.jpg", "d_text.jpg", "e_corrupt.png")}
    assert "truncated" in skipped[str(folder / "c_truncated.jpg")]
    results = json.loads((out / "results_keypoints.json").read_text())
    assert sorted(r["file_name"] for r in results) == ["a.jpg", "b.png"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]
    assert json.loads((out / "summary.json").read_text())["skipped_images"] == summary["skipped_images"]


def test_predict_with_only_invalid_inputs_writes_nothing(tmp_path: Path, ckpt: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = tmp_path / "pred"
    with pytest.raises(ValueError, match=r"(?s)no readable image.*1 of 1.*x\.jpg"):
        predict_main([f"ckpt={ckpt}", f"input={folder}", f"out={out}"])
    assert not out.exists()


def test_predict_with_a_bad_checkpoint_writes_nothing(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    bad = tmp_path / "bad.ckpt"
    bad.write_text("hello\n")
    out = tmp_path / "pred"
    with pytest.raises(CheckpointError, match=r"bad\.ckpt.*not a readable checkpoint"):
        predict_main([f"ckpt={bad}", f"input={tmp_path / 'a.jpg'}", f"out={out}"])
    assert not out.exists()


# -- export ------------------------------------------------------------------------------------------------------
def test_failed_export_keeps_the_verified_model(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model.onnx"
    sidecar = tmp_path / "model.onnx.json"
    (tmp_path / "model.onnx.data").write_bytes(b"stale external data of an older export")
    checked = []
    real_check = export_mod.check_parity

    def spy(path, *args, **kwargs):
        checked.append(Path(path))
        return real_check(path, *args, **kwargs)

    monkeypatch.setattr(export_mod, "check_parity", spy)
    summary = export_main([f"ckpt={ckpt}", f"out={out}", "exporter=torchscript"])
    assert summary["parity"] == "ok" and summary["onnx"] == str(out)
    # checked in a temporary folder next to the target, not at the target itself
    assert checked[0] != out and checked[0].parent.parent == tmp_path and checked[0].name == "model.onnx"
    assert not (tmp_path / "model.onnx.data").exists()  # no orphaned external data of another model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]
    verified, verified_meta = out.read_bytes(), sidecar.read_text()

    with pytest.raises(SystemExit, match="parity check FAILED"):
        export_main([f"ckpt={ckpt}", f"out={out}", "exporter=torchscript", "tol=-1", "seed=3"])
    assert out.read_bytes() == verified and sidecar.read_text() == verified_meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]

    def broken_export(wrapper, example, path, opset, exporter):
        Path(path).write_bytes(b"half a file")
        Path(f"{path}.data").write_bytes(b"weights")
        raise RuntimeError("ONNX export failed: simulated")

    monkeypatch.setattr(export_mod, "export_onnx", broken_export)
    with pytest.raises(RuntimeError, match="simulated"):
        export_main([f"ckpt={ckpt}", f"out={out}", "exporter=torchscript"])
    assert out.read_bytes() == verified and sidecar.read_text() == verified_meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]


def test_failed_first_export_leaves_nothing(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "sub" / "model.onnx"
    with pytest.raises(SystemExit, match="parity check FAILED"):
        export_main([f"ckpt={ckpt}", f"out={out}", "exporter=torchscript", "tol=-1"])
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.parametrize("inline", [True, False])
def test_external_data_moves_with_the_model(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                            inline: bool) -> None:
    """An exporter that writes external data (``model.onnx.data``, as torch's dynamo exporter does): a model under
    2 GiB is folded into one self-contained file (no data file left); a larger one (here: the limit lowered)
    keeps its data file through the metadata rewrite, the check and the move. Either way a failed export leaves
    the files as they were, and a later export without external data leaves no orphaned data file."""
    onnx = pytest.importorskip("onnx")
    real_export = export_mod.export_onnx

    def external_export(wrapper, example, path, opset, exporter):
        kind = real_export(wrapper, example, path, opset, exporter)
        model = onnx.load(str(path))
        onnx.save(model, str(path), save_as_external_data=True, location=f"{Path(path).name}.data",
                  size_threshold=0)
        return kind

    if not inline:
        monkeypatch.setattr(export_mod, "MAX_INLINE_BYTES", 0)
    out = tmp_path / "model.onnx"
    monkeypatch.setattr(export_mod, "export_onnx", external_export)
    assert export_main([f"ckpt={ckpt}", f"out={out}", "exporter=torchscript"])["parity"] == "ok"
    expected = ["model.onnx", "model.onnx.json"] if inline else ["model.onnx", "model.onnx.data", "model.onnx.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    model = onnx.load(str(out))
    assert json.loads({p.key: p.value for p in model.metadata_props}["sar"])["keypoint_names"][0] == "nose"
    if not inline:
        assert len(out.read_bytes()) < (tmp_path / "model.onnx.data").stat().st_size  # the weights stay external
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    with pytest.raises(SystemExit, match="parity check FAILED"):
        export_main([f"ckpt={ckpt}", f"out={out}", "exporter=torchscript", "tol=-1"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files

    monkeypatch.setattr(export_mod, "export_onnx", real_export)
    monkeypatch.setattr(export_mod, "MAX_INLINE_BYTES", 2**31 - 2**24)
    assert export_main([f"ckpt={ckpt}", f"out={out}", "exporter=torchscript"])["parity"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]


# -- checkpoints ---------------------------------------------------------------------------------------------------
def _bad_files(tmp_path: Path, ckpt: Path) -> dict[str, Path]:
    files = {"text": tmp_path / "notes.ckpt", "truncated": tmp_path / "truncated.ckpt", "empty": tmp_path / "e.ckpt",
             "tensor": tmp_path / "tensor.ckpt", "state_dict": tmp_path / "weights.ckpt"}
    files["text"].write_text("epoch=3 loss=0.1\n")
    data = ckpt.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"].write_bytes(b"")
    torch.save(torch.zeros(3), files["tensor"])
    torch.save(torch.load(ckpt, weights_only=True)["state_dict"], files["state_dict"])  # a bare state dict
    return files


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "tensor", "state_dict"])
def test_bad_checkpoint_files_are_named(tmp_path: Path, ckpt: Path, kind: str) -> None:
    path = _bad_files(tmp_path, ckpt)[kind]
    with pytest.raises(CheckpointError, match=rf"{path.name}: not a readable checkpoint"):
        load_system(path)
    with pytest.raises(CheckpointError, match=rf"{path.name}: not a readable checkpoint"):
        checkpoint_config(path)


def test_checkpoint_without_run_config_is_named(tmp_path: Path, ckpt: Path) -> None:
    path = tmp_path / "nohp.ckpt"
    torch.save({"state_dict": torch.load(ckpt, weights_only=True)["state_dict"]}, path)
    with pytest.raises(CheckpointError, match=rf"{path.name}: not a readable sar checkpoint: no run config in "
                                              r"hyper_parameters"):
        load_system(path)


def test_weights_only_fallback_only_for_its_own_error(tmp_path: Path, ckpt: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    lightning_like = tmp_path / "objects.ckpt"  # an object the weights-only unpickler refuses
    torch.save({**torch.load(ckpt, weights_only=True), "extra": argparse.Namespace(a=1)}, lightning_like)
    assert read_checkpoint(lightning_like)["extra"].a == 1
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    loaded = load_system(lightning_like).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())  # the weights of the file, not a fresh init

    calls = []
    real_load = torch.load

    def fake_load(path, *args, weights_only=None, **kwargs):
        calls.append(weights_only)
        if weights_only:
            raise RuntimeError("some other failure")
        return real_load(path, *args, weights_only=False, **kwargs)

    monkeypatch.setattr(ckpt_mod.torch, "load", fake_load)
    with pytest.raises(CheckpointError, match="not a readable checkpoint.*some other failure"):
        read_checkpoint(ckpt)
    assert calls == [True]  # no unsafe retry for an error that is not the weights-only one

    calls.clear()

    def plain_unpickling_error(path, *args, weights_only=None, **kwargs):
        calls.append(weights_only)
        raise pickle.UnpicklingError("invalid load key, 'h'.")

    monkeypatch.setattr(ckpt_mod.torch, "load", plain_unpickling_error)
    with pytest.raises(CheckpointError, match="invalid load key"):
        read_checkpoint(ckpt)
    assert calls == [True]

