#!/usr/bin/env bash
# DEVICE-READY (issue 18), one device call per PART (each within the 600 s limit):
#   PART=table1: benchmarks/fastpath_table.py --stages sd15,sd21,vae --profile (UNet steps and
#                VAE decode, four variants in one run, with profiler tables);
#   PART=table2: --stages txt2img,shapes,warm, then the GPU compile-clean test
#                (tests/test_compile_models.py -m gpu);
#   PART=step:   the 2026-12-03 run: unet_step_gpu.py (with FP8), FP8's and DeepCache's quality
#                cost on ldm-shapes with the judge.
# Results in $OUT/results.tgz.
# Usage (from the repo root there): OUT=... WHL=.whl PART=table1 bash benchmarks/fastpath_device.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHL:-.whl}"/*.whl
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm > /tmp/install.log 2>&1 \
  || { tail /tmp/install.log; exit 1; }
R=/tmp/results; mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$R/gpu.txt"
case "${PART:-table1}" in
  table1)
    (cd benchmarks && timeout 540 python3 fastpath_table.py --stages sd15,sd21,vae --profile \
      --out "$R/table1.json") > "$R/table1.log" 2>&1
    grep -E "^(sd15|sd21|vae)" "$R/table1.log" ;;
  table2)
    (cd benchmarks && timeout 420 python3 fastpath_table.py --stages txt2img,shapes,warm \
      --out "$R/table2.json") > "$R/table2.log" 2>&1
    grep -E "^(txt2img|ldm_shapes|first_image)" "$R/table2.log"
    timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_compile_models.py \
      > "$R/compile_gpu.log" 2>&1; tail -3 "$R/compile_gpu.log" ;;
  step)
    (cd benchmarks && timeout 330 python3 unet_step_gpu.py --out "$R/unet_step.json") > "$R/unet_step.log" 2>&1
    tail -8 "$R/unet_step.log"
    timeout 100 python3 benchmarks/fp8_error.py --device cuda --dtype float16 --judge --prompts 32 --seeds 2 \
      --out "$R/fp8_error_cuda.json" > "$R/fp8.log" 2>&1; tail -3 "$R/fp8.log"
    timeout 80 python3 benchmarks/deepcache_shapes.py --device cuda --prompts 32 --seeds 2 \
      --out "$R/deepcache_cuda.json" > "$R/deepcache.log" 2>&1; tail -3 "$R/deepcache.log" ;;
  *) echo "PART must be table1, table2 or step"; exit 2 ;;
esac
tar -czf "$OUT/results.tgz" -C "$R" .
