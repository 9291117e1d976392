#!/usr/bin/env bash
# Trains the embedded default model ldm-shapes on the GPU machine (device tool) and copies the
# exported model flat into $OUT/ldm-shapes (the files that ship in
# plugins/t2i_ldm/src/t2i_ldm/weights/ldm-shapes, tokenizer files into tokenizer/).
# Usage (from the repo root there): MINUTES=7.5 bash benchmarks/train_ldm_shapes.sh
set -euo pipefail
python3 -m pip install -q --no-index --no-deps .whl/structlog-*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm
export T2I_KERNELS=ref PYTHONUNBUFFERED=1 TQDM_DISABLE=1
RUN=${RUN:-/tmp/ldm-run}
mkdir -p "$OUT/ldm-shapes"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; date -u; } > "$OUT/train.log"
t2i --log-level info train ldm --out "$RUN" --n "${N:-200000}" --vae-steps "${VAE_STEPS:-2500}" \
  --steps 1000000 --minutes "${MINUTES:-7.5}" --batch-size "${BATCH:-256}" --workers 16 \
  --lr "${LR:-3e-4}" ${EXTRA:-} >> "$OUT/train.log" 2>&1 || { tail -40 "$OUT/train.log"; exit 1; }
cp "$RUN"/model/*.safetensors "$RUN"/model/model.json "$RUN"/model/tokenizer/* "$OUT/ldm-shapes/"
python3 benchmarks/ldm_shapes_samples.py "$RUN/model" "$OUT/samples.png" --device cuda \
  >> "$OUT/train.log" 2>&1 || true
tail -25 "$OUT/train.log"
