#!/usr/bin/env bash
# Kills `weir run` with SIGKILL at random points, N times (default 50), checks
# the store after every kill with `weir store verify`, then resumes the run to
# the end and compares its outputs with an uninterrupted run.
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
script() {
  cat > "$1/p.rhai" <<RHAI
let p = pipeline("crash");
let prev = ();
for i in 0..20 {
    let s = p.step(\`s\${i}\`, "$sleep_wasm").output("out").params(#{ ms: 50, i: i });
    if i > 0 { s.input("prev", prev.out("out")); }
    prev = s;
}
RHAI
}
mkdir -p "$work/ref" "$work/run"
script "$work/ref"; script "$work/run"
"$weir" run "$work/ref/p.rhai" >/dev/null 2>&1
"$weir" show 1 --json --store "$work/ref/.weir" | python3 -c 'import json,sys; print(sorted((s["step"], s["outputs"].get("out")) for s in json.load(sys.stdin)["steps"]))' > "$work/want"
kills=0; damaged=0
for i in $(seq 1 "$n"); do
  args=(run "$work/run/p.rhai")
  [ -f "$work/run/.weir/weir.db" ] && "$weir" runs --store "$work/run/.weir" | grep -q '^ *1 ' && args+=(--resume 1)
  "$weir" "${args[@]}" >/dev/null 2>&1 & pid=$!
  sleep "0.$(( RANDOM % 9 + 1 ))"
  kill -9 "$pid" 2>/dev/null && kills=$((kills + 1)) || true
  wait "$pid" 2>/dev/null || true
  if [ -f "$work/run/.weir/weir.db" ] && ! "$weir" store verify --store "$work/run/.weir" >/dev/null; then
    damaged=$((damaged + 1))
  fi
done
"$weir" run "$work/run/p.rhai" --resume 1 >/dev/null 2>&1
"$weir" show 1 --json --store "$work/run/.weir" | python3 -c 'import json,sys; print(sorted((s["step"], s["outputs"].get("out")) for s in json.load(sys.stdin)["steps"]))' > "$work/got"
same=no; cmp -s "$work/want" "$work/got" && same=yes
echo "kills tried: $n, kills landed: $kills, stores damaged: $damaged, resume identical to an uninterrupted run: $same"
[ "$damaged" = 0 ] && [ "$same" = yes ]
