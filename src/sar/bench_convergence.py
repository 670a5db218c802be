"""``python -m sar.bench convergence``: does SAR overtake the heatmap head with more training?

SAR and the heatmap head are trained on the embedded default for several budgets (6, 18 and 36 epochs by
default; ``--budgets``), each budget a full run with its own schedule (the cosine decay spans the run, as a user
who trains for that long gets), everything else at the defaults plus the command line's overrides. The block
gives AP, AP75 and the keypoint error per head and budget, and a plot (PNG, matplotlib) next to the markdown file.

The runs are resumable pieces: each (head, budget) trains in a fixed directory,
``outputs/bench/convergence-<overrides hash>/<head>-<E>ep``; run the command again after an interruption and
finished runs are read back (``sar.train`` returns a finished run's saved metrics), unfinished ones resume from
their ``last.ckpt``. Budgets run shortest first, so a partial run already answers for the short budgets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sar.bench import timed_train

__all__ = ["BUDGETS", "HEADS", "bench_convergence", "convergence_plot", "convergence_table"]

BUDGETS: tuple[int, ...] = (6, 18, 36)
HEADS: tuple[str, ...] = ("sar", "heatmap")
METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "AR", "kpt_error_px", "train_seconds", "epochs")


def run_root(extra: Sequence[str], root: Path = Path("outputs") / "bench") -> Path:
    """The folder of one set of runs: the overrides' hash in its name, so other overrides never resume these."""
    digest = hashlib.sha1("\0".join(extra).encode()).hexdigest()[:8]
    return root / f"convergence-{digest}"


def bench_convergence(extra: Sequence[str], budgets: Sequence[int] = BUDGETS, heads: Sequence[str] = HEADS,
                      root: Path | None = None) -> dict[str, Any]:
    """Train each head for each budget (shortest budget first), resuming or reading back earlier pieces;
    returns ``{"runs": {head: {epochs: metrics}}, "overrides": [...]}``."""
    root = run_root(extra) if root is None else root
    runs: dict[str, dict[int, dict[str, Any]]] = {head: {} for head in heads}
    for epochs in sorted(int(e) for e in budgets):
        for head in heads:
            overrides = [f"head={head}", f"trainer.max_epochs={epochs}", *extra]
            runs[head][epochs] = timed_train(overrides, root / f"{head}-{epochs}ep", keys=METRICS)
    return {"runs": runs, "overrides": list(extra)}


def convergence_plot(result: Mapping[str, Any], path: Path) -> Path:
    """AP and keypoint error against the training budget, one line per head, written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ap, ax_err) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, (head, per_budget) in enumerate(result["runs"].items()):
        epochs = sorted(per_budget, key=int)
        colour = f"C{i}"  # one colour per head: AP solid, AP75 dashed
        ax_ap.plot(epochs, [per_budget[e]["AP"] for e in epochs], marker="o", color=colour, label=f"{head} AP")
        ax_ap.plot(epochs, [per_budget[e]["AP75"] for e in epochs], marker="s", linestyle="--", color=colour,
                   label=f"{head} AP75")
        ax_err.plot(epochs, [per_budget[e]["kpt_error_px"] for e in epochs], marker="o", color=colour, label=head)
    ax_ap.set(xlabel="training epochs (full schedule each)", ylabel="val AP", title="COCO OKS AP")
    ax_err.set(xlabel="training epochs (full schedule each)", ylabel="px", title="keypoint error")
    for ax in (ax_ap, ax_err):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def convergence_table(result: Mapping[str, Any], plot: str | None = None) -> str:
    """The markdown block: one row per budget, both heads side by side, SAR's lead in AP points."""
    runs = result["runs"]
    heads = list(runs)
    budgets = sorted({int(e) for per in runs.values() for e in per})
    head_cols = " | ".join(f"{h} AP | {h} AP75 | {h} kpt err (px)" for h in heads)
    lines = [f"| epochs | {head_cols} | SAR - heatmap AP |", "|---" * (2 + 3 * len(heads)) + "|"]
    for e in budgets:
        cells = []
        for h in heads:
            r = runs[h].get(e) or runs[h].get(str(e))
            cells.append("- | - | -" if r is None else f"{r['AP']:.3f} | {r['AP75']:.3f} | {r['kpt_error_px']:.2f}")
        lead = "-"
        if "sar" in runs and "heatmap" in runs:
            a, b = runs["sar"].get(e), runs["heatmap"].get(e)
            if a and b:
                lead = f"{100 * (a['AP'] - b['AP']):+.1f}"
        lines.append(f"| {e} | " + " | ".join(cells) + f" | {lead} |")
    commands = [f"- `{r['command']}` ({r.get('train_seconds', '?')} s training)"
                for h in heads for _, r in sorted(runs[h].items(), key=lambda kv: int(kv[0]))]
    text = "\n".join(lines) + "\n\nRuns (each its own schedule; resumable):\n" + "\n".join(commands) + "\n"
    if plot:
        text += f"\n![SAR and heatmap against the training budget]({plot})\n"
    return text
