"""Image decoding (sar.data.decode): the same pixels as OpenCV at full size, DCT-reduced decoding that moves no
pixel and changes a crop only by interpolation noise, and the top-down dataset using it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sar.codecs import build_codec
from sar.data import decode as D
from sar.data import transforms as T
from sar.data.formats.coco import load_coco_instances
from sar.data.spec import load_spec
from sar.data.topdown import TopDownDataset

REDUCED_FLAG = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _jpegs(shared_data: Path) -> list[Path]:
    files = sorted(shared_data.glob("*/*.jpg"))
    assert files, f"no JPEG samples under {shared_data}"
    return files[:8]


def test_full_decode_is_opencvs_pixels(shared_data: Path, tmp_path: Path) -> None:
    files = _jpegs(shared_data)
    gray = tmp_path / "gray.jpg"  # a one-channel JPEG comes back as three equal BGR channels, as from OpenCV
    cv2.imwrite(str(gray), np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8))
    png = tmp_path / "x.png"  # not a JPEG: OpenCV decodes it
    cv2.imwrite(str(png), np.random.default_rng(1).integers(0, 255, (20, 24, 3), dtype=np.uint8))
    for path in [*files, gray, png]:
        expected = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        got = D.read_image(str(path))
        assert got.shape == expected.shape and got.dtype == np.uint8
        assert np.array_equal(got, expected), path


def test_reduction_choice() -> None:
    assert [D.reduction_for(f) for f in (0.5, 1.0, 1.99, 2.0, 3.9, 4.0, 7.9, 8.0, 40.0)] == [1, 1, 1, 2, 2, 4, 4, 8, 8]
    assert D.reduction_for(40.0, max_factor=2) == 2 and D.reduction_for(40.0, max_factor=1) == 1
    # the centre of reduced pixel i is full-size pixel r i + (r - 1) / 2: pixel 0 of a 1/4 decode covers 0..3
    assert np.allclose(T.transform_points(np.array([[0.0, 0.0], [1.0, 2.0]]), D.reduction_matrix(4)),
                       [[1.5, 1.5], [5.5, 9.5]])


def test_reduced_decode_is_libjpegs_dct_scaling_and_size_comes_from_the_header(shared_data: Path) -> None:
    for path in _jpegs(shared_data)[:4]:
        full = D.read_image(str(path))
        encoded = D.EncodedImage(str(path), 5)
        assert encoded.size == (full.shape[1], full.shape[0])
        for r in (2, 4, 8):
            pixels, used = D.EncodedImage(str(path)).decode(float(r))
            assert used == r
            assert pixels.shape[:2] == (-(-full.shape[0] // r), -(-full.shape[1] // r))
            assert np.array_equal(pixels, cv2.imdecode(np.fromfile(path, np.uint8), REDUCED_FLAG[r]))
        assert D.EncodedImage(str(path)).decode(1.9)[1] == 1


def test_png_is_never_reduced(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    cv2.imwrite(str(png), np.zeros((64, 48, 3), np.uint8))
    encoded = D.EncodedImage(str(png))
    assert encoded.size == (48, 64)
    pixels, used = encoded.decode(8.0)
    assert used == 1 and pixels.shape == (64, 48, 3)


def test_reduced_crop_is_aligned_and_no_further_from_the_ideal_crop(shared_data: Path) -> None:
    """The ideal crop of an image shrunk by f is the image low-passed at that scale, then sampled; bilinear
    sampling of the full image aliases (picks 4 of f^2 pixels), the DCT-reduced decode averages. The reduced
    path's crop must be no further from the ideal (a Gaussian pre-filter of the full image) than today's full-size
    path, and not shifted: moving it by half a pixel in any direction only makes it worse."""
    path = _jpegs(shared_data)[0]
    full = D.read_image(str(path))
    size = (96, 128)
    for r in (2, 4, 8):
        reduced, used = D.EncodedImage(str(path)).decode(float(r))
        assert used == r
        matrix = T.get_affine(np.array([300.0, 200.0]), np.array([size[0] * r, size[1] * r], float), 10.0, size)
        ideal = T.warp(cv2.GaussianBlur(full, (0, 0), 0.7 * r), matrix, size).astype(float)
        from_full = T.warp(full, matrix, size)

        to_reduced = T.compose_affine(matrix, D.reduction_matrix(r))

        def reduced_crop(dx: float = 0.0, dy: float = 0.0, pixels=reduced, m=to_reduced) -> np.ndarray:
            return T.warp(pixels, T.compose_affine(np.array([[1.0, 0, dx], [0, 1.0, dy]]), m), size)

        err_reduced = np.abs(reduced_crop() - ideal).mean()
        err_full = np.abs(from_full - ideal).mean()
        assert err_reduced <= err_full, (r, err_reduced, err_full)
        assert err_reduced < 5.0  # grey levels (0..255)
        for dx, dy in [(-0.5, 0), (0.5, 0), (0, -0.5), (0, 0.5)]:
            assert np.abs(reduced_crop(dx, dy) - ideal).mean() > err_reduced


@pytest.mark.parametrize("train", [False, True])
def test_dataset_crop_with_reduction_matches_full_decode_geometry(shared_data: Path, train: bool) -> None:
    """The same samples with and without reduced decoding: identical targets and inverse warps (the geometry
    stays in full-size pixels), crops that differ by interpolation noise only where a reduction applied, and
    bit-identical crops where none did."""
    spec = load_spec("coco")
    records = load_coco_instances(shared_data / "coco" / "test_coco.json", shared_data / "coco", spec)
    codec = build_codec({"_target_": "sar.codecs.heatmap.MSRAHeatmapCodec", "input_size": [48, 64],
                         "heatmap_size": [12, 16], "sigma": 2.0})
    reduced = TopDownDataset(records, spec, codec, train=train, seed=3, max_decode_reduction=8)
    full = TopDownDataset(records, spec, codec, train=train, seed=3, max_decode_reduction=1)
    seen_reduced = 0
    for i in range(len(records)):
        a, b = reduced[(i, 1)], full[(i, 1)]
        assert np.array_equal(a["meta"]["inv_warp"], b["meta"]["inv_warp"])
        for key in a["targets"]:
            assert np.array_equal(a["targets"][key], b["targets"][key])
        # the crop's width in image pixels over its width in crop pixels: the ratio the reduction is chosen by
        ratio = float(np.linalg.norm(b["meta"]["inv_warp"].numpy()[:, 0]))
        diff = (a["image"].int() - b["image"].int()).abs().float()
        if D.reduction_for(ratio) == 1:
            assert diff.max() == 0
        else:
            seen_reduced += 1
            # grey levels: the mean change stays inside the aliasing of the full-size path at these ratios
            # (bounded against the ideal crop above)
            assert diff.mean() < 25.0, (i, ratio, float(diff.mean()))
    assert seen_reduced >= len(records) // 2


def _variant_jpegs(tmp_path: Path) -> list[Path]:
    """Sequential JPEGs of every chroma layout, one with restart markers, one progressive, one greyscale."""
    rng = np.random.default_rng(7)
    base = cv2.GaussianBlur(rng.integers(0, 255, (203, 157, 3), dtype=np.uint8), (0, 0), 2.0)
    files = []
    for name, params in [
        ("444", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        ("422", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
        ("420", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]),
        ("rst", [cv2.IMWRITE_JPEG_RST_INTERVAL, 3]),
        ("progressive", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ]:
        files.append(tmp_path / f"{name}.jpg")
        assert cv2.imwrite(str(files[-1]), base, params)
    files.append(tmp_path / "gray.jpg")
    cv2.imwrite(str(files[-1]), base[..., 0])
    return files


def test_jpeg_frame_reads_the_frame_header(tmp_path: Path) -> None:
    files = {p.stem: np.fromfile(p, np.uint8) for p in _variant_jpegs(tmp_path)}
    for name, mcu in [("444", 8), ("422", 8), ("420", 16), ("rst", 16), ("gray", 8)]:
        offset, height, got_mcu = D.jpeg_frame(files[name])
        assert (height, got_mcu) == (203, mcu), name
        assert (int(files[name][offset]) << 8) | int(files[name][offset + 1]) == 203
    assert D.jpeg_frame(files["progressive"]) is None  # every scan covers the whole image
    assert D.jpeg_frame(np.frombuffer(b"\x89PNG\r\n\x1a\n0000", np.uint8)) is None


def test_rows_for_warp_by_hand() -> None:
    # a 10x shrink-free shift: output row 19 reads image row 119 (+1 bilinear, +1 fixed point) -> 122 rows
    shift = np.array([[1.0, 0.0, -30.0], [0.0, 1.0, -100.0]])
    assert D.rows_for_warp(T.invert_affine(shift), (40, 20)) == 122
    # the same on the 1/4 decode: full row 119 is reduced row (119 - 1.5) / 4 = 29.375 -> 29 + 3 = 32 reduced rows
    assert D.rows_for_warp(T.invert_affine(shift), (40, 20), 4) == 128
    # a quarter turn: the crop's right column becomes the lowest image row
    turn = T.get_affine(np.array([50.0, 50.0]), np.array([40.0, 40.0]), 90.0, (40, 40))
    corners = T.transform_points(np.array([[0.0, 0.0], [39.0, 0.0], [0.0, 39.0], [39.0, 39.0]]), T.invert_affine(turn))
    assert D.rows_for_warp(T.invert_affine(turn), (40, 40)) == int(np.floor(corners[:, 1].max())) + 3


def test_rows_only_decode_gives_the_same_crops_to_the_bit(shared_data: Path, tmp_path: Path) -> None:
    """Random crops (scale, rotation, flip, every DCT reduction) of the sample images and of every chroma layout:
    the rows-only decode is shorter where the crop ends above the image's bottom, and its crop equals the full
    decode's crop exactly."""
    rng = np.random.default_rng(11)
    size = (48, 64)
    shortened = 0
    for path in [*_jpegs(shared_data), *_variant_jpegs(tmp_path)]:
        encoded = D.EncodedImage(str(path))
        width, height = encoded.size
        for _ in range(12):
            r_max = int(rng.choice([1, 2, 4, 8]))
            box = rng.uniform(0.1, 0.9) * np.array([width, height], float)
            center = rng.uniform([0.0, 0.0], [width, height * 0.8])
            matrix = T.get_affine(center, box, float(rng.uniform(-40, 40)), size)
            if rng.random() < 0.5:
                matrix = T.compose_affine(matrix, T.flip_matrix(width))
            ratio = float(box[0]) / size[0]
            inverse = T.invert_affine(matrix)
            image, r = encoded.decode_for_warp(inverse, size, ratio, r_max)
            whole, r_whole = encoded.decode_for_warp(inverse, size, ratio, r_max, rows_only=False)
            assert r == r_whole and image.shape[1] == whole.shape[1]
            shortened += image.shape[0] < whole.shape[0]
            to_pixels = matrix if r == 1 else T.compose_affine(matrix, D.reduction_matrix(r))
            assert np.array_equal(T.warp(image, to_pixels, size), T.warp(whole, to_pixels, size)), (path, r)
            assert np.array_equal(image[:-1], whole[: image.shape[0] - 1]), path  # the rows kept are exact too
    assert shortened >= 40


def test_dataset_rows_only_decoding_changes_no_sample(shared_data: Path) -> None:
    spec = load_spec("coco")
    records = load_coco_instances(shared_data / "coco" / "test_coco.json", shared_data / "coco", spec)
    codec = build_codec({"_target_": "sar.codecs.heatmap.MSRAHeatmapCodec", "input_size": [48, 64],
                         "heatmap_size": [12, 16], "sigma": 2.0})
    fast = TopDownDataset(records, spec, codec, train=True, seed=5)
    slow = TopDownDataset(records, spec, codec, train=True, seed=5, decode_rows_only=False)
    for i in range(len(records)):
        a, b = fast[(i, 2)], slow[(i, 2)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["meta"]["inv_warp"], b["meta"]["inv_warp"])


class _NoTargets:
    """A multi-person codec stand-in (the samples' pixels are what is compared)."""

    input_size = (128, 128)
    heatmap_size = (32, 32)

    def encode(self, keypoints, visible, areas, mask):
        return {"mask": mask}


def test_bottomup_and_pose3d_samples_are_unchanged_by_rows_only_decoding(shared_data: Path) -> None:
    """The whole-image (bottom-up) and the Human3.6M loaders decode only the rows their warp reads: augmented and
    plain samples are the same to the bit as with every row decoded."""
    from sar.codecs.pose3d import Regression3DCodec
    from sar.data.bottomup import BottomUpDataset
    from sar.data.formats.coco import load_coco_people
    from sar.data.formats.h36m import load_h36m
    from sar.data.pose3d import Pose3DDataset

    coco = load_coco_people(shared_data / "coco" / "test_coco.json", shared_data / "coco", load_spec("coco"))
    aug = {"scale_range": [1.2, 1.5], "rotation": 30.0, "translation": 0.2}  # zoomed in: rows below are skipped
    h36m_dir = shared_data / "h36m"
    h36m = load_h36m(h36m_dir / "test_h36m_body3d.npz", h36m_dir, h36m_dir / "cameras.pkl")
    codec3d = Regression3DCodec(input_size=(256, 256), heatmap_size=(64, 64))
    for train in (False, True):
        pairs = [
            (BottomUpDataset(coco, load_spec("coco"), _NoTargets(), train=train, aug=aug, seed=1),
             BottomUpDataset(coco, load_spec("coco"), _NoTargets(), train=train, aug=aug, seed=1,
                             decode_rows_only=False)),
            (Pose3DDataset(h36m, load_spec("h36m"), codec3d, train=train, seed=1),
             Pose3DDataset(h36m, load_spec("h36m"), codec3d, train=train, seed=1, decode_rows_only=False)),
        ]
        for fast, slow in pairs:
            for i in range(len(fast)):
                key = (i, 3) if train else i
                assert torch.equal(fast[key]["image"], slow[key]["image"]), (type(fast).__name__, i, train)
