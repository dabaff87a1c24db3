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

# Round two (issue 19): what a guest sends through imports stays within
# its step's memory limit; one guest cannot take the host's descriptors;
# guest text reaches the terminal escaped; other contract versions, and
# scripts reaching out of their project, are refused.
guest log_bomb_64MiB_x30 "$g/hostile.wasm" '#{ mode: "logbomb", mb: 64, times: 30 }' '.memory("256MiB")' 'succeeded'
guest metric_bomb_64MiB_x30 "$g/hostile.wasm" '#{ mode: "metricbomb", mb: 64, times: 30 }' '.memory("256MiB")' 'succeeded'
cat >"$work/tensor_bomb.rhai" <<RHAI
let p = pipeline("hostile_tensor");
p.step("t", "$g/trainer.wasm").output("out").params(#{ mode: "bigtensor", cells: 16777216, times: 30 }).memory("256MiB").requires("gpu");
RHAI
measure tensor_bomb_64MiB_x30 'succeeded' "$weir" run --store "$work/store-tensor" --trust-all "$work/tensor_bomb.rhai"
{
  echo 'let p = pipeline("hostile_fds");'
  echo "p.step(\"hog\", \"$g/hostile.wasm\").output(\"out\").params(#{ mode: \"fd_hog\" });"
  for i in 0 1 2 3 4 5; do
    echo "p.step(\"b$i\", \"$g/hostile.wasm\").output(\"out\").params(#{ mode: \"bystander\", files: 20, i: $i });"
  done
} >"$work/fds.rhai"
measure descriptor_hog "over its handle limit" "$weir" run --jobs 4 --store "$work/store-fds" "$work/fds.rhai"
lost=$("$weir" show 1 --json --store "$work/store-fds" | python3 -c '
import json, os, sys
v = json.load(sys.stdin)
store = sys.argv[1]
lost = 0
for s in v["steps"]:
    if s["step"] == "hog":
        continue
    d = s["outputs"].get("out")
    if s["state"] != "succeeded" or not d or len(os.listdir(os.path.join(store, "views", d))) != 21:
        lost += 1
print(lost)' "$work/store-fds")
guest evil_text_in_names "$g/hostile.wasm" '#{ mode: "evil_text" }' '' 'unusable name'
raw=0
grep -q $'\x1b' "$work/out" && raw=$((raw + 1))
for cmd in "show 1" "logs 1 evil_text_in_names" "metrics 1" "runs"; do
  # shellcheck disable=SC2086
  "$weir" $cmd --store "$work/store-evil_text_in_names" >"$work/cmd.out" 2>&1 || true
  grep -q $'\x1b' "$work/cmd.out" && raw=$((raw + 1))
done
guest other_contract_version "$g/future_contract.wasm" '#{}' '' 'was built for weir:step@0.2.0'
mkdir -p "$work/proj"
cat >"$work/proj/reads_etc.rhai" <<RHAI
let p = pipeline("hostile_reader");
p.step("r", "$g/noop.wasm").input("x", "/etc/passwd").output("out");
RHAI
measure script_reads_outside "outside the project" "$weir" run --store "$work/store-reader" "$work/proj/reads_etc.rhai"
cat >"$work/proj/builds_outside.rhai" <<RHAI
let p = pipeline("hostile_builder");
p.step("b", "$work").output("out");
RHAI
measure script_builds_outside "builds the step crate" "$weir" run --store "$work/store-builder" "$work/proj/builds_outside.rhai"

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
for m in log_bomb_64MiB_x30 metric_bomb_64MiB_x30 tensor_bomb_64MiB_x30; do
  r=$(cat "$work/rss.$m")
  echo "$m (256 MiB limit): peak RSS $((r / 1024)) MiB: +$(((r - base) / 1024)) MiB over a no-op run"
done
echo "descriptor hog beside 6 bystanders: bystanders not recorded whole (records lost): $lost"
echo "guest escape sequences that reached the terminal raw (run, show, logs, metrics, runs): $raw"
[ "$bad" = 0 ] && [ "$panics" = 0 ] && [ "${escapes:-1}" = 0 ] && [ "$lost" = 0 ] && [ "$raw" = 0 ]
