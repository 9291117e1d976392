#!/usr/bin/env bash
# DreamBooth on the GPU machine, two parts, about 6 minutes on 1x H200 (each part has a timeout):
#  1. issue 16.5: benchmarks/dreambooth_shapes.py: ldm-shapes on a two-colour star subject, full
#     and LoRA, with/without prior preservation, judged (subject/prompt fidelity, drift)
#     -> $OUT/dreambooth_shapes.json + 4 validation grids (PNG);
#  2. issue 16.6: benchmarks/dreambooth_device.py: SD1.5 architecture, random weights, 512 px,
#     gradient checkpointing + bf16, LoRA and full: peak memory and s/step of `t2i dreambooth`
#     vs diffusers' train_dreambooth(_lora).py training step, same run
#     -> $OUT/dreambooth_device.json.
# No weights are written (the shapes runs' LoRAs are benchmarks, not shipped models).
#
# Run from the repo root:  OUT=/path bash benchmarks/dreambooth_device.sh
# Needs peft (a runtime dependency of t2i_dreambooth) and, for the baseline, diffusers. Neither
# is on the GPU machine: carry their wheels in .whl/ (here: `pip download peft accelerate
# diffusers -d .whl`); this script installs them with `pip install --no-index --find-links
# .whl`. Without diffusers the baseline entries are null.
# CPU check here:  OUT=/tmp/x STEPS=2 WARMUP=1 DEVICE=cpu SIZE=64 TINY=1 SHAPES_STEPS=2 SEEDS=2 \
#   CLASS_IMAGES=2 GEN_STEPS=2 RUNS=lora+prior bash benchmarks/dreambooth_device.sh
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python -m pip install -q --no-index --no-deps .whl/structlog-*.whl 2>/dev/null || true
  for pkg in psutil accelerate peft diffusers; do
    python -c "import $pkg" 2>/dev/null || \
      python -m pip install --no-index --find-links .whl "$pkg" >/dev/null 2>&1 || \
      echo "warning: $pkg not installable from .whl/" >&2
  done
fi
python -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm \
  -e plugins/t2i_dreambooth
export TQDM_DISABLE=1
STEPS=${SHAPES_STEPS:-400} timeout ${SHAPES_TIMEOUT:-180} python benchmarks/dreambooth_shapes.py \
  2> >(tee "$OUT/dreambooth_shapes.log" >&2) || echo "dreambooth_shapes.py failed or timed out" >&2
timeout ${SD_TIMEOUT:-270} python benchmarks/dreambooth_device.py \
  2> >(tee "$OUT/dreambooth_device.log" >&2) || echo "dreambooth_device.py failed or timed out" >&2
ls -la "$OUT"
