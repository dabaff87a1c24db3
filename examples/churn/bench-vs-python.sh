#!/usr/bin/env bash
# Benchmarks the churn pipeline against the same pipeline in plain Python
# (pandas + scikit-learn, installed from PyPI into a venv under target/) on
# the same data file. Prints a table: first run (fresh store, step crates
# already built), cached re-run, and the F1 / ROC AUC each reaches; medians
# of RUNS runs (default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
venv=target/churn-bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet pandas pyarrow scikit-learn
fi
cargo build --release --quiet
weir=$PWD/target/release/weir
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Build the step crates once (not part of any timing).
"$weir" run examples/churn/pipeline.rhai --store "$work/warm" >/dev/null

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: >"$work/first"; : >"$work/cached"; : >"$work/py"
for i in $(seq "$RUNS"); do
  s=$(now); "$weir" run examples/churn/pipeline.rhai --store "$work/s$i" >"$work/out" ; e=$(now)
  awk -v a="$s" -v b="$e" 'BEGIN{print b - a}' >>"$work/first"
  s=$(now); "$weir" run examples/churn/pipeline.rhai --store "$work/s$i" >/dev/null ; e=$(now)
  awk -v a="$s" -v b="$e" 'BEGIN{print b - a}' >>"$work/cached"
done
f1=$("$weir" metrics 1 --store "$work/s1" --json | "$venv/bin/python" -c 'import json,sys; m=json.load(sys.stdin)["metrics"]["evaluate_model"]; print("%.4f %.4f" % (m["f1"], m["roc_auc"]))')
data=$(ls "$work"/s1/views/*/customers.parquet | head -1)
for i in $(seq "$RUNS"); do
  s=$(now); "$venv/bin/python" examples/churn/bench_python.py "$data" 30 0.3 7 >"$work/py.json"; e=$(now)
  awk -v a="$s" -v b="$e" 'BEGIN{print b - a}' >>"$work/py"
done
pyf1=$("$venv/bin/python" -c 'import json; m=json.load(open("'"$work/py.json"'")); print("%.4f %.4f" % (m["f1"], m["roc_auc"]))')

wf=$(median <"$work/first"); wc=$(median <"$work/cached"); pf=$(median <"$work/py")
printf '\nchurn pipeline, %s rows, median of %s runs (seconds)\n' 40000 "$RUNS"
printf '%-28s %10s %10s %8s %8s\n' "" "first run" "re-run" "F1" "ROC AUC"
printf '%-28s %10.3f %10.3f %8s %8s\n' "weir (7 wasm steps)" "$wf" "$wc" $f1
printf '%-28s %10.3f %10.3f %8s %8s\n' "pandas + scikit-learn" "$pf" "$pf" $pyf1
printf 'ratios: first run weir/python %.2f; re-run weir/python %.3f\n' \
  "$(awk -v a="$wf" -v b="$pf" 'BEGIN{print a / b}')" "$(awk -v a="$wc" -v b="$pf" 'BEGIN{print a / b}')"
