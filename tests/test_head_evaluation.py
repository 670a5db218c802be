"""A head's `evaluation:` block overrides task.evaluation (SAR's keypoint-score threshold)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from sar.train import merge_head_evaluation


@pytest.mark.parametrize(("overrides", "thr"), [
    ([], 0.0),                              # SAR default: every keypoint score counts in the instance score
    (["head=heatmap"], 0.2),                # heatmap scores are peaks: mmpose's threshold
    (["experiment=coco_r50_sar"], 0.2),     # paper rows use the released protocol
    (["head.evaluation.kpt_score_thr=0.5"], 0.5),
])
def test_head_evaluation_overrides_task(overrides: list[str], thr: float) -> None:
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    merge_head_evaluation(cfg)
    assert cfg.task.evaluation.kpt_score_thr == thr
    assert cfg.task.evaluation.nms_thr == 0.9 and cfg.task.evaluation.score_mode == "bbox_keypoint"
