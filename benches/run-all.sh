#!/usr/bin/env bash
# Runs every benchmark of issue 5 once, under the baseline name given (default "new"),
# then prints the Markdown tables and writes docs/bench/results.svg.
#
#   bash benches/run-all.sh run1            # full run (~6 minutes on 2 cores)
#   QUICK=1 bash benches/run-all.sh smoke   # smoke run (short criterion times)
#   python3 benches/report.py run1 run2     # tables for several runs side by side
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-new}"
extra=()
if [[ -n "${QUICK:-}" ]]; then extra=(--warm-up-time 0.3 --measurement-time 0.5); fi
# The C library, so that the fast-path and C API benches can load it (skipped with a note
# if absent).
cargo build --release -p shmlease-ffi
cargo bench --bench fastpath --bench scale --bench handoff --bench c_api -- --save-baseline "$name" "${extra[@]}"
python3 benches/report.py "$name" > "docs/bench/results-$name.md"
echo "tables: docs/bench/results-$name.md, picture: docs/bench/results.svg"
