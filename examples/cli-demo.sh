#!/usr/bin/env bash
# The command-line tool in one minute: two `shmlease run` contend for one lease; the
# second waits (and says who holds it) until the first is done, then runs with a larger
# fencing token; `-n` shows the conflict exit code; a supervisor killed with SIGKILL
# takes its command down with it and its lease is reclaimed at once.
#
#   bash examples/cli-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary is wherever cargo put it (CARGO_TARGET_DIR, a shared target directory):
# cargo's own report of the build names it.
sl=$(cargo build --release --quiet --bin shmlease --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ ! -x "$sl" ]; then
    echo "cli-demo.sh: cargo built no shmlease executable (got: '$sl')" >&2
    exit 1
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/shmlease-demo.XXXXXX")
export SHMLEASE_TABLE="$scratch/table"
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    "$sl" rm --force >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT
"$sl" create --capacity 64

say() { printf '\n== %s\n' "$*"; }

say 'A and B both want the lease "deploy"; B waits for A'
"$sl" run deploy --label A -- sh -c 'echo "A: deploying with token $SHMLEASE_TOKEN"; sleep 2; echo "A: done"' &
sleep 0.3
"$sl" run deploy --label B -- sh -c 'echo "B: deploying with token $SHMLEASE_TOKEN"' &
sleep 0.3
"$sl" ls
wait

say 'while C holds it, `run -n` does not wait: exit code 75'
"$sl" run deploy --label C -- sleep 3 &
sleep 0.3
status=0
"$sl" run -n deploy -- echo "never printed" || status=$?
echo "exit code $status"
wait

say 'D holds it with a 60 s TTL and its supervisor is killed with SIGKILL'
"$sl" run deploy --ttl 60s --label D -- sh -c "echo \$\$ > $scratch/cmd; exec sleep 300" &
supervisor=$!
sleep 0.3
{ kill -9 "$supervisor"; wait "$supervisor"; sleep 0.1; } 2>/dev/null || true
# Gone, or a zombie (it runs no more code) until its new parent reaps it.
state=$(sed 's/.*) \(.\).*/\1/' "/proc/$(cat "$scratch/cmd")/stat" 2>/dev/null || echo gone)
echo "sleep 300 still running: $(case $state in gone | Z) echo no ;; *) echo yes ;; esac)"
"$sl" run -n deploy --label E -- sh -c 'echo "E: got it at once, token $SHMLEASE_TOKEN"'

say 'the table'
"$sl" info
