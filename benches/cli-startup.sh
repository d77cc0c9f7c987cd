#!/usr/bin/env bash
# `shmlease run NAME -- true` against util-linux `flock FILE true`, wall time, alternating
# the two in one run (issue 15, target 4). See BENCHMARKS.md, "The CLI as quick as
# flock(1)".
#
#   bash benches/cli-startup.sh                 # 2000 rounds of each
#   ROUNDS=500 bash benches/cli-startup.sh
#   BEFORE=/tmp/shmlease-old bash benches/cli-startup.sh   # also an older build, same run
#   STATIC=1 bash benches/cli-startup.sh        # also a static-pie build (see BENCHMARKS.md)
#   HYPERFINE=1 bash benches/cli-startup.sh     # also hyperfine's view (not alternating)
#
# The table is a shared-memory segment of its own (the run-time default is a segment
# too), named by $SHMLEASE_TABLE so that the command is exactly `shmlease run NAME -- true`;
# flock's file is in a directory of its own under /tmp. Both are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2000}
WARMUP=${WARMUP:-50}
cargo build --release --bin shmlease >&2
bin=$PWD/target/release/shmlease
mkdir -p target/bench
cc -O2 -Wall -o target/bench/cli-startup benches/cli-startup.c
commands=(:: "$bin" run bench -- true)
if [ -n "${BEFORE:-}" ]; then
    commands=(:: "$BEFORE" run bench -- true "${commands[@]}")
fi
if [ -n "${STATIC:-}" ]; then
    # RUSTFLAGS only for the target, not for build scripts and proc macros: --target.
    target=$(rustc -vV | sed -n 's/^host: //p')
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static \
        cargo build --release --bin shmlease --target "$target" >&2
    commands+=(:: "$PWD/target/static/$target/release/shmlease" run bench -- true)
fi

dir=$(mktemp -d /tmp/shmlease-cli-bench.XXXXXX)
export SHMLEASE_TABLE=shmlease-cli-bench-$$
trap '"$bin" rm --force >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
touch "$dir/lock"
"$bin" create >&2

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $ROUNDS rounds after $WARMUP; ratios against the last command (flock)"
target/bench/cli-startup "$ROUNDS" "$WARMUP" "${commands[@]}" :: flock "$dir/lock" true
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -n "${HYPERFINE:-}" ] && command -v hyperfine >/dev/null; then
    hyperfine -N --warmup "$WARMUP" --runs "$ROUNDS" \
        "$bin run bench -- true" "flock $dir/lock true"
fi
