#!/usr/bin/env bash
# ONNX Runtime vs torch on the GPU machine: benchmarks/onnx_speed.py for ldm-shapes, writing
# $OUT/onnx_speed_gpu.json (and the CPU numbers of the same machine, onnx_speed_cpu.json).
# Needs onnxruntime-gpu (CUDAExecutionProvider) in the environment; without it the GPU run is
# skipped and the JSON says so. Wall time: about 3 minutes. Env: DEVICE (cuda), STEPS (50).
set -euo pipefail
OUT=${OUT:?set OUT to an empty folder}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-50}
REPEATS=${REPEATS:-20}
pip install -q --no-deps -e plugins/t2i_onnx
EXPORT=$(mktemp -d)
python benchmarks/onnx_speed.py --device cpu --steps "$STEPS" --repeats "$REPEATS" \
  --export-dir "$EXPORT" --threads 8 --out "$OUT/onnx_speed_cpu.json"
if [ "$DEVICE" = cpu ]; then exit 0; fi
if python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
  python benchmarks/onnx_speed.py --device "$DEVICE" --steps "$STEPS" --repeats "$REPEATS" \
    --export-dir "$EXPORT" --out "$OUT/onnx_speed_gpu.json"
else
  python -c "import json, onnxruntime as o; print(json.dumps({'skipped': 'no CUDAExecutionProvider: pip install onnxruntime-gpu', 'providers': o.get_available_providers()}))" > "$OUT/onnx_speed_gpu.json"
fi
