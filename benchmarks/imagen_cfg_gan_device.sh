#!/usr/bin/env bash
# DEVICE-READY: one GPU call, two jobs side by side on the one H200 (issues 13 and 15):
#  1. imagen-shapes' base guidance scale: `t2i eval imagen-shapes` of the shipped weights at
#     cfg_scale in $CFGS (4 seeds each), then the best single-object scale again at 8 seeds;
#  2. gan-shapes runs 4a and 4b at once: 4a standardised MiniLM conditioning with MA-GP on the
#     image gradient only (--gp-sentence-weight 0), 4b DF-GAN's conditioning as run 2 had it
#     (--no-cond-norm); both at D's 4x learning-rate ratio, then `t2i eval gan-shapes`.
# Usage (there, from a code snapshot folder whose parent is the repo copy):
#   OUT=... MINILM=../.minilm16 WHL=../.whl MINUTES=9.3 [GAN_B=0: run 4a only] bash benchmarks/imagen_cfg_gan_device.sh
# Back in $OUT: gan4a/ gan4b/ (netG|netD|netC.safetensors, model.json) and results.tgz (evals,
#   curves, logs).
set -uo pipefail
source "$(dirname "$0")/device_setup.sh"
R=/tmp/results; mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt"

imagen_eval() {  # cfg seeds
  OMP_NUM_THREADS=3 t2i eval imagen-shapes --device cuda --prompts 64 --seeds "$2" --batch-size 16 \
    --cfg-scale "$1" --out "/tmp/imagen-cfg$1-s$2" > "$R/imagen_cfg$1_s$2.log" 2>&1
  cp "/tmp/imagen-cfg$1-s$2/report.json" "$R/imagen_cfg$1_s$2.json" 2>/dev/null
}
imagen_job() {
  for cfg in ${CFGS:-3 5 7 9 12}; do imagen_eval "$cfg" 4; done
  best=$(python3 - "$R" <<'EOF'
import json, pathlib, sys
rows = []
for p in pathlib.Path(sys.argv[1]).glob("imagen_cfg*_s4.json"):
    report = json.loads(p.read_text())
    rows.append((report["alignment"]["single"], p.name.split("_")[1][3:]))
print(max(rows)[1] if rows else 5)
EOF
)
  echo "best cfg by single at 4 seeds: $best"
  imagen_eval "$best" 8
}
gan_job() {  # name flags...
  local name=$1; shift
  local run=/tmp/gan-$name
  OMP_NUM_THREADS=3 t2i --log-level info train gan --out "$run" --images "${GAN_N:-36000}" \
    --steps 1000000 --minutes "$(left "${GAN_TAIL:-1.3}")" --batch-size 128 --lr 2e-4 \
    --d-lr-ratio 4 --nf 32 --bf16 --eval-every 1500 --eval-prompts 32 --log-every 100 \
    --save-every 1000 "$@" > "$R/$name.train.log" 2>&1
  mkdir -p "$OUT/$name"
  cp "$run"/model/* "$OUT/$name/"
  cp "$run"/curves.json "$R/$name.curves.json"; cp "$run"/curves.png "$R/$name.curves.png"
  OMP_NUM_THREADS=3 timeout "$(python3 -c "print(max(30, int(($(left 0.2)) * 60)))")" \
    t2i eval gan-shapes --checkpoint "$run/model" --device cuda --prompts 64 --seeds 4 \
    --out "/tmp/$name-eval" > "$R/$name.eval.log" 2>&1
  cp "/tmp/$name-eval/report.json" "$R/$name.eval.json" 2>/dev/null
}
imagen_job > "$R/imagen_job.log" 2>&1 & imagen_pid=$!
gan_job gan4a --gp-sentence-weight 0 & a_pid=$!
b_pid=
[ "${GAN_B:-1}" = 1 ] && { gan_job gan4b --no-cond-norm & b_pid=$!; }
wait "$imagen_pid"; echo "imagen done after $(( $(date +%s) - start )) s"
wait "$a_pid" $b_pid; echo "gan done after $(( $(date +%s) - start )) s"
tar -czf "$OUT/results.tgz" -C "$R" .
cat "$R/imagen_job.log"
for f in "$R"/imagen_cfg*.log "$R"/gan4*.eval.log; do echo "== $f"; tail -4 "$f"; done
for n in gan4a gan4b; do grep -h "gan.probe" "$R/$n.train.log" 2>/dev/null | tail -3; done
ls -la "$OUT" "$OUT"/gan4a
echo "wall $(( $(date +%s) - start )) s"
