#!/usr/bin/env bash
# DEVICE-READY (issue 21.5): one part of the GPU comparison of the families per device call
# (the call's 64 MiB of files cannot hold every family's weights and MiniLM at once):
#   here:  bash benchmarks/travel_profile.sh ldm bpe dalle tests   (part a; carry .whl_min)
#          bash benchmarks/travel_profile.sh imagen gan            (part b; carry .whl_min .minilm16)
#   there: OUT=... RECIPES="ldm-shapes dalle-shapes" bash benchmarks/compare_device.sh
#   here, after both: python benchmarks/compare_parts.py merge cmp/ parts_a/ parts_b/
# EXTRA: a command run after the comparison (e.g. a GPU test); its output in extra.log.
# Back in $OUT: parts.tgz (one pickle per recipe, benchmarks/compare_parts.py) and logs.
set -uo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHL:-.whl_min}"/*.whl
export PYTHONPATH=/tmp/site
pkgs=(-e .)
for p in ldm imagen gan dalle; do pkgs+=(-e "plugins/t2i_$p"); done
python3 -m pip install -q --no-deps --no-build-isolation "${pkgs[@]}" > /tmp/install.log 2>&1 \
  || { tail /tmp/install.log; exit 1; }
if [ -d "${MINILM:-.minilm16}" ]; then
  python3 benchmarks/minilm_travel.py unpack "${MINILM:-.minilm16}" /tmp/minilm > /tmp/minilm.log 2>&1
  export T2I_MINILM_PATH=/tmp/minilm
fi
R=/tmp/results; mkdir -p "$R/parts" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$R/gpu.txt"
echo "set-up $(( $(date +%s) - start )) s"
# shellcheck disable=SC2086
timeout "${TIMEOUT:-420}" python3 benchmarks/compare_parts.py run "$R/parts" $RECIPES --device cuda \
  --prompts "${PROMPTS:-32}" --seeds "${SEEDS:-4}" --batch-size 64 > "$R/compare.log" 2>&1
grep -E "measured|skipped" "$R/compare.log"; tail -2 "$R/compare.log"
echo "compare done after $(( $(date +%s) - start )) s"
if [ -n "${EXTRA:-}" ]; then bash -c "$EXTRA" > "$R/extra.log" 2>&1; tail -4 "$R/extra.log"; fi
tar -czf "$OUT/parts.tgz" -C "$R" .
echo "wall $(( $(date +%s) - start )) s"
