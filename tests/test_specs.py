"""Keypoint specs: packaged YAMLs equal the dataset metainfo facts; flips are derived and validated."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sar.data.spec import (
    KeypointSpec,
    available_specs,
    derive_flip_indices,
    load_spec,
    mirror_name,
    spec_from_dict,
)

DATASETS = ("coco", "mpii", "crowdpose", "ochuman", "coco_wholebody", "h36m")
REPO = Path(__file__).resolve().parents[1]


def _metainfo(shared_data: Path, name: str) -> dict[str, Any]:
    return json.loads((shared_data / "metainfo" / f"{name}.json").read_text())


def test_all_specs_packaged() -> None:
    assert set(DATASETS) <= set(available_specs())


@pytest.mark.parametrize("name", DATASETS)
def test_spec_matches_metainfo(name: str, shared_data: Path) -> None:
    meta = _metainfo(shared_data, name)
    spec = load_spec(name)
    assert isinstance(spec, KeypointSpec)
    assert spec.name == name
    assert spec.num_keypoints == meta["num_keypoints"] == len(spec.keypoint_names)
    assert list(spec.keypoint_names) == meta["keypoint_names"]
    assert [list(link) for link in spec.skeleton] == meta["skeleton_links"]
    if meta["sigmas"] is None:
        assert spec.sigmas is None
    else:
        assert spec.sigmas is not None and spec.sigmas.dtype == np.float64
        np.testing.assert_allclose(spec.sigmas, meta["sigmas"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(spec.joint_weights, meta["joint_weights"], rtol=1e-6)
    assert list(spec.upper_body_ids) == meta["upper_body_ids"]
    assert list(spec.lower_body_ids) == meta["lower_body_ids"]
    # Flip pairs are derived from names (+ flip_pairs_extra), never transcribed, yet equal the metainfo.
    assert sorted(spec.flip_pairs) == sorted(tuple(sorted(p)) for p in meta["flip_pairs"])
    assert spec.colors.shape == (len(spec.skeleton), 3) and spec.colors.dtype == np.uint8


@pytest.mark.parametrize("name", DATASETS)
def test_flip_is_involution(name: str) -> None:
    spec = load_spec(name)
    flip = spec.flip_indices
    assert sorted(flip) == list(range(spec.num_keypoints))
    assert all(flip[flip[k]] == k for k in range(spec.num_keypoints))
    assert spec.flip_pairs == tuple((k, j) for k, j in enumerate(flip) if k < j)
    for a, b in spec.flip_pairs:  # a sided name's partner is its mirrored name
        mirrored = mirror_name(spec.keypoint_names[a])
        assert mirrored is None or mirrored == spec.keypoint_names[b]


def test_parts() -> None:
    assert load_spec("coco").parts == {"body": tuple(range(17))}
    parts = load_spec("coco_wholebody").parts
    assert parts == {
        "body": tuple(range(17)),
        "foot": tuple(range(17, 23)),
        "face": tuple(range(23, 91)),
        "left_hand": tuple(range(91, 112)),
        "right_hand": tuple(range(112, 133)),
    }


def test_spec_is_immutable_and_round_trips() -> None:
    spec = load_spec("coco_wholebody")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        spec.joint_weights[0] = 3.0
    assert spec_from_dict(spec.to_dict()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert load_spec("coco") != load_spec("ochuman")  # same keypoints, different name
    assert len({spec, load_spec("coco_wholebody")}) == 1


def test_load_spec_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(load_spec("mpii").to_dict()))
    assert load_spec(str(path)) == load_spec("mpii")
    assert load_spec(path) == load_spec("mpii")


def test_unknown_spec_name() -> None:
    with pytest.raises(ValueError, match="unknown keypoint spec 'nope'"):
        load_spec("nope")


@pytest.mark.parametrize(
    ("name", "mirrored"),
    [
        ("left_eye", "right_eye"),
        ("right_heel", "left_heel"),
        ("l_hip", "r_hip"),
        ("r_ankle", "l_ankle"),
        ("hand_left_tip", "hand_right_tip"),
        ("elbow_l", "elbow_r"),
        ("Left-Eye", "Right-Eye"),
        ("LEFT_KNEE", "RIGHT_KNEE"),
        ("leftHand", "rightHand"),
        ("left_hand_root", "right_hand_root"),
        ("nose", None),
        ("face-12", None),
        ("lower_lip", None),
        ("upper_neck", None),
        ("root", None),
    ],
)
def test_mirror_name(name: str, mirrored: str | None) -> None:
    assert mirror_name(name) == mirrored


def test_mirror_name_ambiguous() -> None:
    with pytest.raises(ValueError, match="more than one side"):
        mirror_name("left_to_right")


def test_derive_flip_indices() -> None:
    names = ["nose", "l_eye", "r_eye", "c-0", "c-1", "c-2"]
    assert derive_flip_indices(names, [["c-0", "c-2"]]) == (0, 2, 1, 5, 4, 3)
    with pytest.raises(ValueError, match="mirror 'r_ear'"):
        derive_flip_indices(["l_ear", "nose"])
    with pytest.raises(ValueError, match="carries a side"):
        derive_flip_indices(names, [["l_eye", "c-1"]])
    with pytest.raises(ValueError, match="more than once"):
        derive_flip_indices(names, [["c-0", "c-1"], ["c-1", "c-2"]])


def _base_spec() -> dict[str, Any]:
    return {
        "name": "tiny",
        "keypoint_names": ["nose", "left_eye", "right_eye"],
        "skeleton": [[0, 1], [0, 2]],
        "sigmas": [0.1, 0.1, 0.1],
        "joint_weights": [1.0, 1.0, 1.0],
        "colors": [[0, 0, 255], [255, 0, 0]],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sigmas": [0.1, 0.1]}, "sigmas has 2 entries"),
        ({"joint_weights": [1.0]}, "joint_weights has 1 entries"),
        ({"skeleton": [[0, 3]], "colors": [[0, 0, 0]]}, "out of range"),
        ({"keypoint_names": ["nose", "left_eye", "right_eyes"]}, "is not in the spec"),
        ({"keypoint_names": ["nose", "left_eye", "left_eye"]}, "duplicates"),
        ({"flip_pairs": [[1, 2]]}, "derived"),
        ({"flip_pairs_extra": [["nose", "nose"]]}, "with itself"),
        ({"colors": [[0, 0, 0]]}, "colors has 1 entries"),
        ({"colors": [[0, 0, 300], [0, 0, 0]]}, r"\[0, 255\]"),
        ({"upper_body_ids": [0, 7]}, "out of range"),
        ({"parts": {"body": [0, 1, 1]}}, "duplicate"),
        ({"sigmoid": 1}, "unknown fields"),
    ],
)
def test_malformed_spec_names_file(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data = {**_base_spec(), **change}
    path = tmp_path / "broken_spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_malformed_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "not_yaml.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML") as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_constructor_validates() -> None:
    spec = load_spec("coco")
    with pytest.raises(ValueError, match="involution"):
        KeypointSpec(
            name="bad",
            keypoint_names=("a", "b", "c"),
            flip_indices=(1, 2, 0),
            flip_pairs=(),
            skeleton=(),
            sigmas=None,
            joint_weights=np.ones(3),
        )
    assert spec.num_keypoints == 17


def test_generated_specs_up_to_date(shared_data: Path) -> None:
    """The packaged YAMLs are exactly what scripts/make_specs.py generates from the metainfo."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_specs.py"),
            "--check",
            "--metainfo",
            str(shared_data / "metainfo"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
