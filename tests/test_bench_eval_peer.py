"""``python -m sar.bench eval`` and ``peer``: the synthetic COCO-scale set, the backends' agreement, the peer
section's rounds and ratios (with stand-in peer scripts), the parameter counts against mmpose's, the blocks.

With ``SAR_PEER_PYTHON`` set to an mmpose 1.3.2 venv's python, the eval section is also checked against
mmpose's CocoMetric (skipped otherwise)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sar import bench, bench_eval, bench_peer

# mmpose 1.3.2's parameter counts (bench_model.py's "params=" line: model.parameters(), the RLE flow included)
MMPOSE_PARAMS = {"heatmap": 33_999_697, "rle": 23_701_148}


def test_synthetic_set_is_deterministic_and_sized() -> None:
    gt, preds = bench_eval.synthetic_coco_val(40, 700, seed=3)
    gt2, preds2 = bench_eval.synthetic_coco_val(40, 700, seed=3)
    assert len(gt["images"]) == 40 and len(preds) == 700
    assert gt == gt2
    assert all(np.array_equal(a["keypoints"], b["keypoints"]) for a, b in zip(preds, preds2, strict=True))
    ids = [p["image_id"] for p in preds]
    assert ids == sorted(ids) and set(ids) <= {im["id"] for im in gt["images"]}
    low = sum(not (p["keypoints"][:, 2] > 0.2).any() for p in preds)
    assert 0.1 * 700 < low < 0.3 * 700  # about a fifth scored 0 by bbox_keypoint: ties
    with pytest.raises(ValueError, match="at least one"):
        bench_eval.synthetic_coco_val(0, 10)


def test_eval_section_backends_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    result = bench_eval.bench_eval(60, 1200, peer_python=None)
    py, fast = result["backends"]["pycocotools"], result["backends"]["faster_coco_eval"]
    assert result["max_abs_diff_between_backends"] <= 1e-9
    assert py["AP"] == pytest.approx(fast["AP"], abs=1e-12) and 0.05 < py["AP"] < 0.95
    assert py["results"] == fast["results"] < 1200  # OKS-NMS removed the near-duplicates
    assert py["speedup_vs_pycocotools"] == 1.0
    table = bench_eval.eval_table(result)
    assert "| sar, faster_coco_eval |" in table and "No peer given" in table


@pytest.mark.skipif(not os.environ.get("SAR_PEER_PYTHON"), reason="SAR_PEER_PYTHON (mmpose 1.3.2 python) not set")
def test_eval_section_equals_mmpose_coco_metric() -> None:
    result = bench_eval.bench_eval(80, 1600, peer_python=os.environ["SAR_PEER_PYTHON"])
    assert result["peer"]["max_abs_diff_to_sar"] <= 1e-9
    assert result["peer"]["results"] == result["backends"]["pycocotools"]["results"]


def _fake_peer(tmp_path: Path) -> Path:
    """Stand-ins for ../shared/peer's scripts printing the lines the section parses (fixed rates)."""
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "bench_pipeline.py").write_text(
        "import os, sys\nassert os.path.isfile(os.environ['PEER_DIR'] + '/data/test_coco.json')\n"
        "print('instances_per_pass=12 passes=%s samples=1 time_s=1 samples_per_s=100.0' % sys.argv[1])\n")
    (peer / "bench_model.py").write_text(
        "import sys\nname = sys.argv[1]\nrate = {'heatmap': '4.00', 'rle': '5.00'}[name]\n"
        "print(f'model={name} params=' + str({'heatmap': 33999697, 'rle': 23701148}[name]) + ' threads=' + sys.argv[4])\n"
        "print(f'RESULT {name} fwd_bwd bs=8 mean_s=1 min_s=1 img_per_s=9.99')\n"
        "print(f'RESULT {name} train_step bs=8 mean_s=1 min_s=1 img_per_s={rate} [clean_iters=4]')\n")
    return peer


def test_peer_section_rounds_and_ratios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        shared_data: Path) -> None:
    sar_rates = iter([250.0, 200.0, 300.0])  # pipeline, one per round
    all_rows = iter([180.0, 150.0, 210.0])  # the same with every JPEG row decoded

    def sar_pipeline(passes: int, coco: Path, rows_only: bool = True) -> dict[str, float]:
        return {"samples_per_s": next(sar_rates if rows_only else all_rows)}

    monkeypatch.setattr(bench_peer, "sar_pipeline_rate", sar_pipeline)
    monkeypatch.setattr(bench_peer, "sar_step_rate",
                        lambda head, iters, threads: {"img_per_s": 6.0, "params": MMPOSE_PARAMS[head]})
    seen_threads = []
    run_peer = bench_peer._run_peer

    def counting_run_peer(*args: object) -> tuple[float, str]:
        seen_threads.append(torch.get_num_threads())
        return run_peer(*args)

    monkeypatch.setattr(bench_peer, "_run_peer", counting_run_peer)
    threads_before = torch.get_num_threads()
    other = 1 if threads_before != 1 else 2
    result = bench_peer.bench_peer(sys.executable, _fake_peer(tmp_path), shared_data / "coco", rounds=3,
                                   threads=other)
    # the benchmark runs at the threads asked for and gives the calling process its own count back
    assert seen_threads == [other] * 9 and torch.get_num_threads() == threads_before
    assert result["threads"] == other
    pipe = result["measures"]["pipeline"]
    assert pipe["mmpose"] == [100.0] * 3 and pipe["sar"] == [250.0, 200.0, 300.0]
    assert (pipe["ratio_median"], pipe["ratio_min"], pipe["ratio_max"]) == (2.5, 2.0, 3.0)
    every_row = result["measures"]["pipeline_all_rows"]
    assert every_row["mmpose"] == [100.0] * 3 and every_row["ratio_median"] == 1.8  # 180 / 100
    assert result["measures"]["step_heatmap"]["ratio_median"] == 1.5  # 6 / 4
    assert result["measures"]["step_rle"]["ratio_median"] == 1.2  # 6 / 5
    assert result["params"]["rle"] == {"sar": 23_701_148, "mmpose": 23_701_148}
    table = bench_peer.peer_table(result)
    assert "| 2.50x (2.00-3.00) | >= 2.5x |" in table and "| 1.80x (1.50-2.10) | (comparison) |" in table
    assert "rle: sar 23,701,148 / mmpose 23,701,148" in table


def test_peer_section_without_peer_and_bad_input(tmp_path: Path, shared_data: Path) -> None:
    assert bench_peer.bench_peer(None, tmp_path, shared_data / "coco") == {"peer": None}
    assert "nothing measured" in bench_peer.peer_table({"peer": None})
    with pytest.raises(FileNotFoundError, match="peer scripts"):
        bench_peer.bench_peer(sys.executable, tmp_path, shared_data / "coco")
    with pytest.raises(ValueError, match="rounds >= 1"):
        bench_peer.bench_peer(sys.executable, tmp_path, shared_data / "coco", rounds=0)
    broken = _fake_peer(tmp_path)
    (broken / "bench_pipeline.py").write_text("raise SystemExit('no mmpose here')\n")
    with pytest.raises(RuntimeError, match="no mmpose here"):
        bench_peer.bench_peer(sys.executable, broken, shared_data / "coco", rounds=1)


@pytest.mark.parametrize("head", ["heatmap", "rle"])
def test_sar_models_have_mmpose_parameter_counts(head: str) -> None:
    """The train-step ratio compares equal architectures: sar's ResNet-50 256x192 heads (model + loss) have
    exactly mmpose's parameter counts."""
    from sar.models.losses import build_loss
    from sar.models.pose_model import build_pose_model
    from sar.utils.config import compose_train_config, to_container

    cfg = to_container(compose_train_config("backbone=resnet50", f"head={head}", "input_size=[192,256]"))
    model, _ = build_pose_model(cfg, 17)
    loss: torch.nn.Module = build_loss(cfg["head"]["loss"])
    assert sum(p.numel() for p in [*model.parameters(), *loss.parameters()]) == MMPOSE_PARAMS[head]


def test_bench_cli_writes_the_blocks(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    bench.main(["peer", "--write", str(out)])
    bench.main(["eval", "--eval-images", "30", "--eval-instances", "400", "--write", str(out)])
    text = out.read_text()
    assert "Command: `python -m sar.bench peer --write" in text and "nothing measured" in text
    assert f"`python -m sar.bench eval --write {out} --eval-images 30 --eval-instances 400`" in text
    assert "400 detected instances over 30 images" in text
