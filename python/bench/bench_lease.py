"""Uncontended lease enter + exit from Python, against the Python locks people use
today, in the same run; and the overhead of the Python layer over the Rust call.

    pip install ./python filelock fasteners portalocker
    python3 python/bench/bench_lease.py [--rounds 15] [--iterations 20000]

Each candidate runs `iterations` enter+exit pairs per round (the file locks a tenth as
many: they are a hundred times slower); rounds are interleaved
among candidates (so that a slow phase of the machine hits all of them), and the
figure is the median over rounds of the mean time per pair. Lock files and the lease
table live in one tmpfs directory (/dev/shm), the file locks' best case.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import shmlease
from shmlease import _shmlease


def timed(fn, iterations: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(iterations):
        fn()
    return (time.perf_counter_ns() - start) / iterations


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=20000)
    args = ap.parse_args()

    import fasteners
    import filelock
    import portalocker

    tmp = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    table = shmlease.Table(os.path.join(tmp, "leases"), capacity=64)
    fl = filelock.FileLock(os.path.join(tmp, "filelock.lock"))
    fa = fasteners.InterProcessLock(os.path.join(tmp, "fasteners.lock"))
    pl = portalocker.Lock(os.path.join(tmp, "portalocker.lock"))

    def shm_lease():
        with table.lease("bench", ttl=10):
            pass

    def shm_lease_no_keep_alive():
        with table.lease("bench", ttl=10, keep_alive=False):
            pass

    def shm_try_release():
        table.try_acquire("bench", 10).release()

    def with_filelock():
        with fl:
            pass

    def with_fasteners():
        with fa:
            pass

    def with_portalocker():
        with pl:
            pass

    candidates = {
        "shmlease: with table.lease(name, ttl=10)": shm_lease,
        "shmlease: ... keep_alive=False": shm_lease_no_keep_alive,
        "shmlease: try_acquire(name, 10).release()": shm_try_release,
        f"filelock.FileLock {filelock.__version__}": with_filelock,
        f"fasteners.InterProcessLock {fasteners.__version__}": with_fasteners,
        f"portalocker.Lock {portalocker.__version__}": with_portalocker,
    }
    rust = "Rust: try_acquire + release (same table, no Python)"
    samples: dict[str, list[float]] = {name: [] for name in [*candidates, rust]}
    def iterations(name: str) -> int:
        return args.iterations if name.startswith("shmlease") else max(args.iterations // 10, 100)

    for fn in candidates.values():  # warm up
        timed(fn, 1000)
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            samples[name].append(timed(fn, iterations(name)))
        samples[rust].append(_shmlease._bench_rust_fast_path(table, "bench", args.iterations))
    shmlease.Table.remove(table.location)
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)

    med = {name: statistics.median(s) for name, s in samples.items()}
    ours = med["shmlease: with table.lease(name, ttl=10)"]
    print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.iterations} enter+exit "
          f"({iterations('peer')} for file locks), medians")
    print(f"{'candidate':55} {'ns/op':>10} {'vs with table.lease':>20}")
    for name, ns in med.items():
        print(f"{name:55} {ns:10.0f} {ns / ours:19.2f}x")
    peers = [ns for name, ns in med.items() if not name.startswith(("shmlease", "Rust"))]
    fastest_peer = min(peers)
    print(f"\nwith table.lease(...) is {fastest_peer / ours:.1f}x faster than the fastest peer "
          f"({'meets' if fastest_peer / ours >= 10 else 'MISSES'} the 10x goal)")
    print(f"overhead of the Python layer over the Rust call: {ours - med[rust]:.0f} ns "
          f"({ours / med[rust]:.1f}x the Rust call's {med[rust]:.0f} ns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
