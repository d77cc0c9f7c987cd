#!/usr/bin/env bash
# Runs every cargo-fuzz target of shmlease for a bounded time; what CI calls:
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
#
# Installs cargo-fuzz if it is missing, then fuzzes each target in turn, starting from a
# scratch copy of its committed corpus (fuzz/corpus/<target>/ is never modified), with
# AddressSanitizer. Prints the executions run per target. Exits non-zero if any target
# finds a panic, a sanitizer report, a hang (-timeout), or runs out of memory
# (-rss_limit_mb); the reproducer is then in fuzz/artifacts/<target>/.
#
# Stable Rust only: -Zsanitizer=address is a nightly flag, so RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept it (see docs/fuzzing.md). FUZZ_SANITIZER=none turns ASan off.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 64 ;;
esac
sanitizer="${FUZZ_SANITIZER:-address}"
targets=(open_bytes corrupt_ops)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

echo "== building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/shmlease-fuzz-run.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="$scratch/corpus-$target"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$target"/* "$corpus"/
  log="$scratch/$target.log"
  echo "== fuzzing $target for ${seconds}s"
  status=0
  cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  # Progress lines and the recommended dictionary are many: show the start, the end and
  # the statistics.
  grep -E '^#[0-9]+[[:space:]]+INITED' "$log" || true
  grep -vE '^(#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|")' "$log" | tail -n 30
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
  cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)"
  summary+=("$target: ${execs:-?} executions, ${rate:-?} exec/s, ${cov:-no coverage line}, exit $status")
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "!! $target failed (exit $status); reproducer: fuzz/artifacts/$target/" >&2
    # The tail above may be all backtrace: show what the target said (the panic message
    # or the sanitizer's report), the seed, and each reproducer as base64, so that a CI
    # log alone is enough to replay the finding (`base64 -d > crash; cargo fuzz run
    # $target crash`).
    grep -m 1 -E '^INFO: Seed:' "$log" || true
    grep -m 1 -B 2 -A 40 -E "panicked at|==[0-9]+==ERROR|ERROR: libFuzzer|LeakSanitizer" "$log" \
      | grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' || true
    for artifact in fuzz/artifacts/"$target"/*; do
      [ -f "$artifact" ] || continue
      echo "-- reproducer $artifact ($(wc -c <"$artifact") bytes), base64:"
      base64 -w 0 "$artifact" | head -c 65536
      echo
    done
  fi
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "ok: no findings"
