"""MSRA Gaussian heatmap codec (SimpleBaseline) with optional DARK refinement (docs/heads.md).

Conventions
-----------
* Keypoints are float pixels of the crop-input image, pixel-centre convention, ``(x, y)`` order.
* The map has ``(W, H)`` cells for an input of ``(w, h)`` pixels, with one stride per axis,
  ``stride_x = w / W`` and ``stride_y = h / H``. Map cell ``j`` corresponds to input pixel ``j * stride_x``
  (the MSRA convention, no UDP): encoding divides by the stride and decoding multiplies by it.

Encoding (``encode``) builds an unnormalised Gaussian that peaks at 1:

* ``unbiased=False`` (classic MSRA): centred on the integer cell ``int(x / stride + 0.5)``, truncated to the
  window of radius ``3 * sigma`` around it (cells outside are 0).
* ``unbiased=True`` (DARK): centred on the exact sub-pixel location ``x / stride``. As in mmpose's unbiased
  encoder the Gaussian is *not* truncated, because the DARK decoder fits a quadratic to the log of the
  (blurred) map and a truncated target skews that fit.

Both are computed as the outer product of two 1-D Gaussians (``exp`` only on ``K * (W + H)`` values).
The keypoint weight is 1 when the keypoint is visible, finite and at least one cell of the ``3 * sigma``
window lies inside the map; otherwise 0 (and the map is all zeros).

Decoding (``decode``) is batched torch: argmax, then the DARK Newton step (``unbiased=True``) or the classic
quarter-pixel shift towards the larger neighbour; the score is the heatmap maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sar.codecs.base import MapCodec
from sar.codecs.flip import FlipIndices, HeadOutputs, swap_pairs

__all__ = ["MSRAHeatmapCodec", "default_blur_kernel", "gaussian_targets", "keypoint_weights"]


def default_blur_kernel(sigma: float) -> int:
    """DARK blur kernel size: ``6 * sigma - 1`` made odd (11 for sigma 2, 17 for sigma 3)."""
    k = round(6.0 * sigma - 1.0)
    if k % 2 == 0:
        k += 1
    return max(k, 3)


def keypoint_weights(
    centres: np.ndarray, visible: np.ndarray, heatmap_size: tuple[int, int], radius: float
) -> np.ndarray:
    """Per-keypoint weight (K,) float32: visible, finite and the radius window overlaps the map.

    ``centres`` are (K,2) map coordinates. The window holds the integer cells ``c`` with
    ``|c - centre| <= radius`` on each axis; the weight is 1 when at least one of them is inside the map.
    """
    width, height = heatmap_size
    finite = np.isfinite(centres).all(axis=1)
    safe = np.where(finite[:, None], centres, 0.0)
    lo = np.ceil(safe - radius)
    hi = np.floor(safe + radius)
    inside = (lo[:, 0] <= width - 1) & (hi[:, 0] >= 0) & (lo[:, 1] <= height - 1) & (hi[:, 1] >= 0)
    return ((np.asarray(visible).reshape(-1) > 0) & finite & inside).astype(np.float32)


def gaussian_targets(
    centres: np.ndarray,
    weights: np.ndarray,
    heatmap_size: tuple[int, int],
    sigma: float,
    truncate: bool,
) -> np.ndarray:
    """Unnormalised Gaussian maps (K,H,W) float32 peaking at 1 at ``centres`` (K,2, map units).

    With ``truncate`` the Gaussian is cut to the cells within ``3 * sigma`` of the centre on each axis (the
    square MSRA window). Keypoints with weight 0 get an all-zero map.
    """
    width, height = heatmap_size
    valid = weights > 0
    safe = np.where(valid[:, None], centres, 0.0)
    two_var = 2.0 * sigma * sigma
    dx = np.arange(width, dtype=np.float64)[None, :] - safe[:, 0:1]  # (K, W)
    dy = np.arange(height, dtype=np.float64)[None, :] - safe[:, 1:2]  # (K, H)
    gx = np.exp(-(dx * dx) / two_var)
    gy = np.exp(-(dy * dy) / two_var)
    if truncate:
        radius = 3.0 * sigma
        gx *= np.abs(dx) <= radius
        gy *= np.abs(dy) <= radius
    gy *= valid[:, None]
    gx32, gy32 = gx.astype(np.float32), gy.astype(np.float32)
    return gy32[:, :, None] * gx32[:, None, :]


def _gaussian_kernel_1d(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """1-D Gaussian kernel with OpenCV's default sigma for ``size`` (``cv2.GaussianBlur(..., sigmaX=0)``)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1.0) + 0.8
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    kernel = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def _blur_matrix(size: int, kernel: torch.Tensor) -> torch.Tensor:
    """(size, size) banded matrix ``M`` with ``M @ v`` = zero-padded 1-D convolution of ``v`` with ``kernel``."""
    radius = kernel.numel() // 2
    idx = torch.arange(size, device=kernel.device)
    diff = idx[None, :] - idx[:, None]  # column - row
    inside = diff.abs() <= radius
    return torch.where(inside, kernel[(diff + radius).clamp(0, kernel.numel() - 1)], kernel.new_zeros(()))


def blur_heatmaps(heatmaps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur of (B,K,H,W) maps with zero padding, each rescaled to its original maximum (DARK).

    Equivalent to mmpose's ``gaussian_blur`` (zero-pad by the kernel radius, ``cv2.GaussianBlur``, crop,
    rescale so the blurred maximum equals the original one). The separable blur is two matrix products with
    banded (Toeplitz) matrices, much faster than a single-channel ``conv2d`` on CPU and fine on GPU.
    """
    h, w = heatmaps.shape[-2:]
    kernel = _gaussian_kernel_1d(kernel_size, heatmaps.device, heatmaps.dtype)
    blurred = _blur_matrix(h, kernel) @ heatmaps @ _blur_matrix(w, kernel).T
    orig_max = heatmaps.flatten(2).amax(-1)
    blur_max = blurred.flatten(2).amax(-1)
    scale = torch.where(blur_max != 0, orig_max / torch.where(blur_max != 0, blur_max, 1.0), 1.0)
    return blurred * scale[..., None, None]


def _gather(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Values of (B,K,H,W) maps at integer cells ``(x, y)`` (B,K), clamped to the map."""
    h, w = maps.shape[-2:]
    idx = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    return maps.flatten(2).gather(2, idx[..., None]).squeeze(-1)


def heatmap_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer argmax cells ``(x, y)`` (B,K) long and maximum values (B,K) of (B,K,H,W) maps."""
    w = heatmaps.shape[-1]
    scores, idx = heatmaps.flatten(2).max(dim=-1)
    return idx % w, idx // w, scores


def refine_dark(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """DARK sub-pixel refinement: offsets (B,K,2) in map units to add to the integer argmax ``(x, y)``.

    Blur (rescaled to the original maximum), clamp at 1e-10, log, then one Newton step ``-H^-1 g`` with
    central differences: first derivatives over one cell, second derivatives over two cells. Points closer
    than two cells to the border, or with a singular Hessian, are left unrefined (offset 0), as in mmpose.
    """
    h, w = heatmaps.shape[-2:]
    logm = blur_heatmaps(heatmaps, kernel_size).clamp_min(1e-10).log()

    def at(dx: int, dy: int) -> torch.Tensor:
        return _gather(logm, x + dx, y + dy)

    c = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = 0.25 * (at(2, 0) - 2.0 * c + at(-2, 0))
    hyy = 0.25 * (at(0, 2) - 2.0 * c + at(0, -2))
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    off_x = -(hyy * gx - hxy * gy) / safe_det
    off_y = -(hxx * gy - hxy * gx) / safe_det
    off = torch.stack([off_x, off_y], dim=-1)
    ok = ok[..., None] & torch.isfinite(off)
    return torch.where(ok, off, torch.zeros_like(off))


def refine_quarter(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Classic refinement: offsets (B,K,2) of 0.25 cell towards the larger neighbour along each axis.

    An axis is left unshifted when the argmax is on the map border along it.
    """
    h, w = heatmaps.shape[-2:]
    dx = _gather(heatmaps, x + 1, y) - _gather(heatmaps, x - 1, y)
    dy = _gather(heatmaps, x, y + 1) - _gather(heatmaps, x, y - 1)
    dx = torch.where((x > 0) & (x < w - 1), dx, torch.zeros_like(dx))
    dy = torch.where((y > 0) & (y < h - 1), dy, torch.zeros_like(dy))
    return 0.25 * torch.stack([dx.sign(), dy.sign()], dim=-1)


def shift_right(maps: torch.Tensor, delta: float) -> torch.Tensor:
    """Translate (…,W) maps by ``delta`` cells towards larger x with linear interpolation.

    ``out[j] = maps[j - delta]``; samples left of column 0 (right of column W-1) replicate the border column,
    as mmpose's integer ``shift_heatmap`` does.
    """
    if delta == 0:
        return maps
    w = maps.shape[-1]
    src = torch.arange(w, device=maps.device, dtype=torch.float64) - delta
    left = torch.floor(src)
    frac = (src - left).to(maps.dtype)
    i0 = left.long().clamp(0, w - 1)
    i1 = (left.long() + 1).clamp(0, w - 1)
    return maps[..., i0] * (1.0 - frac) + maps[..., i1] * frac


class MSRAHeatmapCodec(MapCodec):
    """MSRA Gaussian heatmap codec; ``unbiased=True`` is DARK (sub-pixel targets + Taylor decoding).

    Args:
        input_size: crop-input size ``(w, h)`` in pixels.
        heatmap_size: map size ``(W, H)``.
        sigma: Gaussian standard deviation in map cells (2 for 64x48 maps, 3 for 96x72).
        unbiased: DARK encoding and decoding.
        blur_kernel: DARK blur kernel size (odd); default ``default_blur_kernel(sigma)``.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        sigma: float = 2.0,
        unbiased: bool = True,
        blur_kernel: int | None = None,
    ) -> None:
        super().__init__(input_size, heatmap_size, sigma)
        self.unbiased = bool(unbiased)
        self.blur_kernel = default_blur_kernel(self.sigma) if blur_kernel is None else int(blur_kernel)
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd integer, got {self.blur_kernel}")

    def __repr__(self) -> str:
        return (
            f"MSRAHeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
            f"sigma={self.sigma}, unbiased={self.unbiased}, blur_kernel={self.blur_kernel})"
        )

    # -- encoding ----------------------------------------------------------------------------------
    def centres(self, keypoints: np.ndarray) -> np.ndarray:
        """Gaussian centres (K,2) in map units: exact when unbiased, else ``int(x / stride + 0.5)``."""
        mu = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2) / np.asarray(self.stride)
        return mu if self.unbiased else np.trunc(mu + 0.5)

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        """Targets for one instance: ``heatmap`` (K,H,W) and ``keypoint_weights`` (K,) float32."""
        mu = self.centres(keypoints)
        weights = keypoint_weights(mu, visible, self.heatmap_size, 3.0 * self.sigma)
        heatmap = gaussian_targets(mu, weights, self.heatmap_size, self.sigma, truncate=not self.unbiased)
        return {"heatmap": heatmap, "keypoint_weights": weights}

    # -- decoding ----------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_heatmaps(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (B,K,2) in input pixels and scores (B,K) from (B,K,H,W) heatmaps."""
        maps = heatmaps.float()
        x, y, scores = heatmap_argmax(maps)
        coords = torch.stack([x, y], dim=-1).to(maps.dtype)
        if self.unbiased:
            coords = coords + refine_dark(maps, x, y, self.blur_kernel)
        else:
            coords = coords + refine_quarter(maps, x, y)
        stride = coords.new_tensor(self.stride)
        return coords * stride, scores

    def decode(self, outputs: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode head outputs ``{"heatmap": (B,K,H,W)}`` to keypoints (B,K,2) input px and scores (B,K)."""
        return self.decode_heatmaps(outputs["heatmap"])

    def flip_back(self, heatmaps: torch.Tensor, flip_indices: FlipIndices) -> torch.Tensor:
        """Bring heatmaps predicted on the mirrored image back into the original image frame.

        The mirrored image maps input pixel ``u`` to ``u' = w - 1 - u``; with map coordinate ``x = u / s``
        (``s = w / W``) a point at map ``x`` in the original sits at ``x' = W - 1/s - x`` in the mirrored map.
        Flipping the mirrored map's columns (``j -> W - 1 - j``) lands it at ``x - (1 - 1/s)``, so the
        flipped-back map must move right by ``delta = 1 - 1/s`` cells: 0.75 at stride 4 (MSRA's 1-cell shift
        approximates this), 0.9375 at stride 16, 0 at stride 1. The fractional shift uses linear
        interpolation. Channels are then permuted with ``flip_indices`` (channel ``k`` takes the mirrored
        image's channel ``flip_indices[k]``).
        """
        maps = swap_pairs(heatmaps.flip(-1), flip_indices)
        return shift_right(maps, 1.0 - 1.0 / self.stride[0])

    @torch.no_grad()
    def decode_flip(self, outputs: HeadOutputs, flipped_outputs: HeadOutputs,
                    flip_indices: FlipIndices) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip test at heatmap level (not :class:`sar.codecs.flip.CoordinateFlip`'s coordinate merge): average
        the heatmaps with the flipped-back mirrored pass, then decode once."""
        back = self.flip_back(flipped_outputs["heatmap"].float(), flip_indices)
        return self.decode_heatmaps(0.5 * (outputs["heatmap"].float() + back))
