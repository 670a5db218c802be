"""`python -m sar.export ckpt=<file> [out=<file.onnx>] [opset=N] [exporter=auto|dynamo|torchscript] [tol=1e-4]`

Exports the network of a checkpoint (backbone + neck + head: the raw head tensors, no decoding) to ONNX with a
dynamic batch axis, then runs the file with onnxruntime on a random input (a batch size other than the export's)
and checks that every output agrees with PyTorch within ``tol`` (max abs). A mismatch, a missing output or a
failed export exits with an error; nothing is reported as exported unless the check passed.

Input ``image``: (B, 3, h, w) float32, the crop ImageNet-normalised in RGB order (``input_size`` = (w, h) of the
run config). Outputs, by head (docs/contracts.md): SAR ``logits`` (B,K,H,W), ``offsets`` (B,K,2,H,W), ``heatmap``
(B,K,H,W); heatmap ``heatmap``; heatmap+offset ``heatmap``, ``offsets``; regression ``coords``; RLE ``coords``,
``sigma``. How to decode them to image keypoints: docs/export.md. The file's metadata (and ``<out>.json``) holds
what decoding needs: input size, map size, head, codec, keypoint names, flip indices, normalisation.

Nothing half-done replaces a verified export: the file is written into a temporary folder next to ``out``
(``.<name>.tmp-*``), its metadata added and its parity checked there, and only then are ``<out>`` (with its
external-data file ``<out>.data`` for a model over 2 GiB; smaller ones are one self-contained file) and the sidecar
``<out>.json`` moved into place with ``os.replace``. A failed export or check removes the temporary folder and leaves the previous files as they
were; a new export without external data removes the ``<out>.data`` of an older one.

``exporter=auto`` (default) uses torch's ``torch.export``-based exporter (``dynamo=True``) and falls back to the
TorchScript one (``dynamo=False``) if that fails; the parity check runs on whichever file was written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sar.predict import parse_args
from sar.utils.checkpoint import load_system

log = logging.getLogger("sar.export")

DEFAULTS: dict[str, Any] = {
    "ckpt": "???",
    "out": None,            # null: <checkpoint folder>/<checkpoint stem>.onnx
    "opset": 18,
    "exporter": "auto",     # auto | dynamo | torchscript
    "tol": 1.0e-4,          # max abs difference allowed between onnxruntime and PyTorch
    "check_batch": 3,       # batch size of the parity check (the export traces batch 2: dynamic batch is tested)
    "seed": 0,
}


#: Models up to this size are written as one self-contained ONNX file; larger ones keep their weights in
#: ``<out>.data`` (protobuf's 2 GiB limit, less a margin).
MAX_INLINE_BYTES = 2**31 - 2**24


class ExportWrapper(nn.Module):
    """The pose network with its output dict flattened to a tuple in a fixed order (ONNX outputs by name)."""

    def __init__(self, model: nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = list(output_names)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(image)
        return tuple(outputs[name] for name in self.output_names)


class ParityError(RuntimeError):
    """onnxruntime and PyTorch disagree (or the ONNX file lacks an output)."""


def export_onnx(wrapper: ExportWrapper, example: torch.Tensor, path: Path, opset: int, exporter: str) -> str:
    """Write ``path`` with a dynamic batch axis; returns the exporter used ("dynamo" or "torchscript")."""
    names = wrapper.output_names
    errors = []
    order = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}[exporter]
    for kind in order:
        try:
            if kind == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                torch.onnx.export(wrapper, (example,), str(path), input_names=["image"], output_names=names,
                                  opset_version=max(int(opset), 18), dynamo=True,
                                  dynamic_shapes={"image": {0: batch}}, verbose=False)
            else:
                torch.onnx.export(wrapper, (example,), str(path), input_names=["image"], output_names=names,
                                  opset_version=int(opset), dynamo=False,
                                  dynamic_axes={n: {0: "batch"} for n in ["image", *names]})
            return kind
        except Exception as err:  # noqa: BLE001 - try the next exporter, report all failures at the end
            log.warning("%s export failed: %s: %s", kind, type(err).__name__, str(err).splitlines()[0][:300])
            errors.append(f"{kind}: {type(err).__name__}: {err}")
    raise RuntimeError("ONNX export failed:\n" + "\n".join(errors))


def check_parity(path: Path, wrapper: ExportWrapper, image: torch.Tensor, tol: float,
                 label: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Max abs difference per output between onnxruntime and PyTorch on ``image``; raises ParityError above tol.
    Errors name ``label`` (default: ``path``)."""
    import onnxruntime as ort

    name = path if label is None else label

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_names = [o.name for o in session.get_outputs()]
    if onnx_names != wrapper.output_names:
        raise ParityError(f"{name}: outputs {onnx_names}, expected {wrapper.output_names}")
    got = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    with torch.no_grad():
        ref = [t.detach().cpu().numpy() for t in wrapper(image)]
    diffs = {}
    for name, a, b in zip(onnx_names, got, ref):
        if a.shape != b.shape:
            raise ParityError(f"{name}: output {name} has shape {a.shape} in onnxruntime, {b.shape} in PyTorch")
        diffs[name] = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise ParityError(f"{name}: onnxruntime and PyTorch differ by more than {tol:g} (max abs): {bad}")
    return diffs


def export(cfg: Any) -> dict[str, Any]:
    ckpt = Path(str(cfg.ckpt)).expanduser()
    out = Path(str(cfg.out)) if cfg.out else ckpt.with_suffix(".onnx")
    if str(cfg.exporter) not in ("auto", "dynamo", "torchscript"):
        raise SystemExit(f"exporter must be auto, dynamo or torchscript, got {cfg.exporter!r}")
    system = load_system(ckpt).float()  # the task's system (sar.build); its export interface (sar.systems.base)
    network = system.export_network()
    gen = torch.Generator().manual_seed(int(cfg.seed))
    example = system.export_example(2, gen)
    with torch.no_grad():
        names = list(network(example).keys())
    wrapper = ExportWrapper(network, names).eval()

    made_parent = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp = staging / out.name  # the final name: an external-data file gets its final name too
        exporter = export_onnx(wrapper, example, tmp, int(cfg.opset), str(cfg.exporter))
        with torch.no_grad():
            shapes = {n: ["batch", *t.shape[1:]] for n, t in zip(names, wrapper(example))}
        meta = system.export_metadata(names, shapes)
        _write_onnx_metadata(tmp, meta)
        check = system.export_example(int(cfg.check_batch), gen)
        diffs = check_parity(tmp, wrapper, check, float(cfg.tol), label=out)  # the file as finally written
        meta["export"] = {"exporter": exporter, "opset": _opset(tmp), "checkpoint": str(ckpt),
                          "parity_max_abs": diffs, "tol": float(cfg.tol), "check_batch": int(cfg.check_batch)}
        (staging / f"{out.name}.json").write_text(json.dumps(meta, indent=2))
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made_parent:
            with contextlib.suppress(OSError):
                out.parent.rmdir()  # only if empty
        raise
    shutil.rmtree(staging, ignore_errors=True)
    summary = {"onnx": str(out), "exporter": exporter, "outputs": names,
               "max_abs_diff": max(diffs.values()), "tol": float(cfg.tol), "parity": "ok"}
    log.info("exported %s (%s exporter); onnxruntime vs PyTorch max abs diff per output: %s (tol %g)",
             out, exporter, diffs, float(cfg.tol))
    return summary


def _move_into_place(staging: Path, out: Path) -> None:
    """Move a checked export from ``staging`` to ``out``: its external-data file(s) first, then the model, then
    the sidecar ``<out>.json`` (each with ``os.replace``: same folder, so atomic). An ``<out>.data`` that the new
    export does not have (an older export's) is removed."""
    model, sidecar = staging / out.name, staging / f"{out.name}.json"
    extra = sorted(p for p in staging.iterdir() if p not in (model, sidecar))
    for path in extra:
        os.replace(path, out.parent / path.name)
    os.replace(model, out)
    os.replace(sidecar, Path(f"{out}.json"))
    stale = out.parent / f"{out.name}.data"
    if stale.exists() and all(p.name != stale.name for p in extra):
        stale.unlink()


def _write_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Store the decoding metadata in the ONNX file's ``metadata_props`` (key ``sar``, JSON).

    Weights the exporter wrote as external data (torch's ``torch.export``-based exporter writes ``<path>.data``)
    are folded back into the file when it stays under :data:`MAX_INLINE_BYTES` (one self-contained file; the
    data file is removed), else kept external in ``<path>.data``."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for t in model.graph.initializer if uses_external_data(t)
                 for entry in t.external_data if entry.key == "location"}
    if locations:
        load_external_data_for_model(model, str(path.parent))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "sar", json.dumps(meta)
    data = path.parent / f"{path.name}.data"
    for old in {path.parent / loc for loc in locations}:
        old.unlink(missing_ok=True)  # in memory now; onnx would append to an existing data file
    if model.ByteSize() < MAX_INLINE_BYTES:
        onnx.save(model, str(path))
    else:
        data.unlink(missing_ok=True)
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    for noisy in ("onnx_ir", "onnxscript"):  # per-pass INFO lines of torch's exporter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = parse_args(sys.argv[1:] if argv is None else argv, DEFAULTS, prog="sar.export")
    try:
        summary = export(cfg)
    except ParityError as err:
        log.error("%s", err)
        raise SystemExit(f"ONNX parity check FAILED: {err}") from err
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
