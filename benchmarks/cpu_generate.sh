#!/usr/bin/env bash
# End-to-end CPU time of the README's main job: one 64x64 image at 25 steps with the embedded
# default model, pinned to 2 cores (the CI machine's size), 5 runs, median wall time.
# Usage: bash benchmarks/cpu_generate.sh [extra t2i generate options]
set -euo pipefail
out=$(mktemp -d)
times=()
for i in 1 2 3 4 5; do
  start=$(date +%s.%N)
  taskset -c 0,1 t2i generate "a large red circle on the left" -o "$out/img.png" --steps 25 \
    --seed "$i" "$@" > /dev/null
  end=$(date +%s.%N)
  times+=("$(echo "$end - $start" | bc)")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "runs: %d  median: %.2f s  min: %.2f s  max: %.2f s\n", NR, a[int((NR+1)/2)], a[1], a[NR]}'
rm -rf "$out"
