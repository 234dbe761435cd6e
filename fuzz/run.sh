#!/usr/bin/env bash
# Seeds and runs the harness for FUZZ_SECONDS (default 300); the body of `make fuzz`, which first
# runs fuzz/deps.sh and fuzz/build.sh. Exits non-zero on any crash, sanitizer report, timeout or
# invariant violation; the input is saved under fuzz/crashes/.
#   FUZZ_ARGS  extra libFuzzer flags, e.g. FUZZ_ARGS="-seed=1 -max_len=2048"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FUZZ_PYTHON:-.venv/bin/python}
SECS=${FUZZ_SECONDS:-300}
LOG=fuzz/build/last-run.log
export CYVOY_FUZZ_STATS=fuzz/build/harness-stats.json

mkdir -p fuzz/corpus fuzz/crashes fuzz/build
"$PY" fuzz/fuzz_http1.py --seed
rm -f "$CYVOY_FUZZ_STATS"
echo "fuzz: running fuzz/fuzz_http1.py for ${SECS}s (full libFuzzer output: $LOG)"
set +e
# fuzz/corpus: inputs the fuzzer found (kept between runs); fuzz/seeds: regenerated each run
# shellcheck disable=SC2086
"$PY" fuzz/fuzz_http1.py -max_total_time="$SECS" -timeout=30 -rss_limit_mb=4096 -max_len=8192 \
    -dict=fuzz/http1.dict -print_final_stats=1 -artifact_prefix=fuzz/crashes/ ${FUZZ_ARGS:-} \
    fuzz/corpus fuzz/seeds >"$LOG" 2>&1 &
pid=$!
# progress: libFuzzer's periodic status lines
tail -n +1 -f "$LOG" --pid=$pid 2>/dev/null | grep --line-buffered -E "INITED|pulse|DONE" || true
wait $pid
rc=$?
set -e
"$PY" fuzz/fuzz_http1.py --summary "$LOG" "$CYVOY_FUZZ_STATS" "$rc"
exit "$rc"
