"""Agents sharing one resource: three agent processes take turns with a "browser"
(any tool only one agent may drive at a time), each turn under a lease; the tool
fences: it rejects a write whose token is older than one it has seen.

One agent freezes mid-turn (SIGSTOP, as a debugger, a swap storm or a stopped
container would do) for longer than its TTL. Its lease expires, another agent takes
the tool over, and when the frozen agent wakes up its stale write is rejected by the
fence and it learns that its lease was lost.

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


def main() -> int:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        location = os.path.join(tmp, "leases")
        journal = os.path.join(tmp, "journal")
        shmlease.Table(location, capacity=16)
        agents = [
            ctx.Process(target=agent, args=(n, location, journal, 4, 1 if n == "ada" else -1))
            for n in ("ada", "bob", "cy")
        ]
        for a in agents:
            a.start()
        frozen = agents[0]
        # Wait until ada has frozen, keep her frozen for 4 TTLs, then wake her up.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(f"/proc/{frozen.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.01)
        time.sleep(4 * TTL)
        os.kill(frozen.pid, signal.SIGCONT)
        for a in agents:
            a.join(60)
            if a.is_alive():
                a.kill()
        lines = open(journal).read().split("\n")[:-1]
        tokens = [int(line.split()[0]) for line in lines]
        print(f"journal: {len(lines)} writes accepted")
        good = tokens == sorted(tokens) and len(lines) == 3 * 4 - 1
        good = good and not any("ada turn 1" in line for line in lines)
        shmlease.Table.remove(location)
    print("ok: turns fenced, tokens only grew, the frozen agent's stale write was rejected" if good else "FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
