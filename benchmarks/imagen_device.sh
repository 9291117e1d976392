#!/usr/bin/env bash
# Trains the embedded default imagen-shapes (32 px base + 32 -> 64 px SR, frozen MiniLM) on the
# GPU machine, both stages at once as two processes on one GPU, then scores the cascade with
# `t2i eval imagen-shapes` on the GPU. Writes exactly three files to $OUT:
#   base.safetensors, sr.safetensors  (fp16, < 16 MiB each; they ship in
#       plugins/t2i_imagen/src/t2i_imagen/weights/imagen-shapes/)
#   imagen-shapes.json                (both stages' training records, the eval summary, log tails)
# Usage (repo root there): MINUTES=9 bash benchmarks/imagen_device.sh
#   MINUTES: wall time of the whole script (default 9); N: renders (default 100000);
#   BATCH / SR_BATCH, LR / SR_LR, EMA, SEED, PAIRS (pair fraction), WORKERS (render, <= 6);
#   DEVICE=cpu STEPS=20 for a CPU smoke test (tiny models with TINY=1); EVAL=0 skips the eval;
#   INIT=plugins/t2i_imagen/src/t2i_imagen/weights/imagen-shapes (carried: the weights are not
#   committed) continues both stages from a model folder: then the defaults are LR=SR_LR=2e-4,
#   PAIRS=0.4, SEED=1 (fresh renders), warm-up 50 steps;
#   SKIP_INSTALL=1 when t2i and the plugin are installed; T2I_MINILM_PATH: the MiniLM folder
#   (read through the core's t2i.text.minilm). Budget: <= 6 render processes, 2 x 3 CPU threads,
#   about 10 GB of GPU memory per stage at the default batches.
set -euo pipefail
start=$(date +%s)
MINUTES=${MINUTES:-9}
DEVICE=${DEVICE:-cuda}
RUN=${RUN:-/tmp/imagen-run}
: "${OUT:?set OUT to the output folder}"
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -c "import structlog" 2>/dev/null ||
    python3 -m pip install -q --no-index --no-deps .whl/structlog-*.whl
  python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_imagen
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=3 MKL_NUM_THREADS=3
mkdir -p "$RUN" "$OUT"
WARMUP=200
if [ -n "${INIT:-}" ]; then  # round 2: continue, gentler, more single-object scenes
  [ -f "$INIT/base.safetensors" ] && [ -f "$INIT/sr.safetensors" ] ||
    { echo "INIT=$INIT lacks base.safetensors / sr.safetensors" >&2; exit 2; }
  LR=${LR:-2e-4} SR_LR=${SR_LR:-2e-4} PAIRS=${PAIRS:-0.4} SEED=${SEED:-1} WARMUP=50
fi
left() { python3 -c "print(round($MINUTES - ($(date +%s) - $start) / 60 - $1, 2))"; }
# one render of 64 px images for both stages (the base trains on them area-downsampled)
python3 -c "
from t2i_imagen.data import load_or_render
load_or_render('$RUN/data.pt', ${N:-100000}, 64, seed=${SEED:-0}, workers=${WORKERS:-6},
               pair_fraction=${PAIRS:-0.6})
" > "$RUN/render.log" 2>&1
echo "rendered after $(( $(date +%s) - start )) s" | tee "$RUN/timeline.log"
reserve=${RESERVE:-1.7}  # minutes kept for the eval and the record
[ "${EVAL:-1}" = 1 ] || reserve=0.3
minutes=$(left "$reserve")
common=(--data "$RUN/data.pt" --images "${N:-100000}" --size 64 --device "$DEVICE"
  --seed "${SEED:-0}" --minutes "$minutes" --save-every 500 --log-every 100
  --pair-fraction "${PAIRS:-0.6}" --warmup "$WARMUP" --cooldown "${COOLDOWN:-0.2}" --ema-decay "${EMA:-0.998}")
[ "$DEVICE" = cuda ] && common+=(--bf16)
[ -n "${TINY:-}" ] && common+=(--tiny)
[ -n "${INIT:-}" ] && common+=(--init "$INIT")
[ -n "${STEPS:-}" ] && common+=(--steps "$STEPS") || common+=(--steps 1000000)
t2i --log-level info train imagen --out "$RUN/base" --stage base "${common[@]}" \
  --batch-size "${BATCH:-512}" --lr "${LR:-5e-4}" > "$RUN/base.log" 2>&1 &
base_pid=$!
t2i --log-level info train imagen --out "$RUN/sr" --stage sr "${common[@]}" \
  --batch-size "${SR_BATCH:-256}" --lr "${SR_LR:-5e-4}" > "$RUN/sr.log" 2>&1 &
sr_pid=$!
status=0
wait "$base_pid" || status=1
wait "$sr_pid" || status=$((status + 2))
echo "trained after $(( $(date +%s) - start )) s, status $status" | tee -a "$RUN/timeline.log"
mkdir -p "$RUN/model"
cp "$RUN/base/model/base.safetensors" "$RUN/sr/model/sr.safetensors" "$RUN/model/" || true
cp "$RUN/model/"*.safetensors "$OUT/" || true
if [ "${EVAL:-1}" = 1 ] && [ -f "$RUN/model/base.safetensors" ] && [ -f "$RUN/model/sr.safetensors" ]
then
  budget=$(python3 -c "print(max(20, int(($(left 0.15)) * 60)))")
  timeout "$budget" t2i eval imagen-shapes --checkpoint "$RUN/model" --out "$RUN/eval" \
    --device "$DEVICE" --prompts "${EVAL_PROMPTS:-64}" --seeds "${EVAL_SEEDS:-4}" \
    --batch-size "${EVAL_SEEDS:-4}" > "$RUN/eval.log" 2>&1 || echo "eval failed or timed out" \
    | tee -a "$RUN/timeline.log"
fi
echo "done after $(( $(date +%s) - start )) s" >> "$RUN/timeline.log"
python3 - "$RUN" "$OUT/imagen-shapes.json" <<'EOF'
import json
import sys
from pathlib import Path

run, out = Path(sys.argv[1]), Path(sys.argv[2])
record = {"format": "imagen-shapes-run", "stages": {}, "logs": {}}
for stage in ("base", "sr"):
    path = run / "model" / f"{stage}.safetensors"
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        record["stages"][stage] = {
            "config": json.loads(meta["config"]),
            "training": json.loads(meta["training"]),
            "bytes": path.stat().st_size,
        }
for name in ("timeline", "render", "base", "sr", "eval"):
    log = run / f"{name}.log"
    if log.is_file():
        record["logs"][name] = log.read_text(errors="replace").splitlines()[-40:]
report = run / "eval" / "report.json"
if report.is_file():
    data = json.loads(report.read_text())
    record["eval"] = {k: v for k, v in data.items() if not isinstance(v, list)}
try:
    import subprocess

    record["gpu"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
except OSError:
    record["gpu"] = None
out.write_text(json.dumps(record, indent=1))
print(json.dumps({k: record.get(k) for k in ("eval",)}, indent=1)[:3000])
EOF
tail -n 3 "$RUN/base.log" "$RUN/sr.log" || true
cat "$RUN/timeline.log"
