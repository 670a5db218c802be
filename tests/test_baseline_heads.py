"""Baseline heads: heatmap + offset, direct regression, RLE (codecs, losses, flow) and SAR without heatmap."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from sar.conf import CONF_DIR

from keypoint_helpers import FLIP_INDICES, mirror, random_points
from sar.codecs import HeatmapOffsetCodec, RegressionCodec, RLECodec, build_codec
from sar.models.flow import RealNVP
from sar.models.heads import HeatmapOffsetHead, NormLinear, RegressionHead, RLEHead, SARHead
from sar.models.losses import HeatmapOffsetLoss, L1CoordLoss, RLELoss, SARLoss, build_loss, sar_nll
from sar.systems.topdown import TopDownSystem

CONF = CONF_DIR


def _log_normal2(x: float, y: float) -> float:
    return -0.5 * (x * x + y * y) - math.log(2.0 * math.pi)


def _identity_flow(flow: RealNVP) -> None:
    """Zero the last linear layer of every s and t net: s = tanh(0) = 0, t = 0, so the flow is the identity."""
    with torch.no_grad():
        for net in [*flow.s, *flow.t]:
            last = [m for m in net if isinstance(m, torch.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.zero_()


# -- RealNVP ----------------------------------------------------------------------------------------
def test_flow_structure_and_identity_density() -> None:
    flow = RealNVP()
    assert flow.masks.tolist() == [[0, 1], [1, 0]] * 3
    assert len(flow.s) == len(flow.t) == 6
    assert isinstance(flow.s[0][-1], torch.nn.Tanh) and isinstance(flow.t[0][-1], torch.nn.Linear)
    _identity_flow(flow)
    pts = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    expected = torch.tensor([_log_normal2(0.3, -1.2), _log_normal2(2.0, 0.5)])
    torch.testing.assert_close(flow.log_prob(pts), expected)


def test_random_flow_density_integrates_to_one_and_inverts() -> None:
    torch.manual_seed(0)
    flow = RealNVP().double()
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, 0.2)
                m.bias.normal_(0.0, 0.1)
    n = 161
    axis = torch.linspace(-6.0, 6.0, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    with torch.no_grad():
        logp = flow.log_prob(pts)
    cell = (12.0 / (n - 1)) ** 2
    mass = float(logp.exp().sum() * cell)
    assert mass == pytest.approx(1.0, abs=0.02)
    # Non-trivial: far from the standard normal somewhere on the grid.
    std = -0.5 * (pts * pts).sum(1) - math.log(2.0 * math.pi)
    assert float((logp - std).abs().max()) > 0.5
    # forward is the inverse of inverse
    with torch.no_grad():
        z, _ = flow.inverse(pts[::97])
        torch.testing.assert_close(flow(z), pts[::97])


# -- RLE loss ---------------------------------------------------------------------------------------
def test_rle_loss_matches_hand_computation() -> None:
    loss_fn = RLELoss()
    _identity_flow(loss_fn.flow)  # log G(eps) = standard normal log-density
    coords = torch.tensor([[[0.10, -0.20], [0.0, 0.3]], [[0.25, 0.05], [-0.4, 0.4]]])
    sigma = torch.tensor([[[0.20, 0.10], [0.5, 0.5]], [[0.30, 0.05], [0.7, 0.9]]])
    target = torch.tensor([[[0.05, -0.10], [9.0, 9.0]], [[0.20, 0.00], [-0.3, 0.1]]])
    weights = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    with torch.no_grad():
        out = loss_fn({"coords": coords, "sigma": sigma}, {"keypoints_rle": target, "keypoint_weights": weights})

    nf_sum, q_sum = 0.0, 0.0
    for b in range(2):
        for k in range(2):
            if weights[b, k] == 0:
                continue
            mu = [float(v) for v in coords[b, k]]
            gt = [float(v) for v in target[b, k]]
            sg = [float(v) for v in sigma[b, k]]
            eps = [(mu[c] - gt[c]) / sg[c] for c in range(2)]
            log_g = _log_normal2(eps[0], eps[1])
            for c in range(2):  # log G counted once per coordinate (official broadcasting)
                nf_sum += math.log(sg[c]) - log_g
                q_sum += math.log(sg[c] * math.sqrt(2.0 * math.pi)) + abs(mu[c] - gt[c]) / (
                    math.sqrt(2.0) * sg[c] + 1e-9
                )
    batch = 2
    assert float(out["loss_nf"]) == pytest.approx(nf_sum / batch, rel=1e-5)
    assert float(out["loss_q"]) == pytest.approx(q_sum / batch, rel=1e-5)
    assert float(out["total"]) == pytest.approx((nf_sum + q_sum) / batch, rel=1e-5)


def test_rle_loss_empty_is_zero_and_flow_gets_gradients() -> None:
    loss_fn = RLELoss()
    coords = torch.zeros(2, 3, 2, requires_grad=True)
    sigma = torch.full((2, 3, 2), 0.3, requires_grad=True)
    targets = {"keypoints_rle": torch.full((2, 3, 2), float("nan")), "keypoint_weights": torch.zeros(2, 3)}
    out = loss_fn({"coords": coords, "sigma": sigma}, targets)
    assert out["total"].item() == 0.0
    out["total"].backward()
    assert torch.isfinite(coords.grad).all()
    targets = {"keypoints_rle": torch.rand(2, 3, 2) - 0.5, "keypoint_weights": torch.ones(2, 3)}
    out = loss_fn({"coords": torch.zeros(2, 3, 2), "sigma": torch.full((2, 3, 2), 0.3)}, targets)
    out["total"].backward()
    grads = [p.grad for p in loss_fn.flow.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


# -- heads ------------------------------------------------------------------------------------------
def test_norm_linear_and_head_shapes() -> None:
    torch.manual_seed(0)
    layer = NormLinear(5, 3)
    x = torch.randn(4, 5)
    expected = x @ layer.weight.t() / x.norm(dim=1, keepdim=True) + layer.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer(3.0 * x), expected)  # scale invariant
    plain = NormLinear(5, 3, norm=False)
    torch.testing.assert_close(plain(x), x @ plain.weight.t() + plain.bias)

    feats = torch.randn(2, 8, 3, 4)
    rle = RLEHead(8, 6)(feats)
    assert rle["coords"].shape == (2, 6, 2) and rle["sigma"].shape == (2, 6, 2)
    assert ((rle["sigma"] > 0) & (rle["sigma"] < 1)).all()
    reg = RegressionHead(8, 6)(feats)
    assert reg["coords"].shape == (2, 6, 2)
    torch.testing.assert_close(reg["coords"], torch.full((2, 6, 2), 0.5), atol=0.02, rtol=0)
    ho = HeatmapOffsetHead(8, 6)(feats)
    assert ho["heatmap"].shape == (2, 6, 3, 4) and ho["offsets"].shape == (2, 6, 2, 3, 4)


# -- codecs: round trips and flip ------------------------------------------------------------------
def _regression_outputs(codec: RegressionCodec, kp: np.ndarray) -> dict[str, torch.Tensor]:
    target = codec.encode(kp, np.ones(len(kp)))
    return {"coords": torch.from_numpy(target[codec.target_key])[None]}


def _rle_outputs(codec: RLECodec, kp: np.ndarray, sigma: float) -> dict[str, torch.Tensor]:
    out = _regression_outputs(codec, kp)
    out["sigma"] = torch.full_like(out["coords"], sigma)
    return out


def _heatmap_offset_outputs(
    codec: HeatmapOffsetCodec, kp: np.ndarray, noise: float = 0.0
) -> dict[str, torch.Tensor]:
    """Encoded heatmap target + offsets that are exact at the peak cell (and everywhere when noise=0)."""
    target = codec.encode(kp, np.ones(len(kp)))
    heatmap = torch.from_numpy(target["heatmap"])[None]
    (w_in, h_in), (w, h) = codec.input_size, codec.heatmap_size
    norm = torch.as_tensor(kp / np.array([w_in, h_in]), dtype=torch.float32)
    gx = torch.arange(w, dtype=torch.float32) / w
    gy = torch.arange(h, dtype=torch.float32) / h
    offsets = torch.empty(1, len(kp), 2, h, w)
    offsets[0, :, 0] = gx[None, None, :] - norm[:, 0, None, None]
    offsets[0, :, 1] = gy[None, :, None] - norm[:, 1, None, None]
    if noise:
        gen = torch.Generator().manual_seed(1)
        noisy = offsets + noise * torch.randn(offsets.shape, generator=gen)
        peak = heatmap.flatten(2).argmax(-1)[0]  # (K,)
        keep = torch.zeros(len(kp), h * w, dtype=torch.bool)
        keep[torch.arange(len(kp)), peak] = True
        offsets = torch.where(keep.reshape(1, len(kp), 1, h, w), offsets, noisy)
    return {"heatmap": heatmap, "offsets": offsets}


def test_regression_codec_round_trip_and_weights() -> None:
    codec = build_codec({"type": "regression", "input_size": [192, 256], "heatmap_size": [6, 8]})
    assert isinstance(codec, RegressionCodec) and not codec.drop_outside
    rng = np.random.default_rng(0)
    kp = random_points(rng, 40, codec.input_size)
    coords, scores = codec.decode(_regression_outputs(codec, kp))
    assert coords.shape == (1, 40, 2) and np.abs(coords[0].numpy() - kp).max() < 0.05
    assert torch.equal(scores, torch.ones(1, 40))
    # invisible -> 0; visible outside the crop keeps its weight (target outside [0, 1])
    out = codec.encode(np.array([[10.0, 20.0], [-30.0, 50.0], [5.0, 5.0]]), np.array([1, 1, 0]))
    assert out["keypoint_weights"].tolist() == [1.0, 1.0, 0.0]
    assert out["keypoints_norm"][1, 0] == pytest.approx(-30.0 / 192)
    assert out["keypoints_norm"][2].tolist() == [0.0, 0.0]


def test_rle_codec_frame_round_trip_and_weights() -> None:
    codec = build_codec({"type": "rle", "input_size": [192, 256], "heatmap_size": [6, 8]})
    assert isinstance(codec, RLECodec) and codec.drop_outside
    out = codec.encode(np.array([[96.0, 128.0], [0.0, 256.0], [-1.0, 10.0], [10.0, 10.0]]), np.array([1, 1, 1, 0]))
    assert out["keypoints_rle"][0].tolist() == [0.0, 0.0]  # crop centre is 0 in the RLE frame
    assert out["keypoints_rle"][1].tolist() == [-0.5, 0.5]
    assert out["keypoint_weights"].tolist() == [1.0, 1.0, 0.0, 0.0]  # outside the crop -> 0 (official)
    rng = np.random.default_rng(1)
    kp = random_points(rng, 40, codec.input_size)
    coords, scores = codec.decode(_rle_outputs(codec, kp, sigma=0.2))
    assert np.abs(coords[0].numpy() - kp).max() < 0.05
    torch.testing.assert_close(scores, torch.full((1, 40), 0.8))


@pytest.mark.parametrize("heatmap_size", [(48, 64), (12, 16)])
def test_heatmap_offset_codec_round_trip(heatmap_size: tuple[int, int]) -> None:
    codec = build_codec({"type": "heatmap_offset", "input_size": [192, 256], "heatmap_size": list(heatmap_size),
                         "sigma": 2.0})
    assert isinstance(codec, HeatmapOffsetCodec)
    rng = np.random.default_rng(2)
    kp = random_points(rng, 40, codec.input_size)
    for noise in (0.0, 0.3):  # 0.3: offsets are garbage except at the heatmap peak -> the peak cell is read
        outputs = _heatmap_offset_outputs(codec, kp, noise)
        coords, scores = codec.decode(outputs)
        assert coords.shape == (1, 40, 2)
        assert np.abs(coords[0].numpy() - kp).max() < 0.05
        torch.testing.assert_close(scores, outputs["heatmap"].flatten(2).amax(-1))  # heatmap maximum
        # (1 unless the rounded centre falls just off the map, possible at stride 16 near the right edge)


@pytest.mark.parametrize("kind", ["regression", "rle", "heatmap_offset"])
def test_flip_merge_of_mirrored_perfect_outputs(kind: str) -> None:
    codec = build_codec({"type": kind, "input_size": [192, 256], "heatmap_size": [48, 64]})
    rng = np.random.default_rng(3)
    kp = random_points(rng, 6, codec.input_size, margin=2.0)
    mirrored = mirror(kp, codec.input_size[0])
    if kind == "regression":
        outs, flipped = _regression_outputs(codec, kp), _regression_outputs(codec, mirrored)
        expected_scores = torch.ones(1, 6)
    elif kind == "rle":
        outs, flipped = _rle_outputs(codec, kp, 0.2), _rle_outputs(codec, mirrored, 0.4)
        expected_scores = torch.full((1, 6), 0.7)  # mean of 0.8 and 0.6
    else:
        outs, flipped = _heatmap_offset_outputs(codec, kp), _heatmap_offset_outputs(codec, mirrored)
        expected_scores = torch.ones(1, 6)
    coords, scores = codec.decode_flip(outs, flipped, FLIP_INDICES)
    assert np.abs(coords[0].numpy() - kp).max() < 0.05
    torch.testing.assert_close(scores, expected_scores)


# -- heatmap + offset loss ------------------------------------------------------------------------
def test_heatmap_offset_loss_matches_hand_computation() -> None:
    # 1 image, 2 keypoints (the second has weight 0), map W = 3, H = 2; grid p = (j/3, i/2).
    heatmap = torch.tensor([[[[0.1, 0.5, 0.0], [0.2, 0.9, -0.1]], [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]]])
    target_hm = torch.tensor([[[[0.0, 0.6, 0.1], [0.3, 1.0, 0.0]], [[0.0] * 3, [0.0] * 3]]])
    offsets = torch.zeros(1, 2, 2, 2, 3)
    offsets[0, 0, 0] = torch.tensor([[0.05, -0.10, 0.20], [0.00, 0.02, -0.30]])  # x offsets
    offsets[0, 0, 1] = torch.tensor([[-0.25, 0.10, 0.00], [0.05, -0.04, 0.40]])  # y offsets
    gt = torch.tensor([[[0.40, 0.35], [0.9, 0.9]]])
    weights = torch.tensor([[1.0, 0.0]])
    loss_fn = HeatmapOffsetLoss(hm_weight=2.0, offset_weight=0.5, offset_radius=1.0)
    out = loss_fn({"heatmap": heatmap, "offsets": offsets},
                  {"heatmap": target_hm, "keypoints_norm": gt, "keypoint_weights": weights})

    # heatmap: squared error summed over keypoint 0's map, / 1 valid keypoint
    hm = [[0.1, 0.5, 0.0], [0.2, 0.9, -0.1]]
    tg = [[0.0, 0.6, 0.1], [0.3, 1.0, 0.0]]
    loss_hm = sum((hm[i][j] - tg[i][j]) ** 2 for i in range(2) for j in range(3))
    # GT in map cells: (0.4 * 3, 0.35 * 2) = (1.2, 0.7). Squared distances (j, i): (1, 0) 0.53, (1, 1) 0.13,
    # (2, 1) 0.73 are within radius 1; (2, 0) 1.13, (0, 0) 1.93, (0, 1) 1.53 are not.
    ox = offsets[0, 0, 0].tolist()
    oy = offsets[0, 0, 1].tolist()
    errs = []
    for i, j in ((0, 1), (1, 1), (1, 2)):
        hx, hy = j / 3 - ox[i][j], i / 2 - oy[i][j]  # hypothesis = grid - offset
        errs.append(abs(hx - 0.4) * 3 + abs(hy - 0.35) * 2)  # L1 in map cells
    loss_off = sum(errs) / len(errs)
    assert float(out["loss_hm"]) == pytest.approx(loss_hm, rel=1e-5)
    assert float(out["loss_offset"]) == pytest.approx(loss_off, rel=1e-5)
    assert float(out["total"]) == pytest.approx(2.0 * loss_hm + 0.5 * loss_off, rel=1e-5)


def test_heatmap_offset_and_l1_losses_empty_batch_are_zero() -> None:
    ho = HeatmapOffsetLoss()
    out = ho({"heatmap": torch.randn(2, 3, 4, 5), "offsets": torch.randn(2, 3, 2, 4, 5)},
             {"heatmap": torch.rand(2, 3, 4, 5), "keypoints_norm": torch.full((2, 3, 2), float("nan")),
              "keypoint_weights": torch.zeros(2, 3)})
    assert float(out["total"]) == 0.0
    l1 = L1CoordLoss()
    out = l1({"coords": torch.randn(2, 3, 2)}, {"keypoints_norm": torch.rand(2, 3, 2), "keypoint_weights": torch.zeros(2, 3)})
    assert float(out["total"]) == 0.0
    # hand value: mean over valid keypoints of |dx| + |dy|
    out = l1({"coords": torch.tensor([[[0.1, 0.2], [0.5, 0.5]]])},
             {"keypoints_norm": torch.tensor([[[0.3, 0.1], [0.0, 0.0]]]), "keypoint_weights": torch.tensor([[1.0, 0.0]])})
    assert float(out["total"]) == pytest.approx(0.3)


def test_build_loss_new_types() -> None:
    assert isinstance(build_loss({"type": "heatmap_offset", "offset_radius": 2}), HeatmapOffsetLoss)
    assert isinstance(build_loss({"type": "l1"}), L1CoordLoss)
    rle = build_loss({"type": "rle", "num_pairs": 2, "hidden": 8})
    assert isinstance(rle, RLELoss) and len(rle.flow.s) == 4
    with pytest.raises(ValueError, match="unexpected keyword argument .sigma."):
        build_loss({"type": "rle", "sigma": 1})


# -- SAR without the auxiliary heatmap -------------------------------------------------------------
def test_sar_without_heatmap_head_and_loss() -> None:
    torch.manual_seed(0)
    head = SARHead(8, 3, with_heatmap=False)
    out = head(torch.randn(2, 8, 4, 5))
    assert set(out) == {"logits", "offsets"}
    assert not any("heatmap" in name for name, _ in head.named_parameters())
    targets = {"keypoints_norm": torch.rand(2, 3, 2), "heatmap": torch.rand(2, 3, 4, 5),
               "keypoint_weights": torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])}
    losses = SARLoss()(out, targets)
    nll = sar_nll(out["logits"], out["offsets"], targets["keypoints_norm"], 16.0)
    expected = nll[targets["keypoint_weights"] > 0].mean()
    torch.testing.assert_close(losses["total"], expected)
    torch.testing.assert_close(losses["loss_reg"], expected)
    assert float(losses["loss_hm"]) == 0.0


# -- through the real system -----------------------------------------------------------------------
def _system_cfg(head: str) -> dict:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.load(CONF / "head" / f"{head}.yaml"),
                             OmegaConf.load(CONF / "heads" / "topdown" / f"{head}.yaml"), {"deconv": {"channels": 16}})
    # the neck's interpolations read the head's deconv block
    neck = OmegaConf.load(CONF / "neck" / "deconv.yaml")
    parts = OmegaConf.to_container(OmegaConf.create({"head": merged, "neck": neck}), resolve=True)
    return {
        "input_size": [64, 96],
        "backbone": yaml.safe_load((CONF / "backbone" / "resnet18.yaml").read_text()),
        **parts,
        "dataset": {"spec": "coco"},
        "task": {"flip_test": True},
        "optim": OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(CONF / "optim" / "adam.yaml"), {"lr": 1e-3}),
                                        resolve=True),
    }


def _fake_batch(system: TopDownSystem, batch: int = 2) -> dict:
    rng = np.random.default_rng(0)
    k = system.spec.num_keypoints
    targets = [
        system.codec.encode(random_points(rng, k, system.codec.input_size),
                            (rng.random(k) > 0.2).astype(np.float32))
        for _ in range(batch)
    ]
    stacked = {key: torch.from_numpy(np.stack([t[key] for t in targets])) for key in targets[0]}
    w, h = system.codec.input_size
    return {"image": torch.randn(batch, 3, h, w), "targets": stacked}


@pytest.mark.parametrize("head", ["heatmap_offset", "regression", "rle", "sar_no_heatmap"])
def test_system_training_step_and_predict(head: str) -> None:
    torch.manual_seed(0)
    cfg = _system_cfg("sar" if head == "sar_no_heatmap" else head)
    if head == "sar_no_heatmap":
        cfg["head"]["with_heatmap"] = cfg["head"]["module"]["with_heatmap"] = False
    system = TopDownSystem(cfg)
    batch = _fake_batch(system)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss = system.training_step(batch, 0)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    system.eval()
    kp, scores = system.predict_crops(batch["image"])
    k = system.spec.num_keypoints
    assert kp.shape == (2, k, 2) and scores.shape == (2, k)
    assert torch.isfinite(kp).all() and torch.isfinite(scores).all()
    if head in ("regression", "rle"):
        assert system.model.neck.num_layers == 0


def test_rle_flow_parameters_are_in_the_optimiser() -> None:
    system = TopDownSystem(_system_cfg("rle"))
    system.trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=1)
    optim = system.configure_optimizers()["optimizer"]
    in_optim = {id(p) for group in optim.param_groups for p in group["params"]}
    flow_params = list(system.loss.flow.parameters())
    assert flow_params and all(id(p) in in_optim for p in flow_params)
    assert all(id(p) in in_optim for p in system.model.head.parameters())
