#!/usr/bin/env bash
# Load figures of `weir serve` (release build), on loopback, bounded:
#   bash benches/serve-load.sh
# Makes a store of 300 runs, then times sequential requests to the runs
# list, a run's detail and a step's logs page (median and p99 of 200 each),
# and measures the server's peak RSS before and after one run that logs
# 3,000 lines of 60 KiB. Prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
(cd tests/guests && cargo build --release --quiet --target wasm32-wasip2)
weir=$PWD/target/release/weir
g=$PWD/tests/guests/target/wasm32-wasip2/release
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/project"
cat >"$work/project/quick.rhai" <<RHAI
let n = param("n", 0);
let p = pipeline("quick");
p.max_active_runs(1000);
p.step("a", "$g/echo.wasm").output("out").params(#{ note: n });
p.step("b", "$g/hostile.wasm").output("out").params(#{ mode: "logflood", lines: 200, kb: 1, n: n });
RHAI
cat >"$work/project/flood.rhai" <<RHAI
let p = pipeline("flood");
p.step("f", "$g/hostile.wasm").output("out").params(#{ mode: "logflood", lines: 3000, kb: 60 });
RHAI
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=load-0123456789abcdef
"$weir" serve "$work/project" --store "$work/store" --bind "127.0.0.1:$port" --token "$token" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break; sleep 0.1; done
python3 - "$port" "$token" "$pid" <<'PY'
import http.client, json, statistics, sys, time
port, token, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
H = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def call(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=H)
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data
def wait(run):
    while True:
        s, d = call("GET", f"/api/runs/{run}")
        v = json.loads(d)
        if not v["run"]["active"] and v["run"]["ended_ms"]:
            return v
        time.sleep(0.05)
def hwm():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
runs = []
for i in range(300):
    s, d = call("POST", "/api/pipelines/quick/runs", {"params": {"n": i}})
    runs.append(json.loads(d)["run"])
for r in runs:
    wait(r)
def timed(path, n=200):
    ts, size = [], 0
    for _ in range(n):
        t = time.perf_counter(); s, d = call("GET", path); ts.append((time.perf_counter() - t) * 1000)
        assert s == 200, (path, s); size = len(d)
    ts.sort()
    return statistics.median(ts), ts[int(len(ts) * 0.99) - 1], size
print(f"{'request':<46} {'median ms':>9} {'p99 ms':>8} {'bytes':>9}")
for label, path in [
    ("runs list (50 of 300)", "/api/runs?limit=50"),
    ("runs list, filtered (state=succeeded)", "/api/runs?state=succeeded&limit=50"),
    ("run detail (2 steps)", f"/api/runs/{runs[-1]}"),
    ("logs page (200 lines of 1 KiB)", f"/api/runs/{runs[-1]}/steps/b/logs?limit=1000"),
]:
    med, p99, size = timed(path)
    print(f"{label:<46} {med:>9.2f} {p99:>8.2f} {size:>9}")
before = hwm()
s, d = call("POST", "/api/pipelines/flood/runs", {})
flood = json.loads(d)["run"]
wait(flood)
after = hwm()
s, d = call("GET", f"/api/runs/{flood}/steps/f/logs?limit=1000")
print(f"server peak RSS before the log flood: {before} MiB; after 3,000 lines of 60 KiB: {after} MiB (+{after - before} MiB); first logs page {len(d)} bytes")
PY
