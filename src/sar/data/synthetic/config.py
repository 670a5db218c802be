"""What determines a synthetic dataset: the knobs (:class:`SyntheticConfig`), the generator version, the cache
hash over both, and the rng streams every image and detector box is drawn from.

Every image is rendered from its own ``numpy.random.Generator`` seeded with ``(seed, stream, index)``
(:func:`image_rng`), so an image does not depend on how many images are generated and the whole dataset is
reproducible bit for bit from the config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = [
    "DET_STREAM",
    "GENERATOR_VERSION",
    "TEST_STREAM",
    "TRAIN_STREAM",
    "VAL_STREAM",
    "SyntheticConfig",
    "config_hash",
    "image_rng",
]

#: Bump when the renderer changes so cached datasets are regenerated.
GENERATOR_VERSION = 1

#: rng stream ids: the train and val images, the val detector boxes, a second evaluation split (OCHuman test).
TRAIN_STREAM, VAL_STREAM, DET_STREAM, TEST_STREAM = 0, 1, 2, 3


@dataclass
class SyntheticConfig:
    """All knobs of the synthetic dataset (every field enters the cache hash)."""

    seed: int = 0
    num_train: int = 2000
    num_val: int = 200
    image_size: tuple[int, int] = (256, 256)  # (w, h)
    min_people: int = 1
    max_people: int = 3
    person_height: tuple[float, float] = (0.45, 0.95)  # fraction of image height
    rotation: float = 35.0  # typical max |in-plane rotation| in degrees
    large_rotation_prob: float = 0.08  # probability of a rotation up to 3x `rotation`
    aspect: float = 0.15  # body width jitter: x scaled by U(1-aspect, 1+aspect)
    occlusion: float = 0.3  # occluder probability per image (and mean count scale)
    clutter: float = 0.5  # background clutter density
    overlap: float = 0.5  # probability a person is placed overlapping an earlier one
    truncation: float = 0.15  # fraction of the person box allowed outside the image
    crowd: float = 0.0  # probability an image gets one crowd region (small people, one `iscrowd` annotation)
    lr_cue: float = 0.0  # strength of the explicit left/right appearance cue (0 disables)
    noise: float = 1.0  # sensor noise / blur strength
    jpeg_quality: int = 95
    det_jitter: float = 0.05  # detector box shift/scale jitter, fraction of box size
    det_miss: float = 0.03  # probability a person is missed by the detector
    det_false_positives: float = 0.3  # mean number of false-positive boxes per image

    def __post_init__(self) -> None:
        self.seed = int(self.seed)
        self.num_train = int(self.num_train)
        self.num_val = int(self.num_val)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.person_height = (float(self.person_height[0]), float(self.person_height[1]))
        self.min_people = int(self.min_people)
        self.max_people = int(self.max_people)
        self.jpeg_quality = int(self.jpeg_quality)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "float" or isinstance(v, float):
                setattr(self, f.name, float(v))
        if self.image_size[0] < 32 or self.image_size[1] < 32:
            raise ValueError(f"image_size too small: {self.image_size}")
        if not 1 <= self.min_people <= self.max_people:
            raise ValueError(f"need 1 <= min_people <= max_people, got {self.min_people}, {self.max_people}")
        if not 0 < self.person_height[0] <= self.person_height[1]:
            raise ValueError(f"bad person_height {self.person_height}")

    @classmethod
    def from_any(cls, cfg: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
        """Build from a config, a plain dict or an OmegaConf mapping (unknown keys raise)."""
        if cfg is None:
            return cls()
        if isinstance(cfg, SyntheticConfig):
            return cfg
        return cls(**{str(k): v for k, v in dict(cfg).items()})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["person_height"] = list(self.person_height)
        return d


def config_hash(cfg: SyntheticConfig, fmt: str = "coco") -> str:
    """Short stable hash of the config, the generator version and the output format (see ``FORMATS``)."""
    extra = {} if fmt == "coco" else {"format": fmt}  # COCO hashes predate the other formats
    fields_ = cfg.to_dict()
    if not fields_["crowd"]:  # hashes predate the crowd knob: without crowds, the data are those of then
        del fields_["crowd"]
    payload = json.dumps({"v": GENERATOR_VERSION, **fields_, **extra}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of rng stream ``stream`` (image, or the detector boxes of an image)."""
    return np.random.default_rng([int(seed), int(stream), int(index)])
