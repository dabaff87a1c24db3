#!/usr/bin/env bash
# The adversarial suite's figures, measured through the release `weir`
# binary:   bash tests/hostile-report.sh
# Runs every hostile guest and every hostile script of the test suite once
# and prints, per case, whether weir answered with the expected refusal (or
# the expected denial, for the escape fixture), weir's peak RSS (GNU time),
# wall time, and host panics; then the figures #7 asks for: escapes, panics,
# peak host memory increase under the memory bomb, and the time from the
# spinning guest's deadline to its stop. Exits non-zero if any case is not
# as expected.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
(cd tests/guests && cargo build --release --quiet --target wasm32-wasip2)
weir=$PWD/target/release/weir
g=$PWD/tests/guests/target/wasm32-wasip2/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo canary > "$work/canary.txt"
printf 'x\n1\n' > "$work/data.csv"
printf 'not a component' > "$work/garbage.wasm"
cp "$g/noop.wasm" "$work/truncated.wasm" && truncate -s 2000 "$work/truncated.wasm"

cases=0; bad=0; panics=0
printf '%-24s %-9s %9s %8s  %s\n' case result peak_MiB wall_s "what weir said"

# measure NAME EXPECT CMD...: runs CMD under GNU time, checks EXPECT (a
# fixed string) appears in its output.
measure() {
  local name=$1 expect=$2
  shift 2
  /usr/bin/time -f '%M %e' -o "$work/time" "$@" >"$work/out" 2>&1 || true
  local rss wall said result=ok
  # (GNU time puts "Command exited with non-zero status N" first)
  read -r rss wall < <(tail -1 "$work/time")
  said=$(grep -E 'FAILED|error|refus|DENIED|succeeded|exceeded' "$work/out" | grep -v '^run [0-9]* failed' | head -1 | cut -c1-110 | tr -d '\033')
  grep -qF -- "$expect" "$work/out" || { result=UNEXPECTED; bad=$((bad + 1)); }
  if grep -q 'panicked' "$work/out"; then panics=$((panics + 1)); result=PANIC; fi
  cases=$((cases + 1))
  printf '%-24s %-9s %9s %8s  %s\n' "$name" "$result" "$(awk "BEGIN { printf \"%.1f\", $rss / 1024 }")" "$wall" "$said"
  echo "$rss" >"$work/rss.$name"
}

# guest NAME WASM PARAMS MODIFIERS EXPECT: a one-step pipeline of a fixture.
guest() {
  local name=$1 wasm=$2 params=$3 mods=$4 expect=$5
  cat >"$work/$name.rhai" <<RHAI
let p = pipeline("hostile_$name");
p.step("$name", "$wasm").output("out").params($params)$mods;
RHAI
  measure "$name" "$expect" "$weir" run --store "$work/store-$name" "$work/$name.rhai"
}

guest baseline_noop "$g/noop.wasm" '#{}' '' 'succeeded'
guest spin "$g/spin.wasm" '#{}' '.timeout("1s")' 'exceeded its timeout of 1s'
spin_ms=$("$weir" show 1 --json --store "$work/store-spin" | python3 -c 'import json,sys; s=json.load(sys.stdin)["steps"][0]; print(s["ended_ms"]-s["started_ms"])')
guest blocked_host_call "$g/sleep.wasm" '#{}' '.timeout("1s")' 'exceeded its timeout of 1s'
guest memory_bomb_1GiB "$g/membomb.wasm" '#{ bytes: 1073741824 }' '' 'exceeded its memory limit of 536870912 bytes'
guest memory_bomb_growing "$g/membomb.wasm" '#{ bytes: 1073741824, chunk_mb: 16 }' '' 'exceeded its memory limit of 536870912 bytes'
guest deep_recursion "$g/hostile.wasm" '#{ mode: "recurse" }' '' 'the step trapped'
guest stdout_flood "$g/hostile.wasm" '#{ mode: "flood" }' '' 'succeeded'
guest huge_log_line "$g/hostile.wasm" '#{ mode: "biglog" }' '' 'succeeded'
guest disk_bomb "$g/hostile.wasm" '#{ mode: "disk_forever" }' '.output_limit("32MiB").timeout("2m")' 'over its limit of 33554432 bytes'
guest inode_bomb "$g/hostile.wasm" '#{ mode: "inodes_forever" }' '.timeout("2m")' 'over its limit of 100000 files'
guest escape_attempts "$g/escape.wasm" '#{}' ".input(\"data\", \"$work/data.csv\")" 'succeeded'
view=$(grep -o '/[^ ]*/views/[0-9a-f]*' "$work/out" | head -1 || true)
tried=$(wc -l <"$view/report.txt" 2>/dev/null || echo 0)
escapes=$(grep -vc ': DENIED' "$view/report.txt" 2>/dev/null || true)
guest symlink_in_output "$g/escape.wasm" '#{ symlink: true }' ".input(\"data\", \"$work/data.csv\")" 'is a symlink'
guest wrong_world "$g/wrong_world.wasm" '#{}' '' 'does not implement the weir step world'
guest imports_wasi_http "$g/fetch.wasm" '#{}' '' 'wasi:http/'
guest imports_unknown_iface "$g/kv.wasm" '#{}' '' 'acme:kv/lookup'
guest imports_gpu_untrusted "$g/trainer.wasm" '#{}' '.requires("gpu")' 'granted only to components the trust policy names'
guest garbage_binary "$work/garbage.wasm" '#{}' '' 'garbage.wasm'
guest truncated_binary "$work/truncated.wasm" '#{}' '' 'truncated.wasm'

# Hostile scripts: every tests/ui case must fail with its golden message.
for f in tests/ui/*.rhai; do
  name=script_$(basename "$f" .rhai)
  # The golden message, as the CLI words paths, without its position and
  # cut before anything that names the test's project folder.
  want=$(head -1 "${f%.rhai}.err" | sed -E 's#ui/#tests/ui/#g; s#^tests/ui/[^ ]*: ##' | cut -c1-40)
  measure "$name" "$want" "$weir" check "$f"
done

base=$(cat "$work/rss.baseline_noop")
bomb=$(cat "$work/rss.memory_bomb_1GiB")
grow=$(cat "$work/rss.memory_bomb_growing")
echo
echo "cases: $cases ($((cases - 1)) hostile), not as expected: $bad, host panics: $panics"
echo "escape fixture: $tried attempts, escapes: ${escapes:-?}; canary: $(cat "$work/canary.txt")"
echo "memory bomb asking for 1 GiB at once (512 MiB limit): peak RSS $((bomb / 1024)) MiB vs $((base / 1024)) MiB for a no-op run: +$(((bomb - base) / 1024)) MiB (refused at the first grow)"
echo "memory bomb growing 16 MiB at a time, touching every page (512 MiB limit): peak RSS $((grow / 1024)) MiB: +$(((grow - base) / 1024)) MiB"
echo "spinning guest, timeout 1 s: step ran ${spin_ms} ms, so it stopped $((spin_ms - 1000)) ms after its deadline"
[ "$bad" = 0 ] && [ "$panics" = 0 ] && [ "${escapes:-1}" = 0 ]
