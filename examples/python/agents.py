"""Agents sharing one resource: three agent processes take turns with a "browser"
(any tool only one agent may drive at a time), each turn under a lease; the tool
fences: it rejects a write whose token is older than one it has seen.

One agent freezes mid-turn (SIGSTOP, as a debugger, a swap storm or a stopped
container would do) for longer than its TTL. Its lease expires, another agent takes
the tool over, and when the frozen agent wakes up (once the other has written) its
stale write is rejected by the fence and it learns that its lease was lost.

    pip install ./python && python3 examples/python/agents.py

Exits with status 0 when the story checks out: turns never overlapped, tokens only
grew, the frozen agent's write was rejected.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import sys
import tempfile
import time

import shmlease

TTL = 0.5  # seconds; the keep-alive renews every TTL/3 while an agent is alive


class FencedTool:
    """The shared resource: an append-only journal that accepts a write only with a
    token at least as new as every token it has seen (fencing)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, token: int, text: str) -> bool:
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # the tool's own consistency, not the lease
            f.seek(0)
            newest = max((int(line.split()[0]) for line in f if line.strip()), default=0)
            if token < newest:
                return False
            f.write(f"{token} {text}\n")
            return True


def agent(name: str, location: str, journal: str, turns: int, freeze_on: int) -> None:
    table = shmlease.Table(location, create=False)
    tool = FencedTool(journal)
    for turn in range(turns):
        try:
            with table.lease("browser", ttl=TTL, wait=30, label=name) as lease:
                print(f"{name}: turn {turn}, token {lease.token}", flush=True)
                if turn == freeze_on:
                    print(f"{name}: freezing mid-turn...", flush=True)
                    os.kill(os.getpid(), signal.SIGSTOP)  # the parent resumes us later
                ok = tool.write(lease.token, f"{name} turn {turn}")
                if not ok:
                    print(f"{name}: the tool rejected my write (stale token {lease.token})", flush=True)
                time.sleep(0.05)  # the work
        except shmlease.Lost as e:
            print(f"{name}: my lease was lost while I was frozen ({e.reason}); I stop acting on it", flush=True)


def state_of(pid: int) -> str:
    """The process state letter from /proc ("T": stopped)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.01)


def main() -> int:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        location = os.path.join(tmp, "leases")
        journal = os.path.join(tmp, "journal")
        shmlease.Table(location, capacity=16)

        def start(name: str, freeze_on: int = -1) -> multiprocessing.process.BaseProcess:
            p = ctx.Process(target=agent, args=(name, location, journal, 4, freeze_on))
            p.start()
            return p

        # Ada goes first and freezes in her first turn, holding the lease.
        ada = start("ada", freeze_on=0)
        wait_for(lambda: state_of(ada.pid) == "T", "ada to freeze")
        # Bob and Cy want the tool too: one of them takes it over once Ada's lease
        # expires, and writes with a newer token.
        others = [start("bob"), start("cy")]
        wait_for(lambda: os.path.exists(journal) and os.path.getsize(journal) > 0, "a write")
        os.kill(ada.pid, signal.SIGCONT)  # Ada wakes up and carries on with her stale token
        agents = [ada, *others]
        for a in agents:
            a.join(60)
            if a.is_alive():
                a.kill()
        lines = open(journal).read().split("\n")[:-1]
        tokens = [int(line.split()[0]) for line in lines]
        print(f"journal: {len(lines)} writes accepted")
        good = tokens == sorted(tokens) and len(lines) == 3 * 4 - 1
        good = good and not any("ada turn 0" in line for line in lines)
        shmlease.Table.remove(location)
    print("ok: turns fenced, tokens only grew, the frozen agent's stale write was rejected" if good else "FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
