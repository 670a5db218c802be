"""Evaluation: COCO keypoint AP (rescoring, OKS-NMS, COCOeval), keypoint pixel error, atomic result files."""

from sar.evaluation.coco_ap import (
    METRIC_NAMES,
    CocoEvaluator,
    instance_score,
    oks_iou,
    oks_nms,
    pairwise_oks,
)
from sar.evaluation.keypoint_error import keypoint_error, load_coco_dict, pck
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
    "pck",
    "write_json_atomic",
    "write_metrics",
]
