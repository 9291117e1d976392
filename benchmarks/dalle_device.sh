#!/usr/bin/env bash
# Trains the embedded default dalle-shapes on the GPU machine: the dVAE first, then the
# transformer prior on its tokens, one after the other, in MINUTES (default 9) of wall time.
# Usage (repo root there): MINUTES=9 bash benchmarks/dalle_device.sh
#   VAE_MINUTES (4; the first run gave it 2.5 and its dVAE collapsed to 59 of 512 codes,
#   judged 0.30 on its own reconstructions) of the total go to the dVAE; N (48000) renders, 6 render processes,
#   bf16; BATCH_VAE / BATCH_PRIOR / LR_VAE / LR_PRIOR / WIDTH / DEPTH set the runs.
#   DEVICE=cpu STEPS=20 N=64 for a smoke run on a CPU (TINY=1: tiny models).
# $OUT gets exactly 3 files: dvae.safetensors, transformer.safetensors (fp16, < 16 MiB each)
# and dalle.json (configs, word list, training record); install them with
#   mkdir -p plugins/t2i_dalle/src/t2i_dalle/weights/dalle-shapes && cp $OUT/* there
# and score with: t2i eval dalle-shapes
set -uo pipefail
START=$(date +%s)
MINUTES=${MINUTES:-9}
if ! python3 -c "import structlog, t2i_dalle" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps .whl/structlog-*.whl 2>/dev/null
  python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_dalle
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=6 T2I_KERNELS=${T2I_KERNELS:-ref}
RUN=${RUN:-/tmp/dalle-run}
LOG=${LOG:-$RUN/train.log}
mkdir -p "$RUN" "$OUT"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; date -u; } > "$LOG"
DEV=()
[ -n "${DEVICE:-}" ] && DEV=(--device "$DEVICE")
PREC=(--bf16)
[ "${DEVICE:-}" = cpu ] && PREC=()
TINYF=()
[ "${TINY:-0}" = 1 ] && TINYF=(--tiny)
COMMON=(--images "${N:-48000}" --pair-fraction 0.6 --workers 6 --renders "$RUN/renders.pt"
        --steps "${STEPS:-1000000}" --log-every 200 --save-every 2000 "${PREC[@]}" "${DEV[@]}"
        "${TINYF[@]}")
left() { python3 -c "print(max(0.2, ${MINUTES} - ($(date +%s) - ${START}) / 60 - ${1}))"; }

t2i --log-level info train dalle --stage vae --out "$RUN/vae" "${COMMON[@]}" \
  --minutes "${VAE_MINUTES:-4}" --batch-size "${BATCH_VAE:-128}" --lr "${LR_VAE:-1e-3}" \
  --cooldown 0.15 --n-hid 64 --codebook 512 --groups 3 \
  --anneal-steps 6000 --anneal-seconds "${ANNEAL_SECONDS:-180}" --kl-warmup 1000 --kl-weight "${KL:-1.0}" \
  >> "$LOG" 2>&1 || { tail -30 "$LOG"; exit 1; }

# the prior gets what is left, less ~35 s to encode the tokens, export and copy
t2i --log-level info train dalle --stage prior --dvae "$RUN/vae/model" --out "$RUN/prior" \
  "${COMMON[@]}" --minutes "$(left 0.75)" --batch-size "${BATCH_PRIOR:-256}" \
  --lr "${LR_PRIOR:-1e-3}" --warmup 200 --cooldown 0.2 \
  --ema-decay 0.999 --width "${WIDTH:-256}" --depth "${DEPTH:-8}" --heads 4 --text-len 24 \
  >> "$LOG" 2>&1 || { tail -30 "$LOG"; exit 1; }

cp "$RUN"/prior/model/dvae.safetensors "$RUN"/prior/model/transformer.safetensors \
   "$RUN"/prior/model/dalle.json "$OUT/"
python3 - "$OUT/dalle.json" "$(( $(date +%s) - START ))" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["training"]["wall_seconds"] = int(sys.argv[2])
json.dump(spec, open(sys.argv[1], "w"), indent=2)
PY
grep -E "dalle\.(data|vae|tokens|prior)|loss" "$LOG" | tail -12
ls -la "$OUT"
echo "wall $(( $(date +%s) - START )) s"
