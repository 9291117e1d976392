#!/usr/bin/env bash
# DEVICE-READY: one GPU call, three jobs side by side on the one H200 (issues 13 and 15):
#  1. the full-size IF-I-M / IF-II-M check (benchmarks/if_full_size.py; needs diffusers from
#     .whl/), while the other two render their data on the CPU;
#  2. imagen-shapes round 2: both stages continued from the shipped weights
#     (INIT=... benchmarks/imagen_device.sh), its eval at noise_level 100, then the SR stage's
#     noise-augmentation comparison at levels 0 and 250 (benchmarks/imagen_noise_levels.py);
#  3. gan-shapes: `t2i train gan` (standardised MiniLM conditioning + projection term), then
#     `t2i eval gan-shapes --checkpoint` on the GPU.
# Usage (there, from a code snapshot folder whose parent is the repo copy):
#   OUT=... MINUTES=9.3 bash benchmarks/imagen_gan_device.sh
# MiniLM travels packed (.minilm16, benchmarks/minilm_travel.py), wheels in .whl/.
# Back in $OUT (7 files): base/sr.safetensors + imagen-shapes.json (imagen_device.sh),
#   gan/netG|netD|netC.safetensors, results.tgz (GAN model.json, curves, evals, logs, IF check).
set -uo pipefail
source "$(dirname "$0")/device_setup.sh"
R=/tmp/results; mkdir -p "$R" "$OUT/gan"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt"

( python3 benchmarks/if_full_size.py "$R/if_full_size.json" > "$R/if_full_size.log" 2>&1 ) &
if_pid=$!

imagen_job() {
  INIT=plugins/t2i_imagen/src/t2i_imagen/weights/imagen-shapes N=${IMAGEN_N:-60000} \
    MINUTES=$(left "${IMAGEN_TAIL:-2.3}") SKIP_INSTALL=1 RUN=/tmp/imagen-run \
    bash benchmarks/imagen_device.sh > "$R/imagen_device.log" 2>&1
  OMP_NUM_THREADS=3 timeout "$(python3 -c "print(max(30, int(($(left 0.25)) * 60)))")" \
    python3 benchmarks/imagen_noise_levels.py "$R/imagen_noise_levels.json" \
    --checkpoint /tmp/imagen-run/model --device cuda --levels 0,250 --prompts 64 --seeds 2 \
    > "$R/imagen_noise_levels.log" 2>&1
}
gan_job() {
  local run=/tmp/gan-run
  OMP_NUM_THREADS=3 t2i --log-level info train gan --out "$run" --images "${GAN_N:-36000}" \
    --steps 1000000 --minutes "$(left "${GAN_TAIL:-1.2}")" --batch-size "${GAN_BATCH:-128}" \
    --lr "${GAN_LR:-2e-4}" --d-lr-ratio "${GAN_RATIO:-2}" --nf 32 --bf16 \
    --eval-every "${GAN_EVAL_EVERY:-1500}" --eval-prompts 32 --log-every 100 --save-every 1000 \
    > "$R/gan_train.log" 2>&1
  cp "$run"/model/*.safetensors "$OUT/gan/"
  cp "$run"/model/model.json "$run"/curves.json "$run"/curves.png "$R/" 2>/dev/null
  OMP_NUM_THREADS=3 timeout "$(python3 -c "print(max(30, int(($(left 0.2)) * 60)))")" \
    t2i eval gan-shapes --checkpoint "$run/model" --device cuda --prompts 64 --seeds 4 \
    --out /tmp/gan-eval > "$R/gan_eval.log" 2>&1
  cp /tmp/gan-eval/report.json "$R/gan_eval.json" 2>/dev/null
}
imagen_job & imagen_pid=$!
gan_job & gan_pid=$!
wait "$if_pid"; echo "IF check done after $(( $(date +%s) - start )) s"
wait "$imagen_pid"; echo "imagen done after $(( $(date +%s) - start )) s"
wait "$gan_pid"; echo "gan done after $(( $(date +%s) - start )) s"
cp /tmp/imagen-run/*.log "$R/" 2>/dev/null
tar -czf "$OUT/results.tgz" -C "$R" .
cat "$R/if_full_size.log" | tail -4
grep -h -E "gan.probe" "$R/gan_train.log" | tail -6
tail -3 "$R/gan_eval.log" "$R/imagen_noise_levels.log"
ls -la "$OUT" "$OUT/gan"
echo "wall $(( $(date +%s) - start )) s"
