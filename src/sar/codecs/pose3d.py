"""Codecs of the monocular 3D task (task=pose3d; docs/pose3d.md, docs/method.md "3D").

Targets are in RLE's normalised frame [C, RLE ``simple_transform_3d``]: ``u = x / w - 0.5``, ``v = y / h - 0.5``
(input pixels ``x, y`` of the crop), ``d = (Z - Z_root) / depth_range`` with ``Z`` in mm and ``depth_range`` 2000.
A joint gets weight 0 when it is not labelled or any of its supervised components is outside [-0.5, 0.5].
2D-only samples (MPII / COCO auxiliary data) have ``depth_weights`` 0: only u, v are supervised.

``encode(keypoints (K, 2) crop px, visible (K,), depth (K,) root-relative mm or None) -> {uvd (K, 3),
keypoint_weights (K,), depth_weights (K,), ...}`` and ``decode(outputs) -> (uvd (B, K, 3), scores (B, K))``;
``decode_flip`` merges the mirrored pass (``u -> -u - 1/w``, the mirror ``x -> w - 1 - x`` in this frame, joints
swapped by the spec's flip indices, depth kept) by averaging, as RLE's flip test. :meth:`Pose3DCodec.to_pixels`
turns decoded ``u, v`` back into input pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from sar.codecs.base import MapCodec
from sar.codecs.heatmap import gaussian_targets, keypoint_weights
from sar.codecs.sar import sar_grid

__all__ = ["Pose3DCodec", "RLE3DCodec", "Regression3DCodec", "SAR3DCodec"]

Outputs = Mapping[str, torch.Tensor]


class Pose3DCodec(MapCodec):
    """The shared (u, v, d) targets and flip merge. ``depth_range``: mm per unit of ``d`` (RLE: 2000)."""

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], depth_range: float = 2000.0,
                 sigma: float = 2.0) -> None:
        super().__init__(input_size, heatmap_size, sigma)
        if depth_range <= 0:
            raise ValueError(f"depth_range must be positive, got {depth_range}")
        self.depth_range = float(depth_range)

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, depth: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        k = len(kp)
        size = np.asarray(self.input_size, dtype=np.float64)
        uv = kp / size - 0.5
        d = np.zeros(k) if depth is None else np.asarray(depth, dtype=np.float64).reshape(k) / self.depth_range
        uvd = np.concatenate([uv, d[:, None]], axis=1)
        labelled = (np.asarray(visible, dtype=np.float64).reshape(k) > 0) & np.isfinite(uvd).all(axis=1)
        inside = (np.abs(uv) <= 0.5).all(axis=1) & (np.abs(d) <= 0.5)
        weights = (labelled & inside).astype(np.float32)
        depth_w = weights * (0.0 if depth is None else 1.0)
        uvd = np.where(weights[:, None] > 0, uvd, 0.0).astype(np.float32)
        return {"uvd": uvd, "keypoint_weights": weights, "depth_weights": depth_w.astype(np.float32)}

    def to_pixels(self, uvd: torch.Tensor) -> torch.Tensor:
        """Input pixels (..., 2) of decoded ``u, v``."""
        return (uvd[..., :2] + 0.5) * uvd.new_tensor(self.input_size)

    def decode(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def decode_flip(self, outputs: Outputs, flipped: Outputs, flip_indices: Sequence[int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        uvd, scores = self.decode(outputs)
        f_uvd, f_scores = self.decode(flipped)
        idx = torch.as_tensor(list(flip_indices), device=uvd.device, dtype=torch.long)
        f_uvd, f_scores = f_uvd[:, idx].clone(), f_scores[:, idx]
        f_uvd[..., 0] = -f_uvd[..., 0] - 1.0 / self.input_size[0]
        return (uvd + f_uvd) / 2, (scores + f_scores) / 2


class Regression3DCodec(Pose3DCodec):
    """Direct 3D regression: the head's ``coords`` (B, K, 3) are (u, v, d); score 1."""

    @torch.no_grad()
    def decode(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        coords = outputs["coords"].float()
        return coords, torch.ones(coords.shape[:2], device=coords.device)


class RLE3DCodec(Pose3DCodec):
    """RLE-3D: ``coords`` (B, K, 3) are the means; score ``1 - mean(sigma)`` over the three axes (as RLE 2D)."""

    @torch.no_grad()
    def decode(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        coords = outputs["coords"].float()
        return coords, 1.0 - outputs["sigma"].float().mean(dim=-1)


class SAR3DCodec(Pose3DCodec):
    """SAR-3D (2.5D, our formulation): per cell a selector logit, a uv offset and a depth. The hypothesis of cell
    ``t`` is ``(p_t - o_t - 0.5, d_t)`` with ``p_t = (j / W, i / H)``; decoding takes the argmax cell of the
    selector (m = 1) and returns its hypothesis; the score is ``max_t w_t``. ``sigma``: the auxiliary heatmap's
    Gaussian (map cells), as the top-down SAR codec."""

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, depth: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
        out = super().encode(keypoints, visible, depth)
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        centres = np.trunc(np.where(np.isfinite(kp), kp, 0.0) / np.asarray(self.stride) + 0.5)
        on_map = keypoint_weights(centres, out["keypoint_weights"], self.heatmap_size, 3.0 * self.sigma)
        out["heatmap"] = gaussian_targets(centres, on_map, self.heatmap_size, self.sigma, truncate=True)
        return out

    @torch.no_grad()
    def decode(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        logits = outputs["logits"].float()
        b, k, h, w = logits.shape
        flat = logits.flatten(2)
        best, idx = flat.max(dim=-1)
        scores = torch.sigmoid(best) / torch.sigmoid(flat).sum(dim=-1)
        grid = sar_grid(w, h, logits.device).flatten(1)  # (2, HW)
        off = outputs["offsets"].float().flatten(3)  # (B, K, 2, HW)
        gather = idx[:, :, None, None].expand(b, k, 2, 1)
        uv = grid[:, idx].permute(1, 2, 0) - off.gather(3, gather).squeeze(-1) - 0.5
        d = outputs["depth"].float().flatten(2).gather(2, idx[..., None])
        return torch.cat([uv, d], dim=-1), scores
