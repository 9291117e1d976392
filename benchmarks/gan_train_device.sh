#!/usr/bin/env bash
# Trains gan-shapes on the GPU machine (device tool), then times gan-shapes vs ldm-shapes there.
# Usage (repo root there): MINUTES=6.5 bash benchmarks/gan_train_device.sh
#   (SPEED=0 skips the speed benchmark; BATCH, LR, RATIO, NF, EVAL_EVERY, N set the run)
#   .gan_data/ (carried): precomputed MiniLM sentence vectors of items 0..N-1 (chunk*.pt) and
#   of the eval prompts (eval.pt): MiniLM's 83 MB package does not travel to that machine.
# $OUT/gan-shapes/ gets the exported model (model.json, netG/netD/netC safetensors);
# $OUT gets curves.json, curves.png, train.log, speed_gpu.json.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps .whl/structlog-*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm -e plugins/t2i_gan
export T2I_KERNELS=ref PYTHONUNBUFFERED=1 TQDM_DISABLE=1
RUN=/tmp/gan-run
mkdir -p "$OUT/gan-shapes"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; date -u; } > "$OUT/train.log"
t2i --log-level info train gan --out "$RUN" --vectors .gan_data --images "${N:-36000}" \
  --steps 1000000 --minutes "${MINUTES:-6.5}" --batch-size "${BATCH:-256}" --lr "${LR:-1.5e-4}" \
  --d-lr-ratio "${RATIO:-4}" --nf "${NF:-32}" --bf16 --eval-every "${EVAL_EVERY:-1000}" \
  --eval-prompts 32 --log-every 100 --save-every 1000 >> "$OUT/train.log" 2>&1 || tail -30 "$OUT/train.log"
cp "$RUN"/model/* "$OUT/gan-shapes/" ; cp "$RUN"/curves.json "$RUN"/curves.png "$OUT/"
[ "${SPEED:-1}" = 1 ] && python3 benchmarks/gan_speed.py --device cuda --checkpoint "$RUN/model" --vectors .gan_data \
  --repeats 10 --out "$OUT/speed_gpu.json" 2>> "$OUT/train.log" | tail -30
grep -E 'gan.probe' "$OUT/train.log" | tail -12
tail -4 "$OUT/train.log"
