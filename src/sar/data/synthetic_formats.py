"""Former home of the other benchmarks' synthetic writers, now :mod:`sar.data.synthetic.formats`; this name is
kept for existing imports and references."""

from sar.data.synthetic.formats import CROWDPOSE_NAMES, MPII_FROM_FIGURE, WRITERS, crowd_index

__all__ = ["CROWDPOSE_NAMES", "MPII_FROM_FIGURE", "WRITERS", "crowd_index"]
