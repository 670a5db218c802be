"""Command line: ``python -m sar.data.synthetic --out DIR [knobs] [--preview PNG]`` writes the COCO-format
synthetic dataset (and optionally a preview grid)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from sar.data.synthetic.coco import generate
from sar.data.synthetic.config import SyntheticConfig
from sar.data.synthetic.preview import render_preview

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default: the command line), generate the dataset and report the time taken."""
    parser = argparse.ArgumentParser(description="Generate the synthetic COCO-format keypoint dataset.")
    parser.add_argument("--out", type=Path, required=True, help="output root directory")
    parser.add_argument("--num-train", type=int, default=SyntheticConfig.num_train)
    parser.add_argument("--num-val", type=int, default=SyntheticConfig.num_val)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-people", type=int, default=SyntheticConfig.max_people)
    parser.add_argument("--occlusion", type=float, default=SyntheticConfig.occlusion)
    parser.add_argument("--clutter", type=float, default=SyntheticConfig.clutter)
    parser.add_argument("--overlap", type=float, default=SyntheticConfig.overlap)
    parser.add_argument("--rotation", type=float, default=SyntheticConfig.rotation)
    parser.add_argument("--lr-cue", type=float, default=SyntheticConfig.lr_cue)
    parser.add_argument("--image-size", type=int, nargs=2, default=list(SyntheticConfig.image_size),
                        metavar=("W", "H"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--preview", type=Path, default=None, help="also write a preview PNG grid here")
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                          image_size=tuple(args.image_size), max_people=args.max_people,
                          occlusion=args.occlusion, clutter=args.clutter, overlap=args.overlap,
                          rotation=args.rotation, lr_cue=args.lr_cue)
    t0 = time.perf_counter()
    generate(cfg, args.out, num_workers=args.workers)
    dt = time.perf_counter() - t0
    n = cfg.num_train + cfg.num_val
    print(f"wrote {n} images to {args.out} in {dt:.1f}s ({1000 * dt / max(1, n):.1f} ms/image wall)")
    if args.preview is not None:
        print(f"preview: {render_preview(args.out, args.preview)}")
