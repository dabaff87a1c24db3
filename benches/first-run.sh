#!/usr/bin/env bash
# A new user's first run (issue 20): `weir init` then `weir run` in an empty
# folder (the step workspace built from nothing into a fresh target folder;
# cargo's registry as this machine has it), and the re-run. Prints medians.
#
#   cargo build --release && bash benches/first-run.sh [target/release/weir] [trials]
set -euo pipefail
weir=$(realpath "${1:-target/release/weir}")
trials=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset CARGO_TARGET_DIR
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
first=()
for i in $(seq "$trials"); do
  cd "$work" && rm -rf "p$i"
  t0=$(now)
  "$weir" init "p$i" >/dev/null
  (cd "p$i" && "$weir" run pipeline.rhai >/dev/null 2>&1)
  first+=("$(echo "$(now) - $t0" | bc)")
done
cd "$work/p1"
rerun=()
for i in $(seq 21); do
  t0=$(now)
  "$weir" run pipeline.rhai >/dev/null 2>&1
  rerun+=("$(echo "($(now) - $t0) * 1000" | bc)")
done
printf '| what | median | trials |\n|---|---|---|\n'
printf '| `weir init` + first `weir run` (build from nothing) | %.1f s | %d |\n' "$(printf '%s\n' "${first[@]}" | median)" "$trials"
printf '| re-run (every step cached, no cargo) | %.1f ms | 21 |\n' "$(printf '%s\n' "${rerun[@]}" | median)"
