"""Evaluation: COCO keypoint AP (rescoring, OKS-NMS, COCOeval), keypoint pixel error, atomic result files."""

from sar.evaluation.coco_ap import (
    METRIC_NAMES,
    CocoEvaluator,
    instance_score,
    oks_iou,
    oks_nms,
    pairwise_oks,
)

# `pck` (the function) stays in sar.evaluation.keypoint_error: re-exported here it would hide the module
# sar.evaluation.pck (the MPII PCKh evaluator), e.g. from `_target_: sar.evaluation.pck.MpiiEvaluator`.
from sar.evaluation.keypoint_error import keypoint_error, load_coco_dict
from sar.evaluation.results import write_json_atomic, write_metrics

__all__ = [
    "METRIC_NAMES",
    "CocoEvaluator",
    "instance_score",
    "keypoint_error",
    "load_coco_dict",
    "oks_iou",
    "oks_nms",
    "pairwise_oks",
    "write_json_atomic",
    "write_metrics",
]
