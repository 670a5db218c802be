"""`python -m sar.bench [pipeline|step|train|gpu|all] [--write BENCHMARKS.md]`: the project's speed and accuracy figures.

* ``pipeline``: top-down training pipeline (decode, augment, warp to 256x192, encode SAR targets) on the
  real COCO sample images with 2 workers, samples/s.
* ``step``: ResNet-50 at 256x192, batch 8, one training step (forward, loss, backward, Adam step), img/s,
  heatmap head vs SAR head, and the SAR overhead in percent.
* ``train``: the embedded default end to end (``python -m sar.train``) for the SAR and heatmap heads; reads
  each run's ``metrics.json``.
* ``gpu`` (not part of ``all``; needs CUDA): the ResNet-50 step at batch 64 in fp32 / bf16-mixed / 16-mixed,
  and 6-epoch ``trainer=gpu`` runs of the embedded default before issue 14 (profiled) and with larger batches
  (``GPU_RUNS``), each with its training crops/s, speed-up over the first and mean GPU utilisation.
* ``batch`` (not part of ``all``): the embedded default at batch 16, 64 and 128 with the lr rule of the GPU
  recipe (sqrt scaling, warm-up in samples): the AP each keeps at the usual 6 epochs.
* ``peer`` (``--peer-python <mmpose 1.3.2 python>``): sar against mmpose side by side, pipeline and train-step
  ratios over ``--rounds`` interleaved rounds (sar.bench_peer); without a peer the block says so.
* ``eval``: COCO evaluation at COCO-val scale (``--eval-images`` / ``--eval-instances``, synthetic): rescoring +
  OKS-NMS and COCOeval per backend, and mmpose's CocoMetric with ``--peer-python`` (sar.bench_eval).

With ``--write FILE`` each section's table replaces the block between its markers in FILE, together with
the exact command that produced it, so no figure is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import torch

from sar.utils.config import compose_train_config, to_container
from sar.utils.scale import machine_description

SHARED_DATA = Path(os.environ.get("SAR_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
#: The peer scripts (../shared/peer: mmpose 1.3.2's pipeline and train-step timers, its README).
PEER_DIR = Path(os.environ.get("SAR_PEER_DIR", SHARED_DATA.parent / "peer"))


def run_eval(args: argparse.Namespace) -> dict:
    """The ``eval`` section (sar.bench_eval.bench_eval) with the command line's sizes and peer."""
    from sar.bench_eval import bench_eval

    return bench_eval(args.eval_images, args.eval_instances, args.peer_python, repeat=args.repeat)


def eval_block(result: dict) -> str:
    from sar.bench_eval import eval_table

    return eval_table(result)


def peer_block(result: dict) -> str:
    from sar.bench_peer import peer_table

    return peer_table(result)


def run_peer(args: argparse.Namespace) -> dict:
    """The ``peer`` section (sar.bench_peer.bench_peer) with the command line's peer and rounds."""
    from sar.bench_peer import bench_peer

    return bench_peer(args.peer_python, args.peer_dir, SHARED_DATA / "coco", rounds=args.rounds,
                      passes=args.passes, iters=args.iters, threads=args.threads)


def run_convergence(args: argparse.Namespace) -> dict:
    """The ``convergence`` section (sar.bench_convergence): SAR and heatmap at each of ``--budgets`` epochs; with
    ``--write`` the plot goes to ``benchmarks/convergence.png`` next to the markdown file."""
    from sar import bench_convergence as bc

    result = bc.bench_convergence(args.overrides, budgets=[int(b) for b in args.budgets.split(",")])
    if args.write:
        plot = Path("benchmarks") / "convergence.png"
        bc.convergence_plot(result, args.write.parent / plot)
        result["plot"] = str(plot)
    return result


def convergence_block(result: dict) -> str:
    from sar.bench_convergence import convergence_table

    return convergence_table(result, result.get("plot"))


def _machine() -> str:
    return f"{machine_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def bench_pipeline(seconds: float = 20.0, workers: int = 2) -> dict:
    from sar.codecs import build_codec
    from sar.data.bench_utils import pipeline_throughput
    from sar.data.formats.coco import load_coco_instances
    from sar.data.spec import load_spec
    from sar.data.topdown import TopDownDataset
    from sar.utils.config import default_augmentation

    spec = load_spec("coco")
    coco = SHARED_DATA / "coco"
    records = load_coco_instances(coco / "test_coco.json", coco, spec)
    records = (records * (400 // len(records) + 1))[:400]
    codec = build_codec({"type": "sar", "input_size": [192, 256], "heatmap_size": [48, 64], "sigma": 2.0})
    dataset = TopDownDataset(records, spec, codec, train=True, aug=default_augmentation(), seed=0)
    rate = pipeline_throughput(dataset, num_workers=workers, batch_size=32, seconds=seconds)
    return {"samples_per_s": round(rate, 1), "workers": workers, "records": len(records)}


def bench_image_check(copies: int = 2000) -> dict:
    """The up-front image check (sar.data.image_check) against decoding the same files, in one run: ``copies``
    copies of the real COCO sample images in a temporary folder (page cache warm for both passes)."""
    import tempfile

    import cv2

    from sar.data.image_check import find_bad_images

    sources = sorted((SHARED_DATA / "coco").rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(copies):
            path = Path(tmp) / f"{i:06d}.jpg"
            path.write_bytes(sources[i % len(sources)].read_bytes())
            paths.append(str(path))
        find_bad_images(paths[:50])  # warm-up (thread pool, imports)
        start = time.perf_counter()
        bad = find_bad_images(paths)
        check_s = time.perf_counter() - start
        start = time.perf_counter()
        for path in paths:
            cv2.imread(path, cv2.IMREAD_COLOR)
        decode_s = time.perf_counter() - start
    if bad:
        raise RuntimeError(f"the check flagged {len(bad)} good images: {list(bad)[:3]}")
    return {"files": copies, "check_files_per_s": round(copies / check_s), "decode_files_per_s": round(copies / decode_s),
            "check_vs_decode_speedup": round(decode_s / check_s, 1)}


def bench_step(iters: int = 8, warmup: int = 2, batch: int = 8, device: str = "cpu",
               precision: str = "32") -> dict:
    """Median img/s of full training steps; the two heads' steps are interleaved so drift hits both alike.
    On CUDA, ``precision`` (``32``, ``bf16-mixed``, ``16-mixed``) runs the forward pass under autocast as
    Lightning does (with a gradient scaler for fp16), and each step ends with a synchronize."""
    from sar.models.losses import build_loss
    from sar.models.pose_model import build_pose_model

    torch.manual_seed(0)
    dtype = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device, enabled=dtype is torch.float16)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    setups = {}
    for head in ("heatmap", "sar"):  # the shipped head configs on SimpleBaseline ResNet-50 at 256x192
        cfg = to_container(compose_train_config("backbone=resnet50", f"head={head}", "input_size=[192,256]"))
        model, (w, h) = build_pose_model(cfg, 17)
        model.to(device)
        targets = {"heatmap": torch.rand(batch, 17, h, w, device=device),
                   "keypoint_weights": torch.ones(batch, 17, device=device),
                   "keypoints_norm": torch.rand(batch, 17, 2, device=device)}
        setups[head] = (model, build_loss(cfg["head"]["loss"]), torch.optim.Adam(model.parameters(), lr=1e-4), targets)
    images = torch.randn(batch, 3, 256, 192, device=device)
    times: dict[str, list[float]] = {name: [] for name in setups}
    for i in range(warmup + iters):
        for name, (model, loss_fn, opt, targets) in setups.items():
            sync()
            t0 = time.perf_counter()
            with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
                outputs = model(images)
            loss = loss_fn({k: v.float() for k, v in outputs.items()}, targets)["total"]
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    results = {name: round(batch / sorted(t)[len(t) // 2], 3) for name, t in times.items()}
    results["sar_overhead_pct"] = round(100.0 * (results["heatmap"] / results["sar"] - 1.0), 2)
    results["batch"] = batch
    return results


TOPDOWN_METRICS = ("AP", "AP50", "AP75", "AR", "kpt_error_px", "train_seconds")


def bench_dir(name: str) -> Path:
    """``outputs/bench/<name>``: a benchmark run's folder (a new name per run: a reused folder auto-resumes from its
    last.ckpt, or reads back a finished run)."""
    return Path("outputs") / "bench" / name


def timed_train(overrides: list[str], run_dir: Path, extra: Sequence[str] = (),
                keys: Sequence[str] = TOPDOWN_METRICS) -> dict:
    """One ``python -m sar.train`` run in ``run_dir`` (:func:`bench_dir`): its command, run directory, wall
    seconds and the ``keys`` of its metrics.json."""
    run_dir = Path(run_dir)
    cmd = [sys.executable, "-m", "sar.train", *overrides, f"hydra.run.dir={run_dir}", *extra]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"command": "python -m sar.train " + " ".join(cmd[3:]), "run_dir": str(run_dir),
            "wall_s": round(time.time() - t0, 1), **{k: metrics[k] for k in keys}}


class GpuUtilisation:
    """Mean GPU utilisation (%) while the ``with`` block runs, polled from ``nvidia-smi`` every 0.5 s (None where
    nvidia-smi is missing)."""

    def __enter__(self) -> Self:
        self.mean: float | None = None
        try:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0", "-lms", "500"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self._proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        values = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
        self.mean = round(sum(values) / len(values), 1) if values else None


#: The GPU training runs of the ``gpu`` section, each 6 epochs of the embedded default with ``trainer=gpu``. The
#: first is ``trainer=gpu`` as it stood before issue 14 (16-mixed, batch 16, cudnn autotuning off), profiled
#: with Lightning's SimpleProfiler (where the time goes: loader wait, step, optimiser, callbacks, validation);
#: the others run bf16 with cudnn autotuning and 12 workers at batch 16, then grow the batch with the lr scaled from
#: 16 by the square-root rule and the warm-up kept at the same number of samples (100 steps of 16).
GPU_BEFORE: list[str] = ["trainer.precision=16-mixed", "dataset.batch_size=16", "++trainer.benchmark=false",
                         "dataset.num_workers=8"]


def batch_overrides(batch: int) -> list[str]:
    """The embedded default at ``batch``: the lr scaled from its batch 16 by the square-root rule, the warm-up kept
    at the same number of samples (100 steps of 16 = 1600)."""
    return [f"dataset.batch_size={batch}", "optim.base_batch_size=16", "optim.scale_lr=sqrt",
            f"optim.warmup_iters={max(1, round(1600 / batch))}"]


def gpu_batch_variant(batch: int, workers: int = 12) -> list[str]:
    """Overrides of a ``trainer=gpu`` run at ``batch`` (:func:`batch_overrides`, bf16, cudnn autotuning)."""
    return ["trainer.precision=bf16-mixed", *batch_overrides(batch), "++trainer.benchmark=true",
            f"dataset.num_workers={workers}"]


#: Batches above 32 are left out: on a CPU (`batch` block of BENCHMARKS.md) the sqrt rule at 6 epochs costs 0.11 AP at
#: batch 64 and 0.26 at 128, so their speed-up would not come at unchanged AP.
GPU_RUNS: dict[str, list[str]] = {
    "before: 16-mixed, batch 16, 8 workers": GPU_BEFORE,
    "bf16, batch 16, 12 workers": gpu_batch_variant(16),
    "bf16, batch 32, 12 workers": gpu_batch_variant(32),
    "bf16, batch 64, 12 workers": gpu_batch_variant(64),
}


def bench_gpu(extra: list[str], batch: int = 64) -> dict:
    """On one CUDA device: the ResNet-50 256x192 step at each precision, and 6-epoch ``trainer=gpu`` runs of the
    embedded default (:data:`GPU_RUNS`; learn, write metrics.json), each with its training crops/s and mean GPU
    utilisation. The first run is profiled (SimpleProfiler: ``fit-gpu-profile.txt`` in its run folder).
    Each result is printed as it comes (a cut-off run keeps what it measured)."""
    if not torch.cuda.is_available():
        raise SystemExit("python -m sar.bench gpu: no CUDA device")
    out: dict = {"device": torch.cuda.get_device_name(0), "steps": {}, "runs": {}}
    for precision in ("32", "bf16-mixed", "16-mixed"):
        out["steps"][precision] = bench_step(iters=20, warmup=5, batch=batch, device="cuda", precision=precision)
        print("gpu step", precision, json.dumps(out["steps"][precision]), flush=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for i, (name, overrides) in enumerate(GPU_RUNS.items()):
        run_dir = bench_dir(f"{stamp}-gpu-{i}")
        profiler = []
        if i == 0:
            profiler = ["+trainer.profiler._target_=pytorch_lightning.profilers.SimpleProfiler",
                        f"+trainer.profiler.dirpath={run_dir.resolve()}", "+trainer.profiler.filename=gpu-profile"]
        with GpuUtilisation() as util:
            run = timed_train(["trainer=gpu", *overrides, *profiler, "trainer.max_epochs=6",
                               "trainer.check_val_every_n_epoch=6"], run_dir, extra, (*TOPDOWN_METRICS, "global_step"))
        batch_size = next((int(o.split("=")[1]) for o in overrides if o.startswith("dataset.batch_size=")), 16)
        run["crops_per_s"] = round(run["global_step"] * batch_size / max(run["train_seconds"], 1e-9), 1)
        run["gpu_util"] = util.mean
        out["runs"][name] = run
        print("gpu run", name, json.dumps(run), flush=True)
    return out


#: Batch sizes of the ``batch`` section (the first is the default's).
BATCHES: tuple[int, ...] = (16, 64, 128)


def bench_batch(extra: list[str], batches: Sequence[int] = BATCHES) -> dict:
    """Does the embedded default keep its AP at a larger batch with the lr rule (:func:`batch_overrides`)? The
    SAR head trained for its usual budget (6 epochs, same trainer) at each of ``batches``: the accuracy half of
    the GPU recipe's speed-up (a GPU runs larger batches faster; on a CPU the time per epoch barely changes)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out = {}
    for batch in batches:
        run = timed_train(batch_overrides(batch), bench_dir(f"{stamp}-batch-{batch}"), extra,
                          (*TOPDOWN_METRICS, "global_step"))
        out[f"batch {batch}"] = run
    return out


def bench_train(extra: list[str], fresh_data: bool = False) -> dict:
    """`python -m sar.train head=sar` then `head=heatmap` with the defaults. ``fresh_data``: both runs use an
    empty dataset cache, so the first run's wall time includes generating the synthetic dataset (as on a fresh
    clone); the second reuses it."""
    out = {}
    if fresh_data:
        import tempfile

        extra = [f"dataset.cache_dir={tempfile.mkdtemp(prefix='sar-bench-data-')}", *extra]
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for head in ("sar", "heatmap"):
        out[head] = timed_train([f"head={head}"], bench_dir(f"{stamp}-default-{head}"), extra)
    return out


def _table(section: str, result: dict, first: str = "head") -> str:
    if section == "pipeline":
        return (f"| workers | samples/s |\n|---|---|\n| {result['workers']} | {result['samples_per_s']} |\n\n"
                "Target: the sar/mmpose pipeline ratio of the `peer` block (>= 2.5x).\n")
    if section == "gpu":
        lines = [f"Device: {result['device']}.\n", "| precision | heatmap img/s | SAR img/s | SAR overhead % |",
                 "|---|---|---|---|"]
        for precision, r in result["steps"].items():
            lines.append(f"| {precision} | {r['heatmap']} | {r['sar']} | {r['sar_overhead_pct']} |")
        batch = next(iter(result["steps"].values()))["batch"]
        lines.append(f"\n(ResNet-50 256x192, batch {batch}, full training step.)\n")
        runs = result["runs"]
        lines.append("| run (SAR head, 6 epochs) | crops/s | speed-up | GPU util % |\n|---|---|---|---|")
        first = next(iter(runs.values()), {}).get("crops_per_s")
        for name, r in runs.items():
            speedup = f"{r['crops_per_s'] / first:.2f}x" if first and r.get("crops_per_s") else "-"
            lines.append(f"| {name} | {r.get('crops_per_s', '-')} | {speedup} | {r.get('gpu_util', '-')} |")
        return "\n".join(lines) + "\n\n" + _table("train", runs, first="run (SAR head)")
    if section == "batch":
        rows = ["| run (SAR head, 6 epochs) | steps | AP | AP75 | kpt error (px) | AP vs first | train s | command |",
                "|---" * 8 + "|"]
        first = next(iter(result.values()))["AP"]
        for name, r in result.items():
            rows.append(f"| {name} | {r['global_step']} | {r['AP']:.3f} | {r['AP75']:.3f} | {r['kpt_error_px']:.2f} | "
                        f"{r['AP'] - first:+.3f} | {r['train_seconds']} | `{r['command']}` |")
        return "\n".join(rows) + "\n\nTarget (issue 14, the GPU recipe): AP within 0.01 of batch 16.\n"
    if section == "image_check":
        return ("| files | check files/s | decode files/s (cv2.imread) | check / decode speed |\n|---|---|---|---|\n"
                f"| {result['files']} | {result['check_files_per_s']} | {result['decode_files_per_s']} | "
                f"{result['check_vs_decode_speedup']}x |\n")
    if section == "step":
        return ("| head | img/s (batch 8, R50 256x192) |\n|---|---|\n"
                f"| heatmap | {result['heatmap']} |\n| sar | {result['sar']} |\n\n"
                f"SAR head + loss overhead over the heatmap head: {result['sar_overhead_pct']} % (target <= 5 %); "
                "throughput target: the sar/mmpose step ratio of the `peer` block (>= 1.3x).\n")
    rows = [f"| {first} | AP | AP50 | AP75 | AR | kpt error (px) | train s | wall s | command |", "|---" * 9 + "|"]
    for head, r in result.items():
        rows.append(f"| {head} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} | {r['AR']:.3f} | "
                    f"{r['kpt_error_px']:.2f} | {r['train_seconds']} | {r['wall_s']} | `{r['command']}` |")
    return "\n".join(rows) + "\n"


def write_section(path: Path, section: str, command: str, body: str) -> None:
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\nCommand: `{command}` ({time.strftime('%Y-%m-%d')}, {_machine()})\n\n{body}{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
    else:
        text = text.rstrip() + f"\n\n## {section}\n\n{block}\n"
    path.write_text(text)


def section_options(section: str, args: argparse.Namespace) -> str:
    """The options of the command line that shaped a ``peer`` or ``eval`` block (written with it)."""
    opts = []
    if section in ("peer", "eval") and args.peer_python:
        opts.append(f"--peer-python {args.peer_python}")
    defaults = {"peer": {"rounds": 3, "passes": 30, "iters": 4, "threads": 2}, "convergence": {"budgets": "6,18,36"},
                "eval": {"eval_images": 5000, "eval_instances": 100_000, "repeat": 1}}.get(section, {})
    for key, default in defaults.items():
        if getattr(args, key) != default:
            opts.append(f"--{key.replace('_', '-')} {getattr(args, key)}")
    return "".join(" " + o for o in opts)


def task_sections(task: str) -> dict[str, Any]:
    """The ``sar.bench`` sections of a task (``PoseSystem.bench_sections`` of its ``task.system``)."""
    from hydra.utils import get_object

    cfg = compose_train_config(f"task={task}")
    return get_object(str(cfg.task.system["_target_"])).bench_sections()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sar.bench", description=__doc__.split("\n")[0])
    parser.add_argument("section", nargs="?", default="all", help="a section of the task's, or all")
    parser.add_argument("--task", default="topdown", help="the task whose sections run (conf/task/<task>.yaml)")
    parser.add_argument("--write", type=Path, default=None, help="update this markdown file (BENCHMARKS.md)")
    parser.add_argument("--seconds", type=float, default=20.0, help="pipeline measuring time")
    parser.add_argument("--fresh-data", action="store_true",
                        help="train section: start from an empty dataset cache (wall time includes generating it)")
    parser.add_argument("--peer-python", default=None,
                        help="peer and eval sections: the python of an mmpose 1.3.2 venv (../shared/peer/README.md)")
    parser.add_argument("--peer-dir", type=Path, default=PEER_DIR, help="peer section: the peer scripts' folder")
    parser.add_argument("--rounds", type=int, default=3, help="peer section: interleaved rounds")
    parser.add_argument("--passes", type=int, default=30, help="peer section: pipeline passes over the sample")
    parser.add_argument("--iters", type=int, default=4, help="peer section: timed train steps per head")
    parser.add_argument("--threads", type=int, default=2, help="peer section: torch threads on both sides")
    parser.add_argument("--eval-images", type=int, default=5000, help="eval section: synthetic images")
    parser.add_argument("--eval-instances", type=int, default=100_000, help="eval section: detected instances")
    parser.add_argument("--repeat", type=int, default=1, help="eval section: timings are the best of this many")
    parser.add_argument("--budgets", default="6,18,36", help="convergence section: training budgets in epochs")
    parser.add_argument("overrides", nargs="*", help="extra sar.train overrides for the train section")
    args = parser.parse_intermixed_args(argv)
    available = task_sections(args.task)
    if args.section != "all" and args.section not in available:
        parser.error(f"task {args.task!r} has no section {args.section!r} (sections: {', '.join(available)}, all)")
    sections = [s for s in available if s not in ("gpu", "convergence", "batch")] if args.section == "all" else [args.section]
    for section in sections:
        entry = available[section]  # a runner, or (runner, markdown table of its result)
        runner, table = entry if isinstance(entry, tuple) else (entry, lambda r, s=section: _table(s, r))
        result = runner(args)
        print(json.dumps({section: result}, indent=2))
        if args.write:
            cmd = "python -m sar.bench " + section
            if args.task != "topdown":
                cmd += f" --task {args.task}"
            cmd += " --write " + str(args.write)
            if section == "train" and args.fresh_data:
                cmd += " --fresh-data"
            cmd += section_options(section, args)
            if section not in ("pipeline", "step", "image_check", "peer", "eval") and args.overrides:
                cmd += " " + " ".join(args.overrides)
            write_section(args.write, section, cmd, table(result))


if __name__ == "__main__":
    main()
