#!/usr/bin/env bash
# Here, before a device call: which shipped weights travel with the working tree (the device
# tool moves at most 64 MiB: tracked files + untracked files git does not ignore + carry).
#   bash benchmarks/travel_profile.sh ldm dalle      # only these families' weights travel
#   bash benchmarks/travel_profile.sh restore        # every weight file tracked again
#   bash benchmarks/travel_profile.sh size [CARRY..] # MiB that would travel now
# Untravelled weights leave the index (git rm --cached; the files stay) and are listed in
# .git/info/exclude between marker lines; `restore` undoes both. Never commit in between.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
declare -A W=(
  [ldm]=plugins/t2i_ldm/src/t2i_ldm/weights
  [bpe]=plugins/t2i_ldm/src/t2i_ldm/data/bpe_simple_vocab_16e6.txt.gz
  [imagen]=plugins/t2i_imagen/src/t2i_imagen/weights
  [gan]=plugins/t2i_gan/src/t2i_gan/weights
  [dalle]=plugins/t2i_dalle/src/t2i_dalle/weights
  [tests]=tests
)
EX=.git/info/exclude
restore() {
  if grep -q "^# travel-profile" "$EX"; then
    git reset -q -- "${W[@]}"
    sed -i '/^# travel-profile begin/,/^# travel-profile end/d' "$EX"
  fi
}
size() {
  { git ls-files -z; git ls-files -z -o --exclude-standard; } | xargs -0 stat -c %s 2>/dev/null \
    | awk -v extra="$( (($#)) && du -sbc "$@" 2>/dev/null | tail -1 | cut -f1 || echo 0)" \
      '{s+=$1} END{printf "%.1f MiB travel (64 MiB limit)\n", (s+extra)/2^20}'
}
case "${1:-}" in
  restore) restore; size ;;
  size) shift; size "$@" ;;
  "") echo "name the families whose weights travel (ldm bpe imagen gan dalle tests), or restore"; exit 2 ;;
  *)
    restore
    declare -A keep=(); for k in "$@"; do [ -n "${W[$k]:-}" ] || { echo "unknown: $k"; exit 2; }; keep[$k]=1; done
    echo "# travel-profile begin" >> "$EX"
    for k in "${!W[@]}"; do
      [ -n "${keep[$k]:-}" ] && continue
      git rm -q -r --cached "${W[$k]}"; echo "/${W[$k]}" >> "$EX"
    done
    echo "# travel-profile end" >> "$EX"
    size ;;
esac
