"""``python -m sar.bench peer --peer-python <mmpose 1.3.2 python>``: sar against mmpose, side by side.

The peer scripts of ``../shared/peer`` (its README: the install, what each script times) run in the peer's
Python, interleaved round by round with sar's equivalents in this process, on the same machine, images and
threads:

* **pipeline**: samples/s of one process looping over the 12 instances (with keypoints) of the COCO sample:
  mmpose's ``CocoDataset.__getitem__`` with the ``td-hm_res50_8xb64-210e_coco-256x192`` train pipeline
  (``bench_pipeline.py``) against sar's ``TopDownDataset`` with the default augmentation and the MSRA heatmap
  codec (48x64, sigma 2): every sample decodes its image, no cache of decoded images. sar runs twice: as it
  trains (a JPEG decoded down to the last row its crop reads, ``sar.data.decode``) and with every row decoded,
  mmpose's work per image, so the block shows what the rows-only decoding is worth in the same run.
* **step**: img/s of one ResNet-50 256x192 batch-8 fp32 training step (forward, loss, backward, Adam) with the
  heatmap head and with RLE (``bench_model.py {heatmap,rle} train``, its ``train_step`` line), against sar's
  heatmap and RLE heads; the parameter counts of both sides are reported.

Each of ``rounds`` rounds runs the peer then sar for every measure; the ratio sar/mmpose is taken per round and
reported as the median with its min-max spread. Chunks during which other processes used more than 5 % of the
machine are discarded on both sides (the peer's ``common.clean_timeit``; :func:`clean_chunks` here), up to a
time limit after which the remaining chunks count and the result says so. Without a peer the section returns
``{"peer": None}`` and its block says that nothing was measured.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

FOREIGN_MAX = 0.05
#: Seconds :func:`clean_chunks` waits for uncontended chunks before it times them as they come.
CLEAN_MAX_WALL = 300.0
HEADS = ("heatmap", "rle")


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def clean_chunks(fn: Callable[[], None], n: int, max_wall: float | None = None) -> tuple[list[float], int]:
    """Seconds of ``n`` calls of ``fn`` during which other processes used at most 5 % of the machine's CPU
    (from /proc/stat minus this process's CPU time); the others are re-run. After ``max_wall`` seconds the
    remaining calls are timed as they come (``CLEAN_MAX_WALL`` by default). Returns the times and the number of
    discarded calls."""
    max_wall = CLEAN_MAX_WALL if max_wall is None else max_wall
    times: list[float] = []
    rejected = 0
    start = time.perf_counter()
    cores = os.cpu_count() or 1
    while len(times) < n:
        b0, c0, t0 = _busy_seconds(), sum(os.times()[:2]), time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        foreign = max(0.0, (_busy_seconds() - b0) - (sum(os.times()[:2]) - c0)) / (dt * cores)
        if foreign > FOREIGN_MAX and time.perf_counter() - start < max_wall:
            rejected += 1
            continue
        times.append(dt)
    return times, rejected


def sar_pipeline_rate(passes: int, coco_dir: Path, rows_only: bool = True) -> dict[str, Any]:
    """sar's TopDownDataset in this process over the COCO sample's instances with keypoints, samples/s
    (``rows_only=False``: every JPEG row decoded)."""
    from sar.codecs import build_codec
    from sar.data.formats.coco import load_coco_instances
    from sar.data.spec import load_spec
    from sar.data.topdown import TopDownDataset
    from sar.utils.config import default_augmentation

    spec = load_spec("coco")
    records = load_coco_instances(coco_dir / "test_coco.json", coco_dir, spec)
    codec = build_codec({"_target_": "sar.codecs.heatmap.MSRAHeatmapCodec", "input_size": [192, 256],
                         "heatmap_size": [48, 64], "sigma": 2.0})
    dataset = TopDownDataset(records, spec, codec, train=True, aug=default_augmentation(), seed=0,
                             decode_rows_only=rows_only)
    n = len(dataset)
    for i in range(n):  # warm-up pass, as the peer's
        dataset[i]
    chunk = 5

    def run() -> None:
        for _ in range(chunk):
            for i in range(n):
                dataset[i]

    times, rejected = clean_chunks(run, max(1, passes // chunk))
    return {"samples_per_s": chunk * n * len(times) / sum(times), "instances": n, "rejected": rejected}


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block and restored after it (a benchmark called
    from a longer-lived process, e.g. a test worker, must not change that process's thread count)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def sar_step_rate(head: str, iters: int, threads: int) -> dict[str, Any]:
    """One sar ResNet-50 256x192 batch-8 fp32 training step (forward, loss, backward, Adam) of ``head``, img/s
    (mean over clean iterations after 2 warm-up steps, as the peer's ``train_step`` line), and its parameters."""
    import torch

    from sar.models.losses import build_loss
    from sar.models.pose_model import build_pose_model
    from sar.utils.config import compose_train_config, to_container

    with torch_threads(threads):
        torch.manual_seed(0)
        cfg = to_container(compose_train_config("backbone=resnet50", f"head={head}", "input_size=[192,256]"))
        model, (w, h) = build_pose_model(cfg, 17)
        loss_fn = build_loss(cfg["head"]["loss"])
        params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in loss_fn.parameters())
        model.train()
        batch = 8
        targets = {"heatmap": torch.rand(batch, 17, h, w), "keypoint_weights": torch.ones(batch, 17),
                   "keypoints_norm": torch.rand(batch, 17, 2), "keypoints_rle": torch.rand(batch, 17, 2) - 0.5}
        opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=5e-4)
        # uint8 images, normalised by the network's first step, as mmpose's step includes its data preprocessor
        images = torch.randint(0, 256, (batch, 3, 256, 192), dtype=torch.uint8)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), targets)["total"]
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        times, rejected = clean_chunks(step, iters)
        return {"img_per_s": batch / float(np.mean(times)), "params": int(params), "rejected": rejected}


def _peer_env(peer_dir: Path, coco_dir: Path, work: Path) -> dict[str, str]:
    """PEER_DIR for the peer scripts: a scratch folder whose data/ holds the COCO sample (their README)."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for f in [*coco_dir.glob("*.jpg"), coco_dir / "test_coco.json"]:
        shutil.copy2(f, data / f.name)
    return {**os.environ, "PEER_DIR": str(work), "PYTHONPATH": str(peer_dir)}


def _run_peer(cmd: list[str], peer_dir: Path, env: dict[str, str], pattern: str) -> tuple[float, str]:
    proc = subprocess.run(cmd, cwd=peer_dir, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"peer command {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    match = re.search(pattern, proc.stdout)
    if not match:
        raise RuntimeError(f"peer command {' '.join(cmd)}: no {pattern!r} in its output:\n{proc.stdout[-2000:]}")
    return float(match.group(1)), proc.stdout


def bench_peer(peer_python: str | None, peer_dir: Path, coco_dir: Path, rounds: int = 3, passes: int = 30,
               iters: int = 4, threads: int = 2) -> dict[str, Any]:
    """The measures of the module docstring, ``rounds`` times; sar/mmpose ratios with their spread."""
    if not peer_python:
        return {"peer": None}
    if rounds < 1 or passes < 5 or iters < 1 or threads < 1:
        raise ValueError(f"need rounds >= 1, passes >= 5, iters >= 1, threads >= 1 (got {rounds}, {passes}, "
                         f"{iters}, {threads})")
    if not (peer_dir / "bench_pipeline.py").is_file() or not (peer_dir / "bench_model.py").is_file():
        raise FileNotFoundError(f"{peer_dir} lacks the peer scripts bench_pipeline.py / bench_model.py")
    with torch_threads(threads):
        return _bench_peer(peer_python, peer_dir, coco_dir, rounds, passes, iters, threads)


def _bench_peer(peer_python: str, peer_dir: Path, coco_dir: Path, rounds: int, passes: int, iters: int,
                threads: int) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {m: {"sar": [], "mmpose": []}
                                               for m in ("pipeline", "pipeline_all_rows",
                                                         *(f"step_{h}" for h in HEADS))}
    params: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="sar-peer-") as tmp:
        env = _peer_env(peer_dir, coco_dir, Path(tmp))
        for _ in range(rounds):
            rate, _ = _run_peer([peer_python, "bench_pipeline.py", str(passes)], peer_dir, env,
                                r"samples_per_s=([0-9.]+)")
            rows["pipeline"]["mmpose"].append(rate)
            rows["pipeline"]["sar"].append(sar_pipeline_rate(passes, coco_dir)["samples_per_s"])
            rows["pipeline_all_rows"]["mmpose"].append(rate)
            rows["pipeline_all_rows"]["sar"].append(sar_pipeline_rate(passes, coco_dir, False)["samples_per_s"])
            for head in HEADS:
                rate, out = _run_peer([peer_python, "bench_model.py", head, "train", str(iters), str(threads)],
                                      peer_dir, env, r"RESULT \w+ train_step .*?img_per_s=([0-9.]+)")
                ours = sar_step_rate(head, iters, threads)
                rows[f"step_{head}"]["mmpose"].append(rate)
                rows[f"step_{head}"]["sar"].append(ours["img_per_s"])
                peer_params = re.search(r"params=(\d+)", out)
                params[head] = {"sar": ours["params"], "mmpose": int(peer_params.group(1)) if peer_params else -1}
    result: dict[str, Any] = {"peer": peer_python, "rounds": rounds, "threads": threads, "passes": passes,
                              "iters": iters, "params": params, "measures": {}}
    for name, r in rows.items():
        ratios = [s / m for s, m in zip(r["sar"], r["mmpose"])]
        result["measures"][name] = {"sar": [round(v, 2) for v in r["sar"]],
                                    "mmpose": [round(v, 2) for v in r["mmpose"]],
                                    "ratio_median": round(float(np.median(ratios)), 3),
                                    "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3)}
    return result


TARGETS = {"pipeline": ">= 2.5x", "pipeline_all_rows": "(comparison)", "step_heatmap": ">= 1.3x",
           "step_rle": ">= 1.3x"}
LABELS = {"pipeline": "pipeline, samples/s (one process, COCO sample)",
          "pipeline_all_rows": "pipeline, sar decoding every JPEG row (as mmpose)",
          "step_heatmap": "R50 256x192 batch-8 train step, heatmap, img/s",
          "step_rle": "R50 256x192 batch-8 train step, RLE, img/s"}


def peer_table(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md ``peer`` block of :func:`bench_peer`."""
    if not result.get("peer"):
        return ("No peer given (`--peer-python <mmpose 1.3.2 venv python>`, install: ../shared/peer/README.md): "
                "nothing measured.\n")
    lines = [(f"{result['rounds']} interleaved rounds, {result['threads']} threads; medians per side, ratio "
              "sar/mmpose per round: median (min-max).\n"),
             "| measure | sar | mmpose 1.3.2 | sar/mmpose | target |", "|---|---|---|---|---|"]
    for name, m in result["measures"].items():
        lines.append(f"| {LABELS[name]} | {float(np.median(m['sar'])):.2f} | {float(np.median(m['mmpose'])):.2f} | "
                     f"{m['ratio_median']:.2f}x ({m['ratio_min']:.2f}-{m['ratio_max']:.2f}) | {TARGETS[name]} |")
    lines.append("")
    counts = ", ".join(f"{head}: sar {p['sar']:,} / mmpose {p['mmpose']:,}" for head, p in result["params"].items())
    lines.append(f"Parameters (model + loss): {counts}.\n")
    return "\n".join(lines)
