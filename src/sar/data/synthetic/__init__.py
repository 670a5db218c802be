"""Embedded default dataset: synthetic people written in the real COCO keypoints format (and, on request, in
the layouts of COCO-WholeBody, CrowdPose, MPII and OCHuman).

Every image is rendered procedurally from its own ``numpy.random.Generator`` seeded with
``(seed, split, index)``, so an image does not depend on how many images are generated, and the
whole dataset is reproducible bit for bit from :class:`SyntheticConfig`.

The modules, each importing only those above it:

* :mod:`~sar.data.synthetic.config`: :class:`SyntheticConfig`, :func:`config_hash`, the generator version and
  the rng streams.
* :mod:`~sar.data.synthetic.shapes`: polygons, shaded limbs and colours.
* :mod:`~sar.data.synthetic.figure`: the figure model (sampling one person, its COCO keypoints and the extra
  points of the other formats).
* :mod:`~sar.data.synthetic.renderer`: scenes (background, clutter, people, occluders, sensor noise), the
  occlusion rule, :func:`render_image` and :func:`render_split`.
* :mod:`~sar.data.synthetic.coco`: the COCO writer :func:`generate`, detector boxes, the completion marker.
* :mod:`~sar.data.synthetic.formats`: the other benchmarks' writers.
* :mod:`~sar.data.synthetic.cache`: :func:`generate_format` and the cache :func:`ensure_synthetic`.
* :mod:`~sar.data.synthetic.preview`: :func:`render_preview`, a PNG grid of annotated images.
* :mod:`~sar.data.synthetic.cli`: ``python -m sar.data.synthetic``.
"""

from sar.data.synthetic.cache import FORMATS, ensure_synthetic, generate_format
from sar.data.synthetic.cli import main
from sar.data.synthetic.coco import COMPLETE_MARKER, generate, is_complete, write_marker
from sar.data.synthetic.config import GENERATOR_VERSION, SyntheticConfig, config_hash
from sar.data.synthetic.figure import EXTRA_NAMES, KEYPOINT_NAMES, NUM_EXTRA, NUM_KPTS, SKELETON
from sar.data.synthetic.preview import render_preview
from sar.data.synthetic.renderer import render_image, render_split

__all__ = [
    "COMPLETE_MARKER",
    "EXTRA_NAMES",
    "FORMATS",
    "GENERATOR_VERSION",
    "KEYPOINT_NAMES",
    "NUM_EXTRA",
    "NUM_KPTS",
    "SKELETON",
    "SyntheticConfig",
    "config_hash",
    "ensure_synthetic",
    "generate",
    "generate_format",
    "is_complete",
    "main",
    "render_image",
    "render_preview",
    "render_split",
    "write_marker",
]
