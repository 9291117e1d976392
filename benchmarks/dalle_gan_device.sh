#!/usr/bin/env bash
# DEVICE-READY: one GPU call, two trainings side by side on the one H200 (issues 14 and 15):
#  1. dalle-shapes: the renders once, then two dVAE variants at once (VAE_A / VAE_B flags, both
#     with the codebook-use term), the one with the lower reconstruction L1 kept, then the
#     transformer prior on its tokens for the rest of the time; `t2i eval dalle-shapes`;
#  2. gan-shapes run 5: run 4a's flags (MA-GP on the image gradient only, D at 4x G's lr) for
#     the whole call; `t2i eval gan-shapes`.
# Usage (there, from a code snapshot folder whose parent is the repo copy):
#   OUT=... MINILM=../.minilm16 WHL=../.whl MINUTES=9.3 bash benchmarks/dalle_gan_device.sh
# Back in $OUT: dalle/ (dvae, transformer safetensors + dalle.json), gan/ (netG|netD|netC
#   safetensors, model.json) and results.tgz (evals, curves, logs, the dVAE variants' records).
set -uo pipefail
source "$(dirname "$0")/device_setup.sh"
python3 -m pip install -q --no-deps --no-build-isolation -e plugins/t2i_dalle > /tmp/install2.log 2>&1 \
  || { tail /tmp/install2.log; exit 1; }
R=/tmp/results; mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt"
D=/tmp/dalle; mkdir -p "$D"
COMMON=(--images "${N:-48000}" --pair-fraction 0.6 --workers 6 --renders "$D/renders.pt"
        --steps 1000000 --log-every 200 --save-every 2000 --bf16)

vae_run() {  # name flags...
  local name=$1; shift
  OMP_NUM_THREADS=3 t2i --log-level info train dalle --stage vae --out "$D/$name" "${COMMON[@]}" \
    --minutes "${VAE_MINUTES:-2.4}" --batch-size 128 --cooldown 0.15 --n-hid 64 --codebook 512 \
    --groups 3 --anneal-steps 6000 --anneal-seconds "${ANNEAL_SECONDS:-110}" --kl-warmup 1000 \
    "$@" > "$R/vae_$name.log" 2>&1
  cp "$D/$name/model/dalle.json" "$R/vae_$name.json" 2>/dev/null
}
dalle_job() {
  # the renders, once (both variants then read the cache)
  OMP_NUM_THREADS=6 python3 - "$D/renders.pt" "${N:-48000}" <<'EOF'
import sys
from t2i_dalle.train import _renders
_renders({"images": int(sys.argv[2]), "pair_fraction": 0.6, "workers": 12, "renders": sys.argv[1]})
EOF
  echo "renders done after $(( $(date +%s) - start )) s"
  # shellcheck disable=SC2086
  vae_run a ${VAE_A:---lr 1e-3 --kl-weight 1.0 --diversity-weight 0.5} &
  # shellcheck disable=SC2086
  vae_run b ${VAE_B:---lr 5e-4 --kl-weight 0.5 --diversity-weight 1.0} &
  wait
  best=$(python3 - "$R" <<'EOF'
import json, pathlib, sys
rows = []
for p in sorted(pathlib.Path(sys.argv[1]).glob("vae_*.json")):
    vae = json.loads(p.read_text())["training"]["vae"]
    print(p.name, vae.get("reconstruction_l1"), vae.get("codes_used"), vae.get("steps"), file=sys.stderr)
    rows.append((vae.get("reconstruction_l1", 9.0), p.stem.split("_")[1]))
print(min(rows)[1] if rows else "a")
EOF
)
  echo "dVAE kept: $best after $(( $(date +%s) - start )) s"
  OMP_NUM_THREADS=6 t2i --log-level info train dalle --stage prior --dvae "$D/$best/model" \
    --out "$D/prior" "${COMMON[@]}" --minutes "$(left 1.0)" --batch-size 256 --lr 1e-3 \
    --warmup 200 --cooldown 0.2 --ema-decay 0.999 --width 256 --depth 8 --heads 4 --text-len 24 \
    > "$R/prior.log" 2>&1
  mkdir -p "$OUT/dalle"
  cp "$D"/prior/model/* "$OUT/dalle/"
  OMP_NUM_THREADS=6 timeout "$(python3 -c "print(max(30, int(($(left 0.15)) * 60)))")" \
    t2i eval dalle-shapes --checkpoint "$D/prior/model" --device cuda --prompts 64 --seeds 4 \
    --out /tmp/dalle-eval > "$R/dalle.eval.log" 2>&1
  cp /tmp/dalle-eval/report.json "$R/dalle.eval.json" 2>/dev/null
}
gan_job() {
  local run=/tmp/gan5
  OMP_NUM_THREADS=4 t2i --log-level info train gan --out "$run" --images "${GAN_N:-36000}" \
    --steps 1000000 --minutes "$(left "${GAN_TAIL:-1.0}")" --batch-size 128 --lr 2e-4 \
    --d-lr-ratio 4 --nf 32 --bf16 --eval-every 2000 --eval-prompts 32 --log-every 200 \
    --save-every 2000 --gp-sentence-weight 0 > "$R/gan.train.log" 2>&1
  gan_finish "$run" 0.15
}
dalle_job > "$R/dalle_job.log" 2>&1 & dalle_pid=$!
gan_job & gan_pid=$!
wait "$dalle_pid"; echo "dalle done after $(( $(date +%s) - start )) s"
wait "$gan_pid"; echo "gan done after $(( $(date +%s) - start )) s"
tar -czf "$OUT/results.tgz" -C "$R" .
cat "$R/dalle_job.log"
grep -h "dalle.vae\|dalle.tokens\|dalle.prior" "$R"/vae_*.log "$R/prior.log" | cut -c1-300
for f in "$R"/dalle.eval.log "$R"/gan.eval.log; do echo "== $f"; tail -4 "$f"; done
grep -h "gan.probe" "$R/gan.train.log" | tail -4 | cut -c1-300
ls -la "$OUT" "$OUT"/dalle "$OUT"/gan
echo "wall $(( $(date +%s) - start )) s"
