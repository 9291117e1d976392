#!/usr/bin/env bash
# DEVICE-READY: one GPU call for dalle-shapes (issue 14): the renders once, three dVAE variants
# side by side for $VAE_MINUTES (VAE_A / VAE_B / VAE_C flags, all with the codebook-use term),
# each judged on its own reconstructions of 256 test renders (benchmarks/dvae_recon.py); the
# one whose tokens keep shape and colour best is kept and the transformer prior trains on its
# tokens for the rest of the call; `t2i eval dalle-shapes` at the end.
# Usage (there, from a code snapshot folder whose parent is the repo copy):
#   OUT=... MINILM=../.minilm16 WHL=../.whl_min MINUTES=8.3 bash benchmarks/dvae_device.sh
# Back in $OUT: dalle/ (dvae + transformer safetensors, dalle.json) and results.tgz (the
#   variants' reconstruction reports, a grid, logs, the evaluation).
set -uo pipefail
source "$(dirname "$0")/device_setup.sh"
python3 -m pip install -q --no-deps --no-build-isolation -e plugins/t2i_dalle > /tmp/install2.log 2>&1 \
  || { tail /tmp/install2.log; exit 1; }
R=/tmp/results; mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt"
D=/tmp/dalle; mkdir -p "$D"
COMMON=(--images "${N:-48000}" --pair-fraction 0.6 --workers 4 --renders "$D/renders.pt"
        --steps 1000000 --log-every 200 --save-every 2000 --bf16)
vae_run() {  # name flags...
  local name=$1; shift
  OMP_NUM_THREADS=3 t2i --log-level info train dalle --stage vae --out "$D/$name" "${COMMON[@]}" \
    --minutes "${VAE_MINUTES:-4.4}" --batch-size 128 --cooldown 0.15 --groups 3 \
    --anneal-steps 12000 --anneal-seconds "${ANNEAL_SECONDS:-200}" --kl-warmup 1000 \
    "$@" > "$R/vae_$name.log" 2>&1
}
OMP_NUM_THREADS=8 python3 - "$D/renders.pt" "${N:-48000}" <<'PY'
import sys
from t2i_dalle.train import _renders
_renders({"images": int(sys.argv[2]), "pair_fraction": 0.6, "workers": 14, "renders": sys.argv[1]})
PY
echo "renders done after $(( $(date +%s) - start )) s"
FIXED=(--lr 5e-4 --diversity-weight 1.0)
# shellcheck disable=SC2086
vae_run a "${FIXED[@]}" ${VAE_A:---n-hid 64 --codebook 512 --kl-weight 0.5} &
# shellcheck disable=SC2086
vae_run b "${FIXED[@]}" ${VAE_B:---n-hid 128 --codebook 2048 --kl-weight 0.5} &
# shellcheck disable=SC2086
vae_run c "${FIXED[@]}" ${VAE_C:---n-hid 128 --codebook 1024 --kl-weight 0.25} &
wait
echo "dVAEs done after $(( $(date +%s) - start )) s"
OMP_NUM_THREADS=8 python3 benchmarks/dvae_recon.py "$D"/a/model "$D"/b/model "$D"/c/model \
  --images 256 --device cuda --out "$R/recon.json" --grid "$R/recon_a.png" > "$R/recon.log" 2>&1
best=$(python3 - "$R/recon.json" <<'PY'
import json, sys
models = json.load(open(sys.argv[1]))["models"]
def score(row):
    return sum(row[k][a] for k, a in (("single", "single.shape"), ("single", "single.color"),
                                       ("pair", "pair.shape"), ("pair", "pair.color")))
print(max(models, key=lambda f: score(models[f])))
PY
)
echo "dVAE kept: $best after $(( $(date +%s) - start )) s"; cat "$R/recon.log"
OMP_NUM_THREADS=8 t2i --log-level info train dalle --stage prior --dvae "$best" \
  --out "$D/prior" "${COMMON[@]}" --minutes "$(left 0.9)" --batch-size 256 --lr 1e-3 \
  --warmup 200 --cooldown 0.2 --ema-decay 0.999 --width 256 --depth 8 --heads 4 --text-len 24 \
  > "$R/prior.log" 2>&1
mkdir -p "$OUT/dalle"; cp "$D"/prior/model/* "$OUT/dalle/"
OMP_NUM_THREADS=8 timeout "$(python3 -c "print(max(30, int(($(left 0.1)) * 60)))")" \
  t2i eval dalle-shapes --checkpoint "$D/prior/model" --device cuda --prompts 48 --seeds 4 \
  --batch-size 16 --out /tmp/dalle-eval > "$R/dalle.eval.log" 2>&1
cp /tmp/dalle-eval/report.json "$R/dalle.eval.json" 2>/dev/null
for v in a b c; do cp "$D/$v/model/dalle.json" "$R/vae_$v.json" 2>/dev/null; done
tar -czf "$OUT/results.tgz" -C "$R" .
grep -h "dalle.vae\|dalle.prior" "$R"/vae_*.log "$R/prior.log" | tail -8 | cut -c1-300
tail -1 "$R/dalle.eval.log" | tr '\r' '\n' | tail -2
ls -la "$OUT" "$OUT"/dalle
echo "wall $(( $(date +%s) - start )) s"
