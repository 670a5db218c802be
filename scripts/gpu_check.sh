#!/usr/bin/env bash
# The GPU check behind BENCHMARKS.md's "gpu" block, for a CUDA machine without network access (the project's
# lent accelerator): installs the pure-pip dependencies its image lacks from wheels in .whl/ (if present),
# then runs `python -m sar.bench gpu` (ResNet-50 step at fp32 / bf16-mixed / 16-mixed, and the embedded
# default trained with trainer=gpu as before issue 14, profiled, then bf16 at batch 16 / 32 / 64 with the lr rule:
# sar.bench.GPU_RUNS). About 7 minutes of an H200. Results: $OUT (or ./gpu_check) holds the log, the
# profile of the first run and an updated copy of BENCHMARKS.md.
# The wheels (for the GPU machine's Python, here 3.12), fetched on a machine with network access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     hydra-core omegaconf pycocotools faster-coco-eval albumentations albucore pydantic pydantic_core \
#     annotated-types typing-inspection simsimd stringzilla simplejpeg
#   pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl     # sdist only: build the pure-Python wheel
set -euo pipefail
out=${OUT:-gpu_check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, pytorch_lightning, timm; print('torch', torch.__version__, 'lightning', pytorch_lightning.__version__, 'timm', timm.__version__)"
python3 -m sar.bench gpu --write BENCHMARKS.md "$@" > "$out/gpu.log" 2>&1 || status=$?
cp BENCHMARKS.md "$out/BENCHMARKS.md"
# the profile of the first (before) run: where its time went
for f in outputs/bench/*-gpu-0/fit-gpu-profile.txt; do if [ -f "$f" ]; then cp "$f" "$out/"; fi; done
grep -v -E "━|it/s|^\s*$" "$out/gpu.log" | tail -80
exit "${status:-0}"
