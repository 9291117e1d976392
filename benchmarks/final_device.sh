#!/usr/bin/env bash
# DEVICE-READY: one GPU call, measurements in turn (each part time-boxed), then two side by side:
#  1. issue 16.6: benchmarks/dreambooth_device.py, SD1.5 architecture at 512 px: t2i LoRA and
#     full vs diffusers' train_dreambooth(_lora).py step (kernels auto), then t2i again with
#     T2I_KERNELS=ref -> dreambooth_device.json, dreambooth_device_ref.json;
#  2. issue 15.6: benchmarks/gan_speed.py, gan-shapes (random weights, its architecture) vs
#     ldm-shapes at batch 1 and 64, fp32 and fp16 -> gan_speed_gpu.json;
#  3. side by side: issue 16.5's missing row (benchmarks/dreambooth_shapes.py RUNS=lora+prior)
#     and issue 18.1's GPU test (tests/test_compile_models.py on CUDA) -> dreambooth_shapes.json,
#     compile_gpu.log.
# Usage (there, from a code snapshot folder whose parent is the repo copy; diffusers + structlog
#   wheels in $WHL, MiniLM in $MINILM):
#   OUT=... MINILM=../.minilm16 WHL=../.whl bash benchmarks/final_device.sh
set -uo pipefail
start=$(date +%s)
: "${OUT:?set OUT}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHL:-.whl}"/*.whl
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm -e plugins/t2i_gan \
  -e plugins/t2i_dreambooth -e plugins/t2i_imagen -e plugins/t2i_dalle > /tmp/install.log 2>&1 \
  || { tail /tmp/install.log; exit 1; }
python3 benchmarks/minilm_travel.py unpack "${MINILM:-.minilm16}" /tmp/minilm > /tmp/minilm.log 2>&1
export T2I_MINILM_PATH=/tmp/minilm
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
stamp() { echo "== $1 after $(( $(date +%s) - start )) s"; }

stamp "setup"
OUT=$OUT STEPS=${SD_STEPS:-10} WARMUP=4 timeout "${SD_TIMEOUT:-170}" python3 benchmarks/dreambooth_device.py \
  > "$OUT/dreambooth_device.log" 2>&1 || echo "dreambooth_device.py failed or timed out"
grep -E "^(lora|full) " "$OUT/dreambooth_device.log"
stamp "dreambooth sd (auto + diffusers)"
OUT=$OUT STEPS=${SD_STEPS:-10} WARMUP=4 BASELINE=0 TAG=_ref T2I_KERNELS=ref timeout "${REF_TIMEOUT:-80}" \
  python3 benchmarks/dreambooth_device.py > "$OUT/dreambooth_device_ref.log" 2>&1 \
  || echo "dreambooth_device.py (ref) failed or timed out"
grep -E "^(lora|full) " "$OUT/dreambooth_device_ref.log"
stamp "dreambooth sd (ref)"
timeout "${GAN_TIMEOUT:-75}" python3 benchmarks/gan_speed.py --device cuda --random-gan /tmp/rgan \
  --dtypes float32,float16 --repeats 10 --ldm-repeats 3 --out "$OUT/gan_speed_gpu.json" \
  > "$OUT/gan_speed.log" 2>&1 || echo "gan_speed.py failed or timed out"
grep -E "^float" "$OUT/gan_speed.log"
stamp "gan speed"
left=$(( ${TOTAL:-455} - ($(date +%s) - start) ))
OUT=$OUT RUNS=lora+prior timeout "$left" python3 benchmarks/dreambooth_shapes.py \
  > "$OUT/dreambooth_shapes.log" 2>&1 & shapes_pid=$!
timeout "$(( left - 5 ))" python3 -m pytest -q tests/test_compile_models.py -m gpu > "$OUT/compile_gpu.log" 2>&1 & compile_pid=$!
wait "$shapes_pid" || echo "dreambooth_shapes.py failed or timed out"
wait "$compile_pid"; echo "compile test rc $?"
tail -3 "$OUT/compile_gpu.log"
grep -E "^(base|lora)" "$OUT/dreambooth_shapes.log" | cut -c1-400
stamp "all"
# at most 8 files come back: everything in one archive
tar -czf /tmp/results.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/results.tgz "$OUT/"
ls -la "$OUT"
