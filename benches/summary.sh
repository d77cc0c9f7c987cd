#!/usr/bin/env bash
# Every headline figure of BENCHMARKS.md from one run, as one Markdown table (the table
# that ends BENCHMARKS.md): each harness in turn, its output kept, then one row per figure
# with the command that reproduces it alone.
#
#   bash benches/summary.sh                 # about 12 minutes on 2 cores
#   OUT=/tmp/run bash benches/summary.sh    # keep the harnesses' output in /tmp/run
#   BASE=/tmp/old bash benches/summary.sh   # also an older checkout's `get`, `list`,
#                                           # refusal, handoff and scale, same run (build
#                                           # it first there: cargo bench --no-run)
#
# Ratios are medians over alternating rounds measured inside one harness (both sides of a
# ratio always come from the same harness run); absolute figures move with the machine's
# load, which is printed before and after. Needs gcc (the C and CLI harnesses), flock(1)
# (util-linux) and python3 (the table).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d /tmp/shmlease-summary.XXXXXX)}"
mkdir -p "$out"

echo "== building (release): the C library, the CLI, the bench harnesses" >&2
cargo build --release -p shmlease-ffi >&2
cargo build --release --bin shmlease >&2
cargo bench --no-run --bench fastpath --bench handoff --bench c_api --bench kinds --bench scale >&2 2>&1 \
  | grep -v '^ *Executable' >&2 || true
exe() { # the bench binary of harness $1 (the newest build), in checkout $2 (default: here)
  local target
  target="$(cd "${2:-.}" && cargo metadata --format-version 1 --no-deps \
    | sed -n 's|.*"target_directory":"\([^"]*\)".*|\1|p')"
  ls -t "$target"/release/deps/"$1"-* | grep -v '\.d$' | head -n 1
}

step() { # step NAME COMMAND...: runs it, keeping its output in $out/NAME.log
  local name="$1"; shift
  echo "== $name: $*" >&2
  "$@" >"$out/$name.log" 2>&1 || { echo "!! $name failed; see $out/$name.log" >&2; tail -n 20 "$out/$name.log" >&2; exit 1; }
}

lenient() { # as step, but a failure only warns: an old checkout's harness may trip over
  # its own clean-up after it has printed its figures (545327b's fastpath does)
  local name="$1"; shift
  echo "== $name: $*" >&2
  "$@" >"$out/$name.log" 2>&1 || echo "!! $name exited with $?; using what it printed ($out/$name.log)" >&2
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u +%FT%TZ)"
crit_filter='ours/(get|list_1000_leases|try_acquire_refused_held_by_other_process|is_valid)$'
if [ -n "${BASE:-}" ]; then
  # Each old harness right before its new twin, from the old checkout (its own files).
  (cd "$BASE" && lenient base-criterion "$(exe fastpath)" --bench "$crit_filter")
fi
step ratio env SHMLEASE_RATIO=1 "$(exe fastpath)" --bench
step criterion "$(exe fastpath)" --bench "$crit_filter"
step contention env SHMLEASE_TPUT_ONLY=1 "$(exe handoff)" --bench
if [ -n "${BASE:-}" ]; then
  (cd "$BASE" && lenient base-handoff "$(exe handoff)" --bench)
fi
step handoff "$(exe handoff)" --bench
step c_api "$(exe c_api)" --bench
step cli env ROUNDS="${CLI_ROUNDS:-1000}" bash benches/cli-startup.sh
step kinds "$(exe kinds)" --bench
if [ -n "${BASE:-}" ]; then
  (cd "$BASE" && lenient base-scale "$(exe scale)" --bench '/1000000$')
fi
step scale "$(exe scale)" --bench '/1000000$'
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$started" "$load_before" "$load_after" "${BASE:-}" <<'EOF'
import os, re, sys
out, started, before, after, base = sys.argv[1:6]
def log(name):
    try:
        with open(f"{out}/{name}.log") as f:
            return f.read()
    except OSError:
        return ""
def find(name, pattern, group=1):
    m = re.search(pattern, log(name), re.M)
    return m.group(group) if m else "—"
def crit(name, which="criterion"):
    # criterion: "ours/get   time:   [a ns b ns c ns]" (the id may be on its own line)
    m = re.search(re.escape(name) + r"\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", log(which))
    return m.group(1) if m else "—"
def was(value):
    """The peer column of a no-regression row: the older checkout's figure, same run."""
    return f"before ({os.path.basename(base.rstrip('/'))}): {value}" if base else "—"
rows = []
def row(measure, figure, peer, ratio, target, command):
    rows.append((measure, figure, peer, ratio, target, command))

r = "SHMLEASE_RATIO=1 target/release/deps/fastpath-* --bench"
row("`try_acquire`+`release`, 8-byte name",
    find("ratio", r"^ours/try_acquire\+release\s+median\s+(\S+ ns)"),
    "clock + CAS64 + CAS64: " + find("ratio", r"^limit/clock\+CAS64_acquire\+release\s+median\s+(\S+ ns)"),
    find("ratio", r"ratio try_acquire\+release / limit: (\S+)"), "≤ 1.0", r)
row("`renew`", find("ratio", r"^ours/renew\s+median\s+(\S+ ns)"),
    "clock + CAS64: " + find("ratio", r"^limit/clock\+CAS64_renew\s+median\s+(\S+ ns)"),
    find("ratio", r"ratio renew / limit:\s+(\S+)"), "≤ 1.1", r)
c = "SHMLEASE_TPUT_ONLY=1 target/release/deps/handoff-* --bench"
row("two processes, one name, blocking `acquire`",
    find("contention", r"medians: lease (\d+) /s") + " /s",
    "robust pthread mutex: " + find("contention", r"mutex (\d+) /s") + " /s",
    find("contention", r"ratio (\S+)$"), "≥ 1.0", c)
capi = "cargo build --release -p shmlease-ffi && cargo bench --bench c_api"
row("C `try_acquire_in`+`release` (caller storage)",
    find("c_api", r"^\s+c_storage\s+\S+\s*/\s*(\S+)\s*/") + " ns", "Rust: " + find("c_api", r"^\s+rust\s+\S+\s*/\s*(\S+)\s*/") + " ns",
    find("c_api", r"^\s+c_storage .*ratio (\S+)"), "≤ 1.15", capi)
row("C `try_acquire`+`release`+`free` (heap handle)",
    find("c_api", r"^\s+c_handle\s+\S+\s*/\s*(\S+)\s*/") + " ns", "Rust", find("c_api", r"^\s+c_handle .*ratio (\S+)"), "—", capi)
cli = "bash benches/cli-startup.sh"
cli_row = lambda: re.findall(r"^(\d+)\s+(\S+)\s+\S+\s+\S+\s+(\S+)\s+\S+\s+(.*)$", log("cli"), re.M)
rs = cli_row()
ours = next((x for x in rs if "shmlease" in x[3]), None)
fl = next((x for x in rs if x[3].startswith("flock")), None)
row("`shmlease run NAME -- true`, wall time", (ours[1] + " µs") if ours else "—",
    ("`flock FILE true`: " + fl[1] + " µs") if fl else "—", ours[2] if ours else "—", "≤ 1.0", cli)
crit_cmd = "cargo bench --bench fastpath -- 'ours/NAME$'"
for label, id in [("`try_acquire` refused (held by another live process)", "try_acquire_refused_held_by_other_process"),
                  ("`get`", "get"), ("`list`, 1,000 leases", "list_1000_leases"), ("`is_valid`", "is_valid")]:
    row(label, crit("ours/" + id), was(crit("ours/" + id, "base-criterion")), "—", "no regression", crit_cmd)
h = "cargo bench --bench handoff"
for place in ["cross_core", "same_core"]:
    ours_p50 = find("handoff", rf"^lease_{place}\s+(\d+)") + " ns"
    peer = "robust mutex: " + find("handoff", rf"^robust_mutex_{place}\s+(\d+)") + " ns"
    if base:
        peer += "; " + was(find("base-handoff", rf"^lease_{place}\s+(\d+)") + " ns")
    row(f"handoff latency p50, {place.replace('_', '-')} (release → waiter holds)", ours_p50, peer,
        "—", "no regression", h)
s = "cargo bench --bench scale -- '/1000000$'"
def create_open(which):
    return (find(which, r"capacity\s+1000000: create\s+(\S+ ms)") + " / "
            + find(which, r"capacity\s+1000000: create\s+\S+ ms, open\s+(\S+ ms)"))
row("1,000,000 slots: create / open", create_open("scale"), was(create_open("base-scale")), "—",
    "no regression", s)
def half_full(which):
    m = re.search(r"scale_random/occupancy_50pct/1000000\s+time:\s+\[\S+ \S+ (\S+ \S+)", log(which))
    return m.group(1) if m else "—"
row("1,000,000 slots, half full: `try_acquire`+`release` of a random name", half_full("scale"),
    was(half_full("base-scale")), "—", "no regression", s)
k = "cargo bench --bench kinds"
for label in ["permits_2", "permits_8", "shared", "fair"]:
    row(f"{label}: uncontended acquire+release", find("kinds", rf"^\s+{label}\s+(\S+) ns") + " ns",
        "exclusive: " + find("kinds", r"^\s+exclusive\s+(\S+) ns") + " ns",
        find("kinds", rf"^\s+{label}\s+\S+ ns\s+(\S+)x"), "—", k)

print(f"Run {started}, {out}; load average before {before}, after {after}.\n")
print("| measure | figure | peer / limit (same run) | ratio | target | command |")
print("|---|---:|---|---:|---|---|")
for r in rows:
    print("| " + " | ".join(r[:5]) + f" | `{r[5]}` |")
EOF
echo "logs: $out" >&2
