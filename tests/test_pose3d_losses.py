"""The pose3d losses by hand on tiny inputs: SAR-3D mixture NLL (depth term dropped for 2D-only samples), direct 3D
L1, RLE-3D (3-D flow for 3D samples, 2-D flow for 2D-only ones); empty batches give 0, not NaN."""

from __future__ import annotations

import math

import pytest
import torch

from sar.models.flow import RealNVP
from sar.models.losses_pose3d import L1Coord3DLoss, RLE3DLoss, SAR3DLoss, sar3d_nll


def _targets(uvd, weights, depth_weights):
    return {"uvd": torch.as_tensor(uvd, dtype=torch.float32), "keypoint_weights": torch.as_tensor(weights),
            "depth_weights": torch.as_tensor(depth_weights)}


def test_sar3d_nll_by_hand() -> None:
    # a 1x2 map, one joint: cells at (0, 0) and (0.5, 0) normalised, i.e. (-0.5, -0.5) and (0, -0.5) in RLE's frame
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])  # sigmoid: 0.5 and 0.75 -> w = 0.4, 0.6
    offsets = torch.zeros(1, 1, 2, 1, 2)
    offsets[0, 0, 0, 0, 1] = 0.1                      # cell 2 hypothesis u = -0.1
    depth = torch.tensor([[[[0.2, -0.1]]]])
    target = torch.tensor([[[0.0, -0.4, 0.1]]])
    d1 = 0.5 + 0.1 + 0.1          # |(-0.5) - 0| + |(-0.5) - (-0.4)| + |0.2 - 0.1|
    d2 = 0.1 + 0.1 + 0.2
    expected = -math.log(0.4 * math.exp(-16 * d1) + 0.6 * math.exp(-16 * d2) + 1e-6)
    got = sar3d_nll(logits, offsets, depth, target, torch.ones(1, 1), 16.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    no_depth = -math.log(0.4 * math.exp(-16 * 0.6) + 0.6 * math.exp(-16 * 0.2) + 1e-6)
    assert sar3d_nll(logits, offsets, depth, target, torch.zeros(1, 1), 16.0).item() == pytest.approx(no_depth, rel=1e-5)


def test_sar3d_loss_masks_and_empty_batch() -> None:
    b, k, h, w = 2, 3, 4, 4
    out = {"logits": torch.randn(b, k, h, w, requires_grad=True), "offsets": torch.randn(b, k, 2, h, w) * 0.1,
           "depth": torch.randn(b, k, h, w) * 0.1}
    t = _targets(torch.rand(b, k, 3) - 0.5, [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    loss = SAR3DLoss(aux_weight=0.0)(out, t)
    on = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    nll = sar3d_nll(out["logits"], out["offsets"], out["depth"], t["uvd"], on, 16.0)
    assert loss["total"].item() == pytest.approx((nll[0, 0] + nll[0, 2] + nll[1, 2]).item() / 3, rel=1e-6)
    empty = SAR3DLoss()(out | {"heatmap": torch.zeros(b, k, h, w)}, _targets(torch.zeros(b, k, 3), [[0.0] * 3] * 2,
                                                                          [[0.0] * 3] * 2) | {"heatmap": torch.zeros(b, k, h, w)})
    assert empty["total"].item() == 0.0
    empty["total"].backward()


def test_l1_3d_by_hand() -> None:
    pred = torch.tensor([[[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]])
    t = _targets([[[0.0, 0.0, 0.0], [9.0, 9.0, 9.0]], [[0.1, 0.1, 0.1], [0.0, 0.0, 0.0]]],
                 [[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
    # sample 0 joint 0: 0.1 + 0.2 + 0.3; sample 1 joint 0 (2D only): 0.1 + 0.1; two valid joints
    assert L1Coord3DLoss()({"coords": pred}, t)["total"].item() == pytest.approx(0.8 / 2)
    zero = L1Coord3DLoss()({"coords": pred}, _targets(torch.zeros(2, 2, 3), [[0.0] * 2] * 2, [[0.0] * 2] * 2))
    assert zero["total"].item() == 0.0


def test_rle3d_by_hand_with_both_flows() -> None:
    loss_fn = RLE3DLoss()
    mu_hat = torch.tensor([[[0.1, -0.1, 0.05]], [[0.2, 0.0, 0.3]]])
    sigma = torch.tensor([[[0.2, 0.1, 0.4]], [[0.5, 0.25, 0.1]]])
    gt = torch.tensor([[[0.0, 0.0, 0.0]], [[0.1, 0.1, 0.0]]])
    t = _targets(gt, [[1.0], [1.0]], [[1.0], [0.0]])  # sample 1 is 2D-only
    got = loss_fn({"coords": mu_hat, "sigma": sigma}, t)
    eps = (mu_hat - gt) / sigma
    with torch.no_grad():
        log3 = loss_fn.flow3d.log_prob(eps[0].reshape(1, 3)).item()
        log2 = loss_fn.flow2d.log_prob(eps[1, :, :2].reshape(1, 2)).item()
    total = 0.0
    for c in range(3):
        s, e = sigma[0, 0, c].item(), abs((mu_hat - gt)[0, 0, c].item())
        total += math.log(s) - log3 + math.log(s * math.sqrt(2 * math.pi)) + e / (math.sqrt(2) * s + 1e-9)
    for c in range(2):
        s, e = sigma[1, 0, c].item(), abs((mu_hat - gt)[1, 0, c].item())
        total += math.log(s) - log2 + math.log(s * math.sqrt(2 * math.pi)) + e / (math.sqrt(2) * s + 1e-9)
    assert got["total"].item() == pytest.approx(total / 2, rel=1e-5)


def test_3d_flow_with_zero_couplings_is_the_standard_normal() -> None:
    flow = RealNVP(dim=3)
    for m in flow.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    x = torch.randn(5, 3)
    expected = -0.5 * (x * x).sum(1) - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x), expected)
    assert flow.masks.tolist() == [[0, 0, 1], [1, 1, 0]] * 3


def test_integral_head_soft_argmax() -> None:
    from sar.models.heads.pose3d import IntegralHead

    head = IntegralHead(in_channels=1, num_keypoints=1, depth_bins=4)
    torch.nn.init.zeros_(head.conv.weight)
    x = torch.zeros(1, 1, 2, 8)
    uniform = head(x)["coords"][0, 0]  # the mean of the grid: u = mean(j / 8) - 0.5, v = mean(i / 2) - 0.5, d = 0
    torch.testing.assert_close(uniform, torch.tensor([3.5 / 8 - 0.5, 0.25 - 0.5, 0.0]))
    with torch.no_grad():
        head.conv.weight[2, 0] = 100.0  # depth bin 2 fires where the input is 1
    x[0, 0, 1, 5] = 1.0
    peaked = head(x)["coords"][0, 0]
    torch.testing.assert_close(peaked, torch.tensor([5 / 8 - 0.5, 1 / 2 - 0.5, 2.5 / 4 - 0.5]), atol=1e-4, rtol=0)
