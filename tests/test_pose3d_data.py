"""task=pose3d data: the Human3.6M reader on the real sample (shared/data/h36m), the protocol filters (on the real
sample and on synthetic fixtures with test subjects), bad input named, the 2D auxiliary joint mapping (real MPII
sample), the flip of a training sample, and the ground truth through encode / decode (< 1 mm MPJPE on the synthetic
set and on the real sample, for every codec)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from sar.codecs.pose3d import Regression3DCodec, RLE3DCodec, SAR3DCodec
from sar.data.formats.h36m import RLE_EXCLUDED, H36MProtocol, load_h36m, parse_image_name
from sar.data.pose3d import Pose3DDataModule, Pose3DDataset, map_aux_joints
from sar.data.spec import load_spec
from sar.evaluation.mpjpe import mpjpe, project
from sar.systems.pose3d import camera_joints

SPEC = load_spec("h36m")
PROTOCOL = {"train_subjects": ["S1", "S5", "S6", "S7", "S8"], "test_subjects": ["S9", "S11"], "train_frame_step": 5,
            "test_frame_step": 64, "exclude": list(RLE_EXCLUDED)}


@pytest.fixture(scope="module")
def h36m_dir(shared_data: Path) -> Path:
    path = shared_data / "h36m"
    if not (path / "test_h36m_body3d.npz").is_file():
        pytest.skip(f"shared Human3.6M sample not found at {path}")
    return path


def _real(h36m_dir: Path, protocol=None) -> list[dict]:
    return load_h36m(h36m_dir / "test_h36m_body3d.npz", h36m_dir, h36m_dir / "cameras.pkl", protocol)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sar.data.synthetic.body3d import Synthetic3DConfig, ensure_synthetic_h36m

    cfg = Synthetic3DConfig(actions=("Directions", "Greeting"), num_cameras=1, train_frames=2, test_frames=2)
    return ensure_synthetic_h36m(cfg, tmp_path_factory.mktemp("h36m_synth"), num_workers=1)


def test_parse_image_name() -> None:
    info = parse_image_name("S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg")
    assert info == {"subject": "S1", "trial": "Directions_1", "action": "Directions", "camera": "54138969", "frame": 1}
    assert parse_image_name("S11_Sitting Down 1.60457274_000065.jpg")["trial"] == "Sitting_Down_1"
    with pytest.raises(ValueError, match="does not follow"):
        parse_image_name("frame_001.jpg")


def test_reader_on_the_real_sample(h36m_dir: Path) -> None:
    records = _real(h36m_dir)
    assert [(r["subject"], r["action"], r["frame"]) for r in records] == [
        ("S1", "Directions", 1), ("S5", "SittingDown", 2061), ("S7", "Greeting", 396), ("S8", "WalkDog", 26)]
    for r in records:
        assert Path(r["image_path"]).is_file() and r["joints_cam"].shape == (17, 3)
        assert 4000 < r["joints_cam"][0, 2] < 7000  # mm
        # 2D targets: the pinhole projection of the 3D joints with the camera file's intrinsics; the file's parts
        # (with lens distortion) are within 3 px of it
        np.testing.assert_allclose(project(r["joints_cam"], r["f"], r["c"]), r["keypoints"], atol=1e-9)
        assert np.abs(r["part"] - r["keypoints"]).max() < 3.0
        x, y, w, h = r["bbox"]
        assert w == h and (r["keypoints"] >= [x, y]).all() and (r["keypoints"] <= [x + w, y + h]).all()


def test_protocol_on_the_real_sample(h36m_dir: Path) -> None:
    train = H36MProtocol.from_mapping(PROTOCOL, "train")
    assert len(_real(h36m_dir, train)) == 4  # frames 1, 26, 396, 2061 are all every-5th frames of training subjects
    assert _real(h36m_dir, H36MProtocol.from_mapping(PROTOCOL, "test")) == []  # no S9 / S11 in the sample
    every64 = H36MProtocol(("S1", "S5", "S7", "S8"), 64)
    assert [r["frame"] for r in _real(h36m_dir, every64)] == [1]  # (2061 - 1) % 64 = 12, (396 - 1) % 64 = 11


def test_protocol_on_synthetic_fixtures_with_test_subjects(synthetic_root: Path) -> None:
    ann = synthetic_root / "annotation_body3d"
    cams = synthetic_root / "cameras.pkl"
    everything = load_h36m(ann / "h36m_test.npz", synthetic_root, cams)
    assert {r["subject"] for r in everything} == {"S9", "S11"} and {r["frame"] for r in everything} == {1, 65, 2}
    test = load_h36m(ann / "h36m_test.npz", synthetic_root, cams, H36MProtocol.from_mapping(PROTOCOL, "test"))
    # 2 subjects x 2 actions x 2 protocol frames, minus S9_Greeting (RLE's excluded sequence); frame 2 dropped
    assert len(test) == 6 and {r["frame"] for r in test} == {1, 65}
    assert ("S9", "Greeting") not in {(r["subject"], r["action"]) for r in test}
    train = load_h36m(ann / "h36m_train.npz", synthetic_root, cams, H36MProtocol.from_mapping(PROTOCOL, "train"))
    assert len(train) == 5 * 2 * 2 and {r["frame"] for r in train} == {1, 6}
    assert not load_h36m(ann / "h36m_train.npz", synthetic_root, cams, H36MProtocol.from_mapping(PROTOCOL, "test"))


def test_bad_input_names_the_file_and_record(h36m_dir: Path, tmp_path: Path) -> None:
    data = dict(np.load(h36m_dir / "test_h36m_body3d.npz"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{k: v for k, v in data.items() if k != "S"})
    with pytest.raises(ValueError, match=r"bad\.npz: missing keys \['S'\]"):
        load_h36m(bad, h36m_dir, h36m_dir / "cameras.pkl")
    data["S"] = data["S"].copy()
    data["S"][2, 5, 0] = np.nan
    np.savez(bad, **data)
    with pytest.raises(ValueError, match=r"bad\.npz: record #2 \(S7/S7_Greeting.*non-finite"):
        load_h36m(bad, h36m_dir, h36m_dir / "cameras.pkl")
    import pickle

    cams = tmp_path / "cams.pkl"
    cams.write_bytes(pickle.dumps({("S1", "54138969"): {"f": [1.0, 1.0], "c": [0.0, 0.0]}}))
    with pytest.raises(ValueError, match=r"record #1 \(S5/.*camera \(S5, 54138969\) is not in .*cams\.pkl"):
        load_h36m(h36m_dir / "test_h36m_body3d.npz", h36m_dir, cams)


def test_mpii_joints_onto_h36m(shared_data: Path) -> None:
    mpii = np.arange(16 * 2, dtype=float).reshape(16, 2)
    kp, vis = map_aux_joints(mpii, np.ones(16), "mpii")
    assert (kp[0] == mpii[6]).all() and (kp[3] == mpii[0]).all() and (kp[10] == mpii[9]).all()  # pelvis, r_foot, head
    assert (kp[13] == mpii[15]).all() and (kp[16] == mpii[10]).all()  # l_wrist, r_wrist
    assert vis[7] == vis[9] == 0 and vis.sum() == 15  # spine and neck_base: no MPII joint
    dm = Pose3DDataModule({"name": "t", "format": "h36m", "root": None, "train_ann": "", "val_ann": "", "images": "", "cameras": "",
                           "protocol": PROTOCOL, "aux_ratio": 0.5, "batch_size": 1, "val_batch_size": 1,
                           "num_workers": 0, "aux": {"name": "mpii", "format": "mpii", "root": str(shared_data / "mpii"),
                                                     "ann": "test_mpii.json", "images": "."}}, SPEC, None, {})
    people = dm.aux_records()
    assert len(people) == 5 and all(p["joints_cam"] is None and p["visible"][7] == 0 for p in people)
    coco = np.arange(17 * 2, dtype=float).reshape(17, 2)
    kp, vis = map_aux_joints(coco, np.ones(17), "coco")  # RLE's s_coco_2_hm36_jt: no pelvis, spine, thorax, head
    assert (kp[1] == coco[12]).all() and (kp[9] == coco[0]).all() and vis[[0, 7, 8, 10]].sum() == 0 and vis.sum() == 13
    dm.cfg["aux"] = {"name": "coco", "format": "coco", "root": str(shared_data / "coco"), "ann": "test_coco.json",
                     "images": "."}
    assert len(dm.aux_records()) == 12  # the sample's people with keypoints


def _batch(records: list[dict], codec, train: bool = False, aug=None) -> dict:
    ds = Pose3DDataset(records, SPEC, codec, train=train, aug=aug)
    rng = np.random.default_rng(0) if train else None
    return default_collate([ds.get_sample(i, rng) for i in range(len(records))])


def _outputs_for(codec, uvd: torch.Tensor) -> dict[str, torch.Tensor]:
    """Head outputs that decode to ``uvd`` exactly (SAR: the selector peaks on the cell of each joint)."""
    if not isinstance(codec, SAR3DCodec):
        return {"coords": uvd, "sigma": torch.full_like(uvd, 0.1)}
    b, k, _ = uvd.shape
    w, h = codec.heatmap_size
    norm = uvd[..., :2] + 0.5
    col = (norm[..., 0] * w).floor().clamp(0, w - 1).long()
    row = (norm[..., 1] * h).floor().clamp(0, h - 1).long()
    logits = torch.full((b, k, h * w), -10.0)
    logits.scatter_(2, (row * w + col)[..., None], 10.0)
    grid = torch.stack([col / w, row / h], dim=-1)
    offsets = torch.zeros(b, k, 2, h * w)
    offsets.scatter_(3, (row * w + col)[..., None, None].expand(b, k, 2, 1), (grid - norm)[..., None])
    depth = uvd[..., 2:3].expand(b, k, h * w).contiguous()
    return {"logits": logits.reshape(b, k, h, w), "offsets": offsets.reshape(b, k, 2, h, w),
            "depth": depth.reshape(b, k, h, w)}


@pytest.mark.parametrize("codec_cls", [SAR3DCodec, RLE3DCodec, Regression3DCodec])
def test_ground_truth_through_encode_decode_is_exact(codec_cls, h36m_dir: Path, synthetic_root: Path) -> None:
    codec = codec_cls(input_size=(256, 256), heatmap_size=(64, 64))
    synth = load_h36m(synthetic_root / "annotation_body3d" / "h36m_test.npz", synthetic_root,
                      synthetic_root / "cameras.pkl")
    for records in (_real(h36m_dir), synth):
        batch = _batch(records, codec)
        targets = batch["targets"]
        assert (targets["keypoint_weights"] == 1).all() and (targets["depth_weights"] == 1).all()
        uvd, _ = codec.decode(_outputs_for(codec, targets["uvd"]))
        pred = camera_joints(codec, uvd, batch["meta"])
        gt = batch["meta"]["joints_cam"].numpy()
        assert mpjpe(pred, gt) < 1.0  # mm
        flipped = uvd[:, SPEC.flip_indices].clone()
        flipped[..., 0] = -flipped[..., 0] - 1.0 / 256
        sym = codec.decode_flip(_outputs_for(codec, targets["uvd"]), _outputs_for(codec, flipped),
                                SPEC.flip_indices)[0]
        torch.testing.assert_close(sym, uvd, atol=1e-5, rtol=0)


def test_targets_rle_frame_weights_and_flip(h36m_dir: Path) -> None:
    codec = Regression3DCodec(input_size=(256, 256), heatmap_size=(64, 64))
    out = codec.encode(np.array([[128.0, 64.0], [300.0, 10.0], [0.0, 0.0]]), np.array([1, 1, 1]),
                       np.array([0.0, 400.0, 1200.0]))
    np.testing.assert_allclose(out["uvd"][0], [0.0, -0.25, 0.0])
    assert out["keypoint_weights"].tolist() == [1, 0, 0]  # u > 0.5; d = 0.6 > 0.5
    assert codec.encode(np.zeros((1, 2)), np.ones(1))["depth_weights"].tolist() == [0]  # 2D-only: no depth term
    records = _real(h36m_dir)[:1]
    plain = _batch(records, codec)["targets"]["uvd"][0]
    aug = {"flip_prob": 1.0, "scale_factor": 0.0, "rotation": 0.0, "rotation_prob": 0.0, "color_factor": 0.0}
    flip = _batch(records, codec, train=True, aug=aug)["targets"]["uvd"][0]
    idx = list(SPEC.flip_indices)
    torch.testing.assert_close(flip[idx, 0], -plain[:, 0] - 1.0 / 256, atol=1e-4, rtol=0)
    torch.testing.assert_close(flip[idx, 1:], plain[:, 1:], atol=1e-4, rtol=0)
