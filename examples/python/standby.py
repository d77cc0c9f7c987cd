"""Hot standby: three candidate processes campaign for one election ("controller");
the leader works with its term — it appends steps to a journal that refuses a term
older than one it has seen (fencing) — and the others wait. The leader is killed with
SIGKILL, twice: each time a standby takes over at once, long before the dead leader's
TTL (30 s) would have run out, because the leader's death wakes the candidates. The
last leader is stopped with SIGTERM, which its signal handler turns into
``stopper.stop()``: it finishes its step and resigns.

    pip install ./python && python3 examples/python/standby.py

Exits with status 0 when the story checks out: three leaders one after another, terms
strictly increasing in the journal, no step of an older term after a newer one, each
takeover well inside the TTL.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time

import shmlease

NAME = "controller"
TTL = 30.0  # seconds: how long a *frozen* leader would block; a dead one blocks nobody


class Journal:
    """The shared resource: an append-only file that accepts a step only with a term at
    least as new as every term it has seen (fencing)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, term: int, text: str) -> bool:
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # the journal's own consistency, not the election
            f.seek(0)
            newest = max((int(line.split()[0]) for line in f if line.strip()), default=0)
            if term < newest:
                return False
            f.write(f"{term} {text}\n")
            return True

    def entries(self) -> list[tuple[int, str]]:
        with open(self.path) as f:
            return [(int(t), rest) for t, rest in (line.rstrip("\n").split(" ", 1) for line in f)]


def candidate(location: str, journal_path: str, label: str) -> None:
    """One candidate process: campaigns, leads while elected, hands over when stopped."""
    table = shmlease.Table(location, create=False)
    election = table.election(NAME, ttl=TTL, label=label)
    journal = Journal(journal_path)
    stopper = shmlease.Stopper()
    signal.signal(signal.SIGTERM, lambda *_: stopper.stop())  # a clean shutdown hands over

    def lead(leading: shmlease.Leading) -> int:
        print(f"{label}: leading, term {leading.term}", flush=True)
        steps = 0
        while leading.wait_stop(0.02) is None:  # a step every 20 ms until told to stop
            if not journal.append(leading.term, f"{label} step {steps}"):
                print(f"{label}: the journal refused term {leading.term}", flush=True)
                break
            steps += 1
        return steps

    def on_new_leader(leader: shmlease.Leader) -> None:
        if leader.pid != os.getpid():
            print(f"{label}: standing by; {leader.label} leads term {leader.term}", flush=True)

    def on_stopped(stopped: shmlease.Stopped) -> None:
        print(f"{label}: stopped ({stopped.reason}), resigned: {stopped.resigned}", flush=True)

    election.run(lead, on_new_leader=on_new_leader, on_stopped=on_stopped, stopper=stopper)


def next_leader(observer: shmlease.Observer, after: int) -> shmlease.Leader:
    """The first leader the observer reports with a term above `after`."""
    while True:
        change = observer.next_change(60)
        if change is None:
            sys.exit("nobody took over within 60 s")
        if change.leader is not None and change.term > after:
            return change.leader


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="shmlease-standby-")
    location = os.path.join(workdir, "leases")
    journal_path = os.path.join(workdir, "journal")
    open(journal_path, "w").close()
    table = shmlease.Table(location, capacity=16)
    journal = Journal(journal_path)
    election = table.election(NAME)
    observer = election.observe()
    observer.next_change(0)  # nobody leads yet

    labels = ["node-a", "node-b", "node-c"]
    procs = {}
    for label in labels:
        p = subprocess.Popen([sys.executable, __file__, "--candidate", location, journal_path, label])
        procs[p.pid] = p
    leaders = []
    takeovers = []
    try:
        leader = next_leader(observer, 0)
        for round_ in range(3):
            leaders.append(leader)
            # Let it work a little.
            while sum(1 for t, _ in journal.entries() if t == leader.term) < 5:
                time.sleep(0.01)
            victim = procs[leader.pid]
            if round_ < 2:
                print(f"main: SIGKILL {leader.label} (pid {leader.pid}, term {leader.term})", flush=True)
                killed = time.monotonic()
                victim.kill()
                leader = next_leader(observer, leader.term)
                took = time.monotonic() - killed
                takeovers.append(took)
                print(f"main: {leader.label} took over term {leader.term} in {took * 1000:.1f} ms", flush=True)
            else:
                print(f"main: SIGTERM {leader.label}: it hands over", flush=True)
                victim.terminate()
                if victim.wait(30) != 0:
                    sys.exit(f"{leader.label} did not end cleanly")
        if election.leader() is not None:
            sys.exit("somebody still leads after the last leader resigned")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        shmlease.Table.remove(location, force=True)

    entries = journal.entries()
    terms = [t for t, _ in entries]
    if terms != sorted(terms):
        sys.exit("a step of an older term came after a newer one")
    if [leader.term for leader in leaders] != sorted(set(terms)) or len(set(terms)) != 3:
        sys.exit(f"expected the three leaders' terms in the journal, got {sorted(set(terms))}")
    if len({leader.pid for leader in leaders}) != 3:
        sys.exit("a leader led twice")
    if any(t > TTL / 3 for t in takeovers):
        sys.exit(f"a takeover waited for the TTL: {takeovers}")
    print(f"main: {len(entries)} steps by 3 leaders, terms increasing; takeovers after SIGKILL "
          f"in {', '.join(f'{t * 1000:.1f} ms' for t in takeovers)} with a {TTL:.0f} s TTL")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--candidate":
        candidate(*sys.argv[2:])
    else:
        sys.exit(main())
