#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a real `weir serve` on loopback with a
# bounded number of generated cases per operation, checking every response
# against docs/openapi.json (status codes, content types, schemas, no 5xx,
# invalid data refused). Usage: bash .ci/schemathesis.sh [WEIR_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
weir=${1:-target/debug/weir}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
(cd tests/guests && cargo build --quiet --release --target wasm32-wasip2 -p echo)
mkdir -p "$work/project"
cp tests/guests/target/wasm32-wasip2/release/echo.wasm "$work/"
cat >"$work/project/quick.rhai" <<'RHAI'
let greeting = param("greeting", "hello");
let p = pipeline("quick");
p.step("hello", "../echo.wasm").output("out").params(#{ note: greeting });
RHAI
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=schemathesis-0123456789abcdef
"$weir" serve "$work/project" --store "$work/store" --bind "127.0.0.1:$port" --token "$token" \
  >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break
  sleep 0.1
done
# A run to look at, so the routes that read runs have one.
curl -sf -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/pipelines/quick/runs" >/dev/null
schemathesis --config-file .ci/schemathesis.toml run docs/openapi.json \
  --url "http://127.0.0.1:$port" -H "Authorization: Bearer $token" \
  --max-examples 25 --workers 1 --seed 1 --no-color
