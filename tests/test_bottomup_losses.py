"""Bottom-up losses (sar.models.losses_bottomup) against hand-computed values on 4x4 maps, the loss mask, empty
images; the bottom-up heads (shapes, init) and the shipped head configs (conf/heads/bottomup/*.yaml)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from sar.codecs import build_codec
from sar.codecs.bottomup import AECodec, SARAECodec, SARCenterCodec
from sar.models.heads.bottomup import AEHead, DEKRHead, SARAEHead, SARCenterHead
from sar.models.heads.sar import FOCAL_PRIOR_BIAS
from sar.models.losses import build_loss
from sar.models.losses_bottomup import (
    AELoss,
    DEKRLoss,
    SARAELoss,
    SARCenterLoss,
    ae_pull_push,
    local_offset_loss,
    masked_focal_loss,
    masked_mse_loss,
)
from sar.utils.config import CONF_DIR
from sar.utils.instantiate import build

LOG2 = math.log(2.0)


def _batch(targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v)[None] for k, v in targets.items()}


def _floor(x: float) -> float:
    """``-log(exp(-x) + 1e-6)``: the SAR loss when all the weight sits on a cell at kernel exponent ``x``."""
    return -math.log(math.exp(-x) + 1e-6)


# One person, K = 2, input 16x16, map 4x4 (stride 4): keypoints (4, 4) and (8, 12) px -> normalised (0.25, 0.25)
# and (0.5, 0.75); centre (6, 8) px -> cell (2, 2); area 64 -> person scale sqrt(64 / 256) = 0.5.
KP = np.array([[[4.0, 4.0], [8.0, 12.0]]])
VIS = np.ones((1, 2))
AREA = np.array([64.0])


def _centre_targets(mask: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    codec = SARCenterCodec((16, 16), (4, 4), max_people=2)
    t = _batch(codec.encode(KP, VIS, AREA, mask))
    assert int(t["center_cells"][0, 0]) == 10 and t["scale"][0, 0].item() == pytest.approx(0.5)
    return t


def _centre_outputs(hot: tuple[int, int] | None, k: int = 2) -> dict[str, torch.Tensor]:
    """Centre logits +30 at cell ``hot`` (x, y) and -30 elsewhere (``None``: all 0), zero offsets."""
    logits = torch.zeros(1, 1, 4, 4)
    if hot is not None:
        logits.fill_(-30.0)
        logits[0, 0, hot[1], hot[0]] = 30.0
    return {"center_logits": logits.requires_grad_(), "offsets": torch.zeros(1, k, 2, 4, 4, requires_grad=True)}


def _pose_l1(cx: int, cy: int) -> list[float]:
    """L1 (normalised) between the grid point of cell (cx, cy) and each keypoint (zero offsets)."""
    p = np.array([cx / 4, cy / 4])
    return [float(np.abs(p - g).sum()) for g in ([0.25, 0.25], [0.5, 0.75])]


# ---------------------------------------------------------------------------------------------------------------
# sar_center
# ---------------------------------------------------------------------------------------------------------------
def test_sar_center_person_kernel_single_cell() -> None:
    """All the weight on cell (1, 1): d = mean(0, 0.75) = 0.375, lambda / s = 12.5 / 0.5 = 25 -> exponent 9.375."""
    loss = SARCenterLoss(aux_weight=0.0)(_centre_outputs((1, 1)), _centre_targets())
    assert loss["loss_reg"].item() == pytest.approx(_floor(9.375), rel=1e-5)
    img = SARCenterLoss(kernel="image", aux_weight=0.0)(_centre_outputs((1, 1)), _centre_targets())
    assert img["loss_reg"].item() == pytest.approx(_floor(16 * 0.375), rel=1e-5)  # lambda 16, s = 1
    prod = SARCenterLoss(pose_kernel="per_keypoint", aux_weight=0.0)(_centre_outputs((1, 1)), _centre_targets())
    assert prod["loss_reg"].item() == pytest.approx(_floor(25 * 0.75), rel=1e-5)  # sum instead of mean


def test_sar_center_uniform_weights_and_mask() -> None:
    """Uniform selector: loss = -log(mean_Omega exp(-25 d_t) + 1e-6); masked cells leave Omega."""
    r = {(x, y): math.exp(-25 * np.mean(_pose_l1(x, y))) for x in range(4) for y in range(4)}
    loss = SARCenterLoss(aux_weight=0.0)(_centre_outputs(None), _centre_targets())
    assert loss["loss_reg"].item() == pytest.approx(-math.log(np.mean(list(r.values())) + 1e-6), rel=1e-5)
    mask = np.ones((4, 4), dtype=np.float32)
    mask[0, :] = 0  # row y = 0 ignored
    masked = SARCenterLoss(aux_weight=0.0)(_centre_outputs(None), _centre_targets(mask))
    kept = [v for (x, y), v in r.items() if y > 0]
    assert masked["loss_reg"].item() == pytest.approx(-math.log(np.mean(kept) + 1e-6), rel=1e-5)
    # local: Omega = the region box [x0, y0, x1, y1] = [1, 1, 2, 2] set by hand
    t = _centre_targets()
    t["region"][0, 0] = torch.tensor([1, 1, 2, 2])
    local = SARCenterLoss(normalisation="local", aux_weight=0.0)(_centre_outputs(None), t)
    box = [r[(x, y)] for x in (1, 2) for y in (1, 2)]
    assert local["loss_reg"].item() == pytest.approx(-math.log(np.mean(box) + 1e-6), rel=1e-5)


def test_masked_focal_loss_hand_value() -> None:
    """Logits 0 (p = 0.5), target [[1, 0], [0, 0]]: positive log2 * 0.25, each negative log2 * 0.25,
    num_pos = 1 -> log 2; masking one negative cell removes a quarter of it."""
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert masked_focal_loss(logits, target, torch.ones(1, 2, 2)).item() == pytest.approx(LOG2)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert masked_focal_loss(logits, target, mask).item() == pytest.approx(0.75 * LOG2)


def test_masked_mse_loss_hand_value() -> None:
    """DEKR's weighting: prediction 0 on target [[1, 0.5], [0, 0]]: (1 + 0.25) on the Gaussian cells; prediction
    0.2 on the two background cells adds 2 * 0.1 * 0.04; num_pos (> 0.7) = 1. Masking a background cell drops
    its share."""
    pred = torch.tensor([[[[0.0, 0.0], [0.2, 0.2]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    assert masked_mse_loss(pred, target, torch.ones(1, 2, 2)).item() == pytest.approx(1.25 + 0.008)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert masked_mse_loss(pred, target, mask).item() == pytest.approx(1.25 + 0.004)


def test_sar_center_aux_loss_mse() -> None:
    """``aux_loss: mse``: the head's keypoint maps start at 0 (bias 0, not the focal prior), the centre map at the
    prior; the loss's ``loss_hm`` is :func:`masked_mse_loss` of the raw keypoint maps plus
    :func:`masked_focal_loss` of the centre logits; an unknown name is refused by head, codec and loss."""
    head = SARCenterHead(8, 3, aux_loss="mse").eval()
    out = head(torch.randn(2, 8, 5, 6))
    assert out["heatmap"][:, :3].abs().max().item() < 0.1
    prior = torch.sigmoid(torch.tensor(FOCAL_PRIOR_BIAS)).item()
    assert torch.sigmoid(out["heatmap"][:, 3]).mean().item() == pytest.approx(prior, rel=0.05)
    codec = SARCenterCodec((24, 20), (6, 5), aux_loss="mse")
    kp = np.array([[[4.0, 4.0], [12.0, 9.0], [18.0, 14.0]]])
    t = _batch(codec.encode(kp, np.ones((1, 3)), np.array([100.0])))
    t = {k: v.expand(2, *v.shape[1:]) for k, v in t.items()}
    parts = SARCenterLoss(aux_loss="mse")(out, t)
    hm, target, mask = out["heatmap"], t["heatmap"].float(), t["mask"].float()
    want = masked_mse_loss(hm[:, :3], target[:, :3], mask) + masked_focal_loss(hm[:, 3:], target[:, 3:], mask)
    assert parts["loss_hm"].item() == pytest.approx(want.item())
    assert parts["loss_hm"].item() != pytest.approx(SARCenterLoss()(out, t)["loss_hm"].item(), rel=1e-3)
    for build_it in (lambda: SARCenterHead(8, 3, aux_loss="l2"), lambda: SARCenterCodec((24, 20), (6, 5), aux_loss="l2"),
                     lambda: SARCenterLoss(aux_loss="l2")):
        with pytest.raises(ValueError, match="aux_loss"):
            build_it()


@pytest.mark.parametrize("loss_cls", [SARCenterLoss, SARAELoss, AELoss, DEKRLoss])
def test_empty_image_is_finite_zero(loss_cls: type) -> None:
    """An image without people: person terms 0, total finite, backward works."""
    k = 2
    codec = {SARCenterLoss: SARCenterCodec, SARAELoss: SARAECodec, AELoss: AECodec}.get(loss_cls)
    if codec is None:
        from sar.codecs.bottomup import DEKRCodec as codec
    t = _batch(codec((16, 16), (4, 4)).encode(np.zeros((0, k, 2)), np.zeros((0, k)), np.zeros(0)))
    head = {SARCenterLoss: SARCenterHead, SARAELoss: SARAEHead, AELoss: AEHead, DEKRLoss: DEKRHead}[loss_cls]
    out = head(8, k)(torch.randn(1, 8, 4, 4))
    loss = loss_cls()(out, t)
    assert torch.isfinite(loss["total"])
    for key in ("loss_reg", "loss_pull", "loss_push", "loss_offset"):
        if key in loss:
            assert loss[key].item() == 0.0
    loss["total"].backward()


# ---------------------------------------------------------------------------------------------------------------
# sar_ae and the AE pull / push
# ---------------------------------------------------------------------------------------------------------------
def test_ae_pull_push_hand_values() -> None:
    """Person A tags 1 and 3 (mean 2, pull 1), person B tags 5 and 5 (pull 0): pull = 0.5;
    push = 0.5 * 2 exp(-9) / (2 * 1) = 0.5 exp(-9)."""
    tags = torch.zeros(1, 2, 4, 4)
    tags[0, 0, 0, 0], tags[0, 1, 1, 1] = 1.0, 3.0  # person A: kpt 0 at cell 0, kpt 1 at cell 5
    tags[0, 0, 3, 3], tags[0, 1, 2, 2] = 5.0, 5.0  # person B: cells 15 and 10
    cells = torch.tensor([[[0, 5], [15, 10], [0, 0]]])
    valid = torch.tensor([[[True, True], [True, True], [False, False]]])
    pull, push = ae_pull_push(tags, cells, valid)
    assert pull.item() == pytest.approx(0.5)
    assert push.item() == pytest.approx(0.5 * math.exp(-9.0))
    one_pull, one_push = ae_pull_push(tags, cells, torch.tensor([[[True, True], [False, False], [False, False]]]))
    assert one_pull.item() == pytest.approx(1.0) and one_push.item() == 0.0
    t = {"heatmap": torch.zeros(1, 2, 4, 4), "mask": torch.ones(1, 4, 4), "keypoint_cells": cells,
         "keypoint_valid": valid.float(), "person_valid": torch.tensor([[1.0, 1.0, 0.0]])}
    ae = AELoss()({"heatmap": torch.zeros(1, 2, 4, 4), "tags": tags}, t)
    assert ae["total"].item() == pytest.approx(1e-3 * 0.5 + 1e-3 * 0.5 * math.exp(-9.0))


def test_ae_heatmap_mse_and_mask() -> None:
    t = {"heatmap": torch.zeros(1, 1, 4, 4), "mask": torch.ones(1, 4, 4), "keypoint_cells": torch.zeros(1, 1, 1,
         dtype=torch.long), "keypoint_valid": torch.zeros(1, 1, 1), "person_valid": torch.zeros(1, 1)}
    t["heatmap"][0, 0, 1, 1] = 1.0
    pred = {"heatmap": torch.full((1, 1, 4, 4), 0.5), "tags": torch.zeros(1, 1, 4, 4)}
    # one cell (1 - 0.5)^2 and 15 cells 0.5^2: mean = 16 * 0.25 / 16
    assert AELoss()(pred, t)["loss_hm"].item() == pytest.approx(0.25)
    t["mask"][0, 0] = 0  # 4 cells ignored (count as 0 in the mean, as HigherHRNet)
    assert AELoss()(pred, t)["loss_hm"].item() == pytest.approx(12 * 0.25 / 16)


def test_sar_ae_mixture_and_tags() -> None:
    """Keypoint k's selector all on one cell: loss_k = -log(exp(-25 * L1) + 1e-6), mean over the 2 keypoints."""
    codec = SARAECodec((16, 16), (4, 4))
    t = _batch(codec.encode(KP, VIS, AREA))
    np.testing.assert_array_equal(t["keypoint_cells"][0, 0].numpy(), [5, 14])  # cells (1, 1) and (2, 3)
    logits = torch.full((1, 2, 4, 4), -30.0)
    logits[0, 0, 1, 1] = 30.0  # keypoint 0 at its own cell: distance 0
    logits[0, 1, 0, 0] = 30.0  # keypoint 1 at cell (0, 0): L1 = 0.5 + 0.75 = 1.25
    tags = torch.zeros(1, 2, 4, 4)
    tags[0, 0, 1, 1], tags[0, 1, 3, 2] = 1.0, 2.0  # pull = ((1 - 1.5)^2 + (2 - 1.5)^2) / 2 = 0.25
    out = {"logits": logits, "offsets": torch.zeros(1, 2, 2, 4, 4), "tags": tags}
    loss = SARAELoss()(out, t)
    assert loss["loss_reg"].item() == pytest.approx(0.5 * (_floor(0.0) + _floor(25 * 1.25)), rel=1e-5)
    assert loss["loss_pull"].item() == pytest.approx(0.25) and loss["loss_push"].item() == 0.0
    assert loss["total"].item() == pytest.approx(loss["loss_reg"].item() + 0.1 * 0.25, rel=1e-6)
    # keypoint 1 hidden: only keypoint 0 counts
    t1 = _batch(codec.encode(KP, np.array([[1.0, 0.0]]), AREA))
    assert SARAELoss()(out, t1)["loss_reg"].item() == pytest.approx(_floor(0.0), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# DEKR
# ---------------------------------------------------------------------------------------------------------------
def test_dekr_loss_hand_values() -> None:
    """Offsets: one weighted cell, error (1, 0.05) cells: smooth-L1 (beta 1/9) = (1 - 1/18) + 0.5 * 0.05^2 * 9,
    times the weight 1 / sqrt(16) = 0.25, over 2 weighted entries. Heatmap: weight 1 on the target cell,
    0.1 elsewhere."""
    t = {"heatmap": torch.zeros(1, 2, 4, 4), "heatmap_weight": torch.full((1, 2, 4, 4), 0.1),
         "offsets": torch.zeros(1, 1, 2, 4, 4), "offset_weight": torch.zeros(1, 1, 4, 4)}
    t["heatmap"][0, 0, 2, 2] = 1.0
    t["heatmap_weight"][0, 0, 2, 2] = 1.0
    t["offsets"][0, 0, :, 1, 1] = torch.tensor([1.0, 0.05])
    t["offset_weight"][0, 0, 1, 1] = 0.25
    out = {"heatmap": torch.zeros(1, 2, 4, 4), "offsets": torch.zeros(1, 1, 2, 4, 4)}
    loss = DEKRLoss()(out, t)
    expected_off = 0.25 * ((1 - 0.5 / 9) + 0.5 * 0.05**2 * 9) / 2
    assert loss["loss_offset"].item() == pytest.approx(expected_off, rel=1e-5)
    assert loss["loss_hm"].item() == pytest.approx(1.0 / 32)
    assert loss["total"].item() == pytest.approx(1.0 / 32 + 0.03 * expected_off, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Heads and configs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("head_cls", "shapes"), [
    (SARAEHead, {"logits": (2, 3, 5, 6), "offsets": (2, 3, 2, 5, 6), "tags": (2, 3, 5, 6), "heatmap": (2, 3, 5, 6)}),
    (SARCenterHead, {"center_logits": (2, 1, 5, 6), "offsets": (2, 3, 2, 5, 6), "heatmap": (2, 4, 5, 6)}),
    (AEHead, {"heatmap": (2, 3, 5, 6), "tags": (2, 3, 5, 6)}),
    (DEKRHead, {"heatmap": (2, 4, 5, 6), "offsets": (2, 3, 2, 5, 6)}),
])
def test_head_shapes_and_init(head_cls: type, shapes: dict[str, tuple[int, ...]]) -> None:
    head = head_cls(8, 3).eval()
    out = head(torch.randn(2, 8, 5, 6))
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    prior = torch.sigmoid(torch.tensor(FOCAL_PRIOR_BIAS)).item()
    for key in ("logits", "center_logits"):
        if key in out:
            assert torch.sigmoid(out[key]).mean().item() == pytest.approx(prior, rel=0.05)
    if head_cls in (SARAEHead, SARCenterHead):
        assert torch.sigmoid(out["heatmap"]).mean().item() == pytest.approx(prior, rel=0.05)
    assert out["offsets"].abs().max().item() < 0.1 if "offsets" in out else True


def test_sar_center_heatmap_tower() -> None:
    """``heatmap_convs=1``: one 3x3 conv + BN + ReLU (``heatmap_channels`` wide) before the K keypoint maps' 1x1;
    the centre map stays a 1x1 on the features (last channel); both keep the focal prior; without the auxiliary
    branch there is no tower either."""
    head = SARCenterHead(8, 3, heatmap_convs=1, heatmap_channels=4).eval()
    assert (head.heatmap_conv.in_channels, head.heatmap_conv.out_channels) == (4, 3)
    assert (head.centre_heatmap_conv.in_channels, head.centre_heatmap_conv.out_channels) == (8, 1)
    assert isinstance(head.heatmap_tower[0], torch.nn.Conv2d)
    assert head.heatmap_tower[0].kernel_size == (3, 3) and head.heatmap_tower[0].out_channels == 4
    out = head(torch.randn(2, 8, 5, 6))
    assert out["heatmap"].shape == (2, 4, 5, 6)
    prior = torch.sigmoid(torch.tensor(FOCAL_PRIOR_BIAS)).item()
    assert torch.sigmoid(out["heatmap"]).mean().item() == pytest.approx(prior, rel=0.05)
    bare = SARCenterHead(8, 3, with_heatmap=False, heatmap_convs=2)
    assert "heatmap" not in bare(torch.randn(1, 8, 5, 6)) and isinstance(bare.heatmap_tower, torch.nn.Identity)


@pytest.mark.parametrize("name", ["sar_ae", "sar_center", "ae", "dekr"])
def test_head_configs_build(name: str) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "heads" / "bottomup" / f"{name}.yaml"), resolve=True)
    assert yaml.safe_load((CONF_DIR / "head" / f"{name}.yaml").read_text()) == {"name": name}
    codec = build_codec(cfg["codec"], input_size=[64, 64], heatmap_size=[16, 16])
    head = build(cfg["module"], "head.module", in_channels=8, num_keypoints=17)
    loss = build_loss(cfg["loss"])
    kp = np.random.default_rng(0).uniform(4, 60, (3, 17, 2))
    t = {k: torch.as_tensor(np.stack([v, v])) for k, v in codec.encode(kp, np.ones((3, 17)), np.full(3, 900.0),
                                                                       np.ones((16, 16))).items()}
    out = head(torch.randn(2, 8, 16, 16))
    parts = loss(out, t)
    assert torch.isfinite(parts["total"])
    decoded = codec.decode(out, {k: v.flip(-1) for k, v in out.items()}, list(range(17)))
    assert len(decoded) == 2 and all(p.shape[1:] == (17, 3) for p, _ in decoded)


def test_local_offset_loss_hand_value() -> None:
    """K = 2 on the 4x4 map, radius 1 cell: keypoint 0 at map position (1, 1) reaches 5 cells (itself and its 4
    neighbours), keypoint 1 at (2, 3) reaches 4 cells (row 4 is off the map). Zero predictions: the L1 (x + y) is
    0 at the keypoint's own cell and 1 at each neighbour -> (4 + 3) / 9; a prediction equal to the targets gives 0.
    Masking row y = 0 drops one neighbour of keypoint 0 -> 6 / 8."""
    codec = SARCenterCodec((16, 16), (4, 4), max_people=2, local_radius=1.0)
    t = _batch(codec.encode(KP, VIS, AREA))
    assert t["local_weight"].sum().item() == 9
    zero = {"local_offsets": torch.zeros(1, 2, 2, 4, 4)}
    assert local_offset_loss(zero, t).item() == pytest.approx(7 / 9)
    assert local_offset_loss({"local_offsets": t["local_offsets"].clone()}, t).item() == 0.0
    mask = np.ones((4, 4), dtype=np.float32)
    mask[0] = 0
    assert local_offset_loss(zero, _batch(codec.encode(KP, VIS, AREA, mask))).item() == pytest.approx(6 / 8)
    # in the total, weighted; a head with the output but a codec without targets is an error
    out = {**_centre_outputs((1, 1)), **zero}
    parts = SARCenterLoss(aux_weight=0.0, local_weight=2.0)(out, t)
    assert parts["total"].item() == pytest.approx(parts["loss_reg"].item() + 2 * 7 / 9, rel=1e-6)
    with pytest.raises(ValueError, match="local_radius"):
        SARCenterLoss()(out, _centre_targets())
