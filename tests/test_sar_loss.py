"""SAR loss and heatmap MSE loss: hand-computed values, empty batches, gradient direction."""

from __future__ import annotations

import math

import pytest
import torch

from sar.models.losses import HeatmapMSELoss, SARLoss, build_loss, sar_nll


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _tiny_example() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """1 image, 1 keypoint, 2x2 map (H = W = 2)."""
    outputs = {
        "logits": torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]]]]),
        "offsets": torch.tensor([[[[[0.1, -0.2], [0.0, 0.3]], [[-0.1, 0.0], [0.2, 0.1]]]]]),
        "heatmap": torch.tensor([[[[-1.0, 0.5], [0.0, 2.0]]]]),
    }
    targets = {
        "keypoints_norm": torch.tensor([[[0.25, 0.375]]]),
        "heatmap": torch.tensor([[[[0.0, 0.8], [0.5, 1.0]]]]),
        "keypoint_weights": torch.tensor([[1.0]]),
    }
    return outputs, targets


def test_sar_loss_matches_hand_computation() -> None:
    outputs, targets = _tiny_example()
    # Grid p = (j/W, i/H), cells in row-major order: (0,0) (0.5,0) (0,0.5) (0.5,0.5).
    # Hypotheses K = p - o:
    #   t0 = (0 - 0.1, 0 + 0.1)     = (-0.1, 0.1)
    #   t1 = (0.5 + 0.2, 0 - 0.0)   = (0.7, 0.0)
    #   t2 = (0 - 0.0, 0.5 - 0.2)   = (0.0, 0.3)
    #   t3 = (0.5 - 0.3, 0.5 - 0.1) = (0.2, 0.4)
    # L1 distances to K* = (0.25, 0.375):
    dist = [0.35 + 0.275, 0.45 + 0.375, 0.25 + 0.075, 0.05 + 0.025]
    c = [_sigmoid(s) for s in (0.0, 1.0, -1.0, 2.0)]
    w = [ci / sum(c) for ci in c]
    mix = sum(wi * math.exp(-16.0 * d) for wi, d in zip(w, dist, strict=True))
    loss_reg = -math.log(mix + 1e-6)

    # Quality focal loss, gamma 2: t0 is negative, t1..t3 positive; num_pos = #(target > 0.7) = 2.
    def bce(h: float, t: float) -> float:
        p = _sigmoid(h)
        return -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))

    neg = bce(-1.0, 0.0) * _sigmoid(-1.0) ** 2
    pos = sum(bce(h, t) * abs(t - _sigmoid(h)) ** 2 for h, t in ((0.5, 0.8), (0.0, 0.5), (2.0, 1.0)))
    loss_hm = (neg + pos) / 2.0

    out = SARLoss(lambda_=16.0, aux_weight=1.0, gamma=2.0)(outputs, targets)
    assert out["loss_reg"].item() == pytest.approx(loss_reg, rel=1e-5)
    assert out["loss_hm"].item() == pytest.approx(loss_hm, rel=1e-5)
    assert out["total"].item() == pytest.approx(loss_reg + loss_hm, rel=1e-5)

    out = SARLoss(aux_weight=0.5)(outputs, targets)
    assert out["total"].item() == pytest.approx(loss_reg + 0.5 * loss_hm, rel=1e-5)


def test_sar_loss_ignores_invalid_keypoints_and_averages_valid_ones() -> None:
    outputs, targets = _tiny_example()
    single = SARLoss()(outputs, targets)
    # Two copies of the keypoint plus one invalid keypoint with a garbage (NaN) target.
    outputs2 = {k: torch.cat([v, v, v], dim=1) for k, v in outputs.items()}
    targets2 = {k: torch.cat([v, v, v], dim=1) for k, v in targets.items()}
    targets2["keypoint_weights"] = torch.tensor([[1.0, 0.0, 1.0]])
    targets2["keypoints_norm"][0, 1] = float("nan")
    for v in outputs2.values():
        v.requires_grad_(True)
    out = SARLoss()(outputs2, targets2)
    assert out["loss_reg"].item() == pytest.approx(single["loss_reg"].item(), rel=1e-5)
    assert out["loss_hm"].item() == pytest.approx(single["loss_hm"].item(), rel=1e-5)
    out["total"].backward()
    assert all(torch.isfinite(v.grad).all() for v in outputs2.values())


def test_sar_nll_is_stable_and_equals_naive_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) * 3
    offsets = torch.randn(2, 3, 2, 5, 4, generator=g, dtype=torch.float64) * 0.2
    target = torch.rand(2, 3, 2, generator=g, dtype=torch.float64)
    xs = torch.arange(4, dtype=torch.float64) / 4
    ys = torch.arange(5, dtype=torch.float64) / 5
    kx = xs[None, :] - offsets[:, :, 0]
    ky = ys[:, None] - offsets[:, :, 1]
    c = torch.sigmoid(logits)
    w = c / c.sum(dim=(-2, -1), keepdim=True)
    r = torch.exp(-16 * ((kx - target[..., 0, None, None]).abs() + (ky - target[..., 1, None, None]).abs()))
    naive = -torch.log((w * r).sum(dim=(-2, -1)) + 1e-6)
    assert torch.allclose(sar_nll(logits, offsets, target, 16.0), naive, rtol=1e-10, atol=1e-12)

    # Extreme logits / far targets: finite values and gradients, capped at -log(1e-6).
    big = torch.full((1, 1, 3, 3), 80.0, requires_grad=True)
    far = sar_nll(big, torch.zeros(1, 1, 2, 3, 3), torch.tensor([[[50.0, 50.0]]]), 16.0)
    assert far.item() == pytest.approx(-math.log(1e-6), rel=1e-6)
    far.sum().backward()
    assert torch.isfinite(big.grad).all()


@pytest.mark.parametrize("batch", [0, 2])
def test_sar_loss_zero_without_valid_keypoints(batch: int) -> None:
    outputs = {
        "logits": torch.randn(batch, 3, 4, 4, requires_grad=True),
        "offsets": torch.randn(batch, 3, 2, 4, 4, requires_grad=True),
        "heatmap": torch.randn(batch, 3, 4, 4, requires_grad=True),
    }
    targets = {
        "keypoints_norm": torch.full((batch, 3, 2), float("nan")),
        "heatmap": torch.zeros(batch, 3, 4, 4),
        "keypoint_weights": torch.zeros(batch, 3),
    }
    out = SARLoss()(outputs, targets)
    for key in ("total", "loss_reg", "loss_hm"):
        assert out[key].item() == 0.0
    out["total"].backward()
    for v in outputs.values():
        assert v.grad is not None and torch.isfinite(v.grad).all()


def test_sgd_step_pulls_hypotheses_towards_ground_truth() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 6, generator=g).requires_grad_(True)
    offsets = (0.1 * torch.randn(2, 4, 2, 8, 6, generator=g)).requires_grad_(True)
    heat = torch.randn(2, 4, 8, 6, generator=g).requires_grad_(True)
    targets = {
        "keypoints_norm": torch.rand(2, 4, 2, generator=g),
        "heatmap": torch.rand(2, 4, 8, 6, generator=g) * (torch.rand(2, 4, 8, 6, generator=g) > 0.7),
        "keypoint_weights": torch.ones(2, 4),
    }
    loss_fn = SARLoss()
    params = [logits, offsets, heat]
    opt = torch.optim.SGD(params, lr=0.05)

    @torch.no_grad()
    def reg_error() -> float:  # mean |K_t - K*| weighted by w: the expected L1 error of the mixture
        w = torch.sigmoid(logits) / torch.sigmoid(logits).sum(dim=(-2, -1), keepdim=True)
        xs = torch.arange(6) / 6
        ys = torch.arange(8)[:, None] / 8
        kx, ky = xs - offsets[:, :, 0], ys - offsets[:, :, 1]
        t = targets["keypoints_norm"]
        d = (kx - t[..., 0, None, None]).abs() + (ky - t[..., 1, None, None]).abs()
        return float((w * d).sum(dim=(-2, -1)).mean())

    before = loss_fn({"logits": logits, "offsets": offsets, "heatmap": heat}, targets)
    err_before = reg_error()
    opt.zero_grad()
    before["total"].backward()
    opt.step()
    after = loss_fn({"logits": logits, "offsets": offsets, "heatmap": heat}, targets)
    assert after["total"].item() < before["total"].item()
    assert after["loss_reg"].item() < before["loss_reg"].item()
    assert after["loss_hm"].item() < before["loss_hm"].item()
    assert reg_error() < err_before


def test_heatmap_mse_hand_example() -> None:
    outputs = {"heatmap": torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])}  # B=1, K=2, H=1, W=2
    targets = {
        "heatmap": torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]]),
        "keypoint_weights": torch.tensor([[1.0, 0.5]]),
    }
    # weighted squared errors: k0 -> 1*1, 0; k1 -> 0.5*1, 0; mean over 4 elements
    out = HeatmapMSELoss()(outputs, targets)
    assert out["total"].item() == pytest.approx((1.0 + 0.0 + 0.5 + 0.0) / 4)
    assert out["loss_hm"].item() == pytest.approx(0.375)

    empty = {"heatmap": torch.zeros(0, 2, 3, 3, requires_grad=True)}
    out = HeatmapMSELoss()(empty, {"heatmap": torch.zeros(0, 2, 3, 3), "keypoint_weights": torch.zeros(0, 2)})
    assert out["total"].item() == 0.0
    out["total"].backward()


def test_build_loss() -> None:
    loss = build_loss({"type": "sar", "lambda_": 8.0, "aux_weight": 0.0})
    assert isinstance(loss, SARLoss) and loss.lambda_ == 8.0 and loss.aux_weight == 0.0
    assert isinstance(build_loss({"type": "mse"}), HeatmapMSELoss)
    with pytest.raises(ValueError, match="unexpected keyword argument .lamda."):
        build_loss({"type": "sar", "lamda": 1.0})
    with pytest.raises(ValueError, match="unknown loss type"):
        build_loss({"type": "l2"})
