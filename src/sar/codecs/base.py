"""What every codec with an output map shares (MSRA heatmap, SAR, heatmap+offset): its sizes, validated once."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MapCodec", "size_pair"]


def size_pair(size: Sequence[int]) -> tuple[int, int]:
    """A ``(w, h)`` size as two ints."""
    return int(size[0]), int(size[1])


class MapCodec:
    """Sizes of a codec whose head predicts maps: ``input_size`` ``(w, h)`` pixels, ``heatmap_size`` ``(W, H)``
    cells, the Gaussian ``sigma`` (map cells) of its heatmap target, and the stride per axis ``(w / W, h / H)``
    (map cell ``j`` stands for input pixel ``j * stride``, the MSRA convention). Sizes and sigma must be positive.
    """

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float) -> None:
        self.input_size = size_pair(input_size)
        self.heatmap_size = size_pair(heatmap_size)
        if min(self.input_size) <= 0 or min(self.heatmap_size) <= 0:
            raise ValueError(f"sizes must be positive: input {self.input_size}, heatmap {self.heatmap_size}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.sigma = float(sigma)
        self.stride = (
            self.input_size[0] / self.heatmap_size[0],
            self.input_size[1] / self.heatmap_size[1],
        )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
                f"sigma={self.sigma})")
