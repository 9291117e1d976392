#!/usr/bin/env bash
# DEVICE-READY (issue 18): the UNet-step rows (benchmarks/unet_step_gpu.py), then FP8's and
# DeepCache's quality cost on ldm-shapes with the judge on the GPU; results.tgz in $OUT.
# Usage: OUT=... WHL=../.whl bash benchmarks/fastpath_device.sh   (from a code snapshot)
set -uo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHL:-.whl}"/*.whl
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm > /tmp/install.log 2>&1 \
  || { tail /tmp/install.log; exit 1; }
R=/tmp/results; mkdir -p "$R" "$OUT"
(cd benchmarks && timeout 330 python3 unet_step_gpu.py --out "$R/unet_step.json") > "$R/unet_step.log" 2>&1
tail -8 "$R/unet_step.log"
timeout 100 python3 benchmarks/fp8_error.py --device cuda --dtype float16 --judge --prompts 32 --seeds 2 \
  --out "$R/fp8_error_cuda.json" > "$R/fp8.log" 2>&1; tail -3 "$R/fp8.log"
timeout 80 python3 benchmarks/deepcache_shapes.py --device cuda --prompts 32 --seeds 2 \
  --out "$R/deepcache_cuda.json" > "$R/deepcache.log" 2>&1; tail -3 "$R/deepcache.log"
tar -czf "$OUT/results.tgz" -C "$R" .
