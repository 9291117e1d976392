#!/usr/bin/env bash
# A/B of the README's main job on the CPU: a baseline revision against the working tree, run by
# run alternately in the same run (so both see the same machine load), pinned to 2 cores.
# Usage: bash benchmarks/cpu_generate_ab.sh REV [RUNS]   (REV is checked out to a temporary
#   worktree and put first on PYTHONPATH through symlinks named like the installed packages)
set -euo pipefail
rev=$1; runs=${2:-7}
repo=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d); base=$tmp/base; pkgs=$tmp/pkgs
git -C "$repo" worktree add -q --detach "$base" "$rev"
trap 'git -C "$repo" worktree remove --force "$base"; rm -rf "$tmp"' EXIT
mkdir -p "$pkgs"
ln -s "$base/core" "$pkgs/t2i"
kern="$base/kernels/t2i_kernels"; [ -d "$kern" ] || kern="$base/kernels"
ln -s "$kern" "$pkgs/t2i_kernels"
for p in "$base"/plugins/t2i_*/src/t2i_*; do ln -s "$p" "$pkgs/$(basename "$p")"; done
one() {  # label, then env assignments for python
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  env "$@" taskset -c 0,1 python -m t2i.cli.main generate "a large red circle on the left" \
    -o "$tmp/$label.png" --steps 25 --seed 1 > /dev/null 2>&1
  end=$(date +%s.%N)
  echo "$label $(echo "$end - $start" | bc)"
}
for i in $(seq "$runs"); do
  one base PYTHONPATH="$pkgs" >> "$tmp/times"
  one current PYTHONPATH= >> "$tmp/times"
done
cmp -s "$tmp/base.png" "$tmp/current.png" && echo "images: identical" || echo "images: differ"
for label in base current; do
  grep "^$label " "$tmp/times" | cut -d' ' -f2 | sort -n | awk -v l="$label" \
    '{a[NR]=$1} END {printf "%s: runs %d  median %.2f s  min %.2f s  max %.2f s\n", l, NR, a[int((NR+1)/2)], a[1], a[NR]}'
done
uptime
