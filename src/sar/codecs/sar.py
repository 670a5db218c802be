"""SAR codec: normalised keypoint targets + auxiliary MSRA heatmap; argmax-of-selector decoding.

docs/method.md. The SAR head predicts, per keypoint ``k`` and grid cell ``t = (i, j)``:

* a selector logit ``s_t``, turned into weights ``w_t = sigmoid(s_t) / sum_t' sigmoid(s_t')``;
* an offset ``o_t`` in normalised units (fractions of the map width / height), giving the hypothesis
  ``K_t = p_t - o_t`` with the grid position ``p_t = (j / W, i / H)``.

Normalised coordinates are input pixels divided by the input size, ``(x / w, y / h)``, which is the same
frame as ``p`` because cell ``j`` stands for input pixel ``j * w / W`` (MSRA convention, no UDP).

Decoding takes ``t* = argmax_t w_t``, returns ``K_{t*}`` in input pixels and the score ``max_t w_t``
(a normalised weight, not a heatmap value). The auxiliary heatmap is not used at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sar.codecs.base import MapCodec
from sar.codecs.flip import CoordinateFlip, HeadOutputs
from sar.codecs.heatmap import gaussian_targets, keypoint_weights

__all__ = ["SARCodec", "hypothesis_at", "sar_grid"]


def sar_grid(
    width: int, height: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised cell positions (2,H,W): channel 0 is ``j / W``, channel 1 is ``i / H``."""
    xs = torch.arange(width, device=device, dtype=dtype) / width
    ys = torch.arange(height, device=device, dtype=dtype) / height
    return torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=0)


def hypothesis_at(offsets: torch.Tensor, idx: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised hypotheses ``p_t - o_t`` (B,K,2) at flat cell indices ``idx`` (B,K) of (B,K,2,H,W) offsets."""
    b, k = idx.shape
    off = offsets.flatten(3).gather(3, idx[:, :, None, None].expand(b, k, 2, 1)).squeeze(-1)  # (B,K,2)
    cell = torch.stack([(idx % width).to(off.dtype) / width, (idx // width).to(off.dtype) / height], dim=-1)
    return cell - off


class SARCodec(CoordinateFlip, MapCodec):
    """SAR codec.

    Args:
        input_size: crop-input size ``(w, h)`` in pixels.
        heatmap_size: SAR grid / auxiliary heatmap size ``(W, H)``.
        sigma: sigma (map cells) of the auxiliary MSRA heatmap target, centred on ``int(x / stride + 0.5)``.
            The released configs use 3 (96x72 maps).

    Flip test at coordinate level, as the official head (:class:`~sar.codecs.flip.CoordinateFlip`): the mirrored
    pass's ``x -> w - 1 - x`` in input pixels is the official ``1 - x - 1/(4W)`` in normalised units, generalised
    from stride 4 to any stride (``1 - x - 1/w``).
    """

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 3.0,
                 score: str = "selector") -> None:
        super().__init__(input_size, heatmap_size, sigma)
        if score not in ("selector", "heatmap"):
            raise ValueError(f"score must be 'selector' (max normalised weight, the released decoder) or 'heatmap' "
                             f"(auxiliary heatmap sigmoid at the keypoint), got {score!r}")
        self.score = score

    # -- encoding ----------------------------------------------------------------------------------
    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        """Targets for one instance.

        Returns ``keypoints_norm`` (K,2) = keypoints / input_size (0 where the weight is 0),
        ``heatmap`` (K,H,W) MSRA Gaussian at the rounded centre, and ``keypoint_weights`` (K,).
        """
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        centres = np.trunc(kp / np.asarray(self.stride) + 0.5)
        weights = keypoint_weights(centres, visible, self.heatmap_size, 3.0 * self.sigma)
        norm = np.where(weights[:, None] > 0, kp / np.asarray(self.input_size, dtype=np.float64), 0.0)
        heatmap = gaussian_targets(centres, weights, self.heatmap_size, self.sigma, truncate=True)
        return {"keypoints_norm": norm.astype(np.float32), "heatmap": heatmap, "keypoint_weights": weights}

    # -- decoding ----------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, outputs: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (B,K,2) input px, scores (B,K) from ``logits`` (B,K,H,W), ``offsets`` (B,K,2,H,W)."""
        logits = outputs["logits"].float()
        h, w = logits.shape[-2:]
        flat = logits.flatten(2)  # (B,K,HW)
        best, idx = flat.max(dim=-1)  # argmax on logits: sigmoid is monotonic but saturates in float32
        scores = torch.sigmoid(best) / torch.sigmoid(flat).sum(dim=-1)
        norm = hypothesis_at(outputs["offsets"].float(), idx, w, h)
        coords = norm * norm.new_tensor(self.input_size)
        if self.score == "heatmap" and "heatmap" in outputs:
            scores = self.heatmap_scores(outputs["heatmap"].float(), coords)
        return coords, scores

    def heatmap_scores(self, heatmap_logits: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """sigmoid(auxiliary heatmap) bilinearly sampled at ``coords`` (B,K,2 input px): the alternative score
        left commented out in the released head. The quality focal loss trains this sigmoid towards the
        Gaussian target value, so it reads as a localisation-quality estimate in [0, 1]."""
        b, k, h, w = heatmap_logits.shape
        u = coords[..., 0] / self.stride[0]  # map units: cell j is input pixel j * stride
        v = coords[..., 1] / self.stride[1]
        grid = torch.stack([2 * u / max(w - 1, 1) - 1, 2 * v / max(h - 1, 1) - 1], dim=-1)  # (B,K,2)
        prob = torch.sigmoid(heatmap_logits).reshape(b * k, 1, h, w)
        sampled = torch.nn.functional.grid_sample(prob, grid.reshape(b * k, 1, 1, 2), mode="bilinear",
                                                  padding_mode="zeros", align_corners=True)
        return sampled.reshape(b, k)
