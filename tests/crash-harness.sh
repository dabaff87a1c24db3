#!/usr/bin/env bash
# Kills `weir run` with SIGKILL at a random point of a fresh run, N times
# (default 50). After every kill: `weir store verify` must pass, and
# `weir run --resume` must finish that run with outputs identical to an
# uninterrupted run of the same pipeline in another store.
#   bash tests/crash-harness.sh 200
set -euo pipefail
n=${1:-50}
cd "$(dirname "$0")/.."
cargo build --release --quiet
(cd tests/guests && cargo build --release --quiet --target wasm32-wasip2 -p sleep)
weir=$PWD/target/release/weir
sleep_wasm=$PWD/tests/guests/target/wasm32-wasip2/release/sleep.wasm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for d in ref run; do
  mkdir -p "$work/$d"
  cat > "$work/$d/p.rhai" <<RHAI
let salt = param("salt", 0);
let p = pipeline("crash");
let prev = ();
for i in 0..12 {
    let s = p.step(\`s\${i}\`, "$sleep_wasm").output("out").params(#{ ms: 40, i: i, salt: salt });
    if i > 0 { s.input("prev", prev.out("out")); }
    prev = s;
}
RHAI
done
outputs() { "$weir" show "$1" --json --store "$2" | python3 -c 'import json,sys; print(sorted((s["step"], s["outputs"].get("out")) for s in json.load(sys.stdin)["steps"]))'; }
kills=0; damaged=0; identical=0
count() { [ -f "$1/weir.db" ] && "$weir" runs --limit 100000 --store "$1" | tail -n +2 | wc -l || echo 0; }
for i in $(seq 1 "$n"); do
  before=$(count "$work/run/.weir")
  "$weir" run "$work/run/p.rhai" --param "salt=$i" >/dev/null 2>&1 & pid=$!
  sleep "0.$(( RANDOM % 5 + 1 ))$(( RANDOM % 10 ))"
  kill -9 "$pid" 2>/dev/null && kills=$((kills + 1)) || true
  wait "$pid" 2>/dev/null || true
  if [ -f "$work/run/.weir/weir.db" ]; then
    "$weir" store verify --store "$work/run/.weir" >/dev/null || damaged=$((damaged + 1))
  fi
  if [ "$(count "$work/run/.weir")" -gt "$before" ]; then
    # Killed after the run record was made: continue that run.
    run=$("$weir" runs --limit 1 --store "$work/run/.weir" | awk 'NR==2 {print $1}')
    "$weir" run "$work/run/p.rhai" --param "salt=$i" --resume "$run" >/dev/null 2>&1
  else
    # Killed before: nothing was recorded, so run it again.
    "$weir" run "$work/run/p.rhai" --param "salt=$i" >/dev/null 2>&1
    run=$("$weir" runs --limit 1 --store "$work/run/.weir" | awk 'NR==2 {print $1}')
  fi
  "$weir" run "$work/ref/p.rhai" --param "salt=$i" >/dev/null 2>&1
  ref=$("$weir" runs --limit 1 --store "$work/ref/.weir" | awk 'NR==2 {print $1}')
  [ "$(outputs "$run" "$work/run/.weir")" = "$(outputs "$ref" "$work/ref/.weir")" ] && identical=$((identical + 1))
done
"$weir" store verify --store "$work/run/.weir" >/dev/null || damaged=$((damaged + 1))
echo "kills tried: $n, kills that hit a running process: $kills, store verifications failed: $damaged, resumes identical to an uninterrupted run: $identical of $n"
[ "$damaged" = 0 ] && [ "$identical" = "$n" ]
