#!/usr/bin/env bash
# DEVICE-READY: one GPU call continuing two trainings side by side on the one H200 (issues 14, 15):
#  1. gan-shapes: `t2i train gan --init $GAN_INIT` (an earlier run's model folder, its G, D and C)
#     with run 4a/5's flags for the whole call, then `t2i eval gan-shapes`;
#  2. dalle-shapes: `t2i eval dalle-shapes` of $DALLE_INIT (a full model folder), then its prior
#     continued with `--init` (lr $DALLE_LR) for the rest of the call, then evaluated again.
# Usage (there, from a code snapshot folder whose parent is the repo copy):
#   OUT=... MINILM=../.minilm16 WHL=../.whl_min GAN_INIT=../.carry/gan5 DALLE_INIT=../.carry/dalle \
#     MINUTES=9.2 bash benchmarks/continue_device.sh
#   (or PACK=.carry/pack.tar.xz GAN_INIT=/tmp/pack/gan6 DALLE_INIT=/tmp/pack/dalle3b ...)
# Back in $OUT: gan/ (netG|netD|netC.safetensors, model.json), dalle/ (transformer.safetensors,
#   dalle.json; the dVAE is $DALLE_INIT's) and results.tgz (evals, curves, logs).
set -uo pipefail
source "$(dirname "$0")/device_setup.sh"
# PACK: a tar.xz of earlier runs' model folders (what would not fit the carry limit unpacked),
# unpacked to /tmp/pack so GAN_INIT / DALLE_INIT can name /tmp/pack/<folder>
if [ -n "${PACK:-}" ]; then mkdir -p /tmp/pack && tar -xJf "$PACK" -C /tmp/pack; fi
python3 -m pip install -q --no-deps --no-build-isolation -e plugins/t2i_dalle > /tmp/install2.log 2>&1 \
  || { tail /tmp/install2.log; exit 1; }
R=/tmp/results; mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt"
: "${DALLE_INIT:?set DALLE_INIT}"
# GAN_INIT empty: a fresh GAN; GAN_FLAGS: extra `t2i train gan` flags (e.g. --word-queries 4)
GAN_ARGS=(${GAN_INIT:+--init "$GAN_INIT"} ${GAN_FLAGS:-})

dalle_eval() {  # folder name
  OMP_NUM_THREADS=6 timeout "$(python3 -c "print(max(30, int(($(left 0.1)) * 60)))")" \
    t2i eval dalle-shapes --checkpoint "$1" --device cuda --prompts "${DALLE_PROMPTS:-64}" --seeds 4 --batch-size 16 \
    --out "/tmp/$2" > "$R/$2.log" 2>&1
  cp "/tmp/$2/report.json" "$R/$2.json" 2>/dev/null
}
dalle_job() {
  dalle_eval "$DALLE_INIT" dalle_before
  echo "first eval done after $(( $(date +%s) - start )) s"
  local D=/tmp/dalle
  OMP_NUM_THREADS=6 t2i --log-level info train dalle --stage prior --init "$DALLE_INIT" \
    --out "$D/prior" --images "${N:-48000}" --pair-fraction 0.6 --workers 8 \
    --renders "$D/renders.pt" --steps 1000000 --log-every 200 --save-every 2000 --bf16 \
    --minutes "$(left 1.25)" --batch-size 256 --lr "${DALLE_LR:-5e-4}" --warmup 200 \
    --cooldown 0.3 --ema-decay 0.999 --width 256 --depth 8 --heads 4 --text-len 24 \
    > "$R/prior.log" 2>&1
  mkdir -p "$OUT/dalle"
  cp "$D"/prior/model/transformer.safetensors "$D"/prior/model/dalle.json "$OUT/dalle/"
  dalle_eval "$D/prior/model" dalle_after
}
gan_job() {
  local run=/tmp/gan6
  OMP_NUM_THREADS=4 t2i --log-level info train gan "${GAN_ARGS[@]}" --out "$run" \
    --images "${GAN_N:-36000}" --steps 1000000 --minutes "$(left "${GAN_TAIL:-0.8}")" \
    --batch-size 128 --lr "${GAN_LR:-2e-4}" --d-lr-ratio 4 --nf 32 --bf16 --eval-every 2000 \
    --eval-prompts 32 --log-every 200 --save-every 2000 --gp-sentence-weight 0 \
    > "$R/gan.train.log" 2>&1
  gan_finish "$run" 0.1
}
dalle_job > "$R/dalle_job.log" 2>&1 & dalle_pid=$!
gan_job & gan_pid=$!
wait "$dalle_pid"; echo "dalle done after $(( $(date +%s) - start )) s"
wait "$gan_pid"; echo "gan done after $(( $(date +%s) - start )) s"
tar -czf "$OUT/results.tgz" -C "$R" .
cat "$R/dalle_job.log"
grep -h "dalle.init\|dalle.tokens\|dalle.prior" "$R/prior.log" | cut -c1-300
for f in "$R"/dalle_before.log "$R"/dalle_after.log "$R"/gan.eval.log; do
  echo "== $f"; tail -1 "$f" | tr '\r' '\n' | tail -1
done
grep -h "gan.probe\|gan.init" "$R/gan.train.log" | tail -5 | cut -c1-300
ls -la "$OUT" "$OUT"/dalle "$OUT"/gan
echo "wall $(( $(date +%s) - start )) s"
