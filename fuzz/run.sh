#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time: bash fuzz/run.sh [SECONDS]
# (default 60 per target). Stable Rust works with `--sanitizer none` (safe
# Rust needs no AddressSanitizer; the targets look for panics, failed
# round-trips and hangs). New corpus entries go to a temporary folder; a
# crash leaves its input under fuzz/artifacts/<target>/ and the script fails:
# copy the input into fuzz/seeds/<target>/ once fixed, and tests/fuzz_seeds.rs
# replays it in every test run from then on.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo fuzz build --sanitizer none -O
printf '%-12s %10s %10s %8s %8s\n' target seconds runs corpus crashes
for t in dsl stored_plan tree; do
  mkdir -p "$work/$t"
  if ! cargo fuzz run --sanitizer none -O "$t" "$work/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 -max_len=16384 \
      >"$work/$t.log" 2>&1; then
    tail -40 "$work/$t.log"
    echo "fuzz target $t found a failure; its input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$work/$t.log" | grep -o '[0-9]*' || echo '?')
  printf '%-12s %10s %10s %8s %8s\n' "$t" "$secs" "$runs" "$(ls "$work/$t" | wc -l)" 0
done
