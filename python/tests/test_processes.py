"""Real processes: multiprocessing (fork and spawn) contending for one name, a forked
child and its parent's lease, kill -9 of a holder, and the CLI on the same name."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import subprocess
import time

import pytest

import shmlease
from shmlease import LeaseState

from conftest import in_forked_child, read_line, run_workers

ROUNDS = 40


def _contend(table, name, inside, order, rounds, results):
    """A worker: takes the lease `rounds` times; inside it, checks that it is alone
    (`inside` goes 0 -> 1) and records (grant order, token, alone)."""
    seen = []
    for _ in range(rounds):
        with table.lease(name, ttl=30, wait=60) as lease:
            with inside.get_lock():
                inside.value += 1
                alone = inside.value == 1
            with order.get_lock():
                order.value += 1
                seq = order.value
            seen.append((seq, lease.token, alone))
            time.sleep(0.0005)
            with inside.get_lock():
                inside.value -= 1
    results.put(seen)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_contend_exclusively_with_growing_tokens(table, method):
    ctx = multiprocessing.get_context(method)
    inside = ctx.Value("i", 0)
    order = ctx.Value("i", 0)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_contend, args=(table, "shared", inside, order, ROUNDS, results))
        for _ in range(4)
    ]
    grants = sorted(g for seen in run_workers(workers, results, timeout=120) for g in seen)
    assert len(grants) == len(workers) * ROUNDS
    assert all(alone for _, _, alone in grants), "two holders at once"
    tokens = [t for _, t, _ in grants]
    assert all(a < b for a, b in zip(tokens, tokens[1:])), "tokens did not grow in grant order"
    assert table.get("shared").state == LeaseState.FREE


def _child_with_inherited_lease(lease, conn):
    """In a forked child: what it may and may not do with its parent's lease."""
    report = {"valid": lease.valid, "token": lease.token, "lost": lease.lost}
    for op in ("release", "renew", "detach"):
        try:
            getattr(lease, op)()
            report[op] = "done"
        except shmlease.BoundToProcess as e:
            report[op] = ("bound", e.holder.pid if e.holder else None)
    report["wait_lost"] = lease.wait_lost(0.1)
    with lease:  # leaving the block in the child does not release it either
        pass
    del lease
    gc.collect()
    conn.send(report)


def test_forked_child_never_releases_its_parents_lease(table):
    lease = table.acquire("parent", 30)
    report, _ = in_forked_child(_child_with_inherited_lease, lease)
    assert report["valid"] and report["token"] == lease.token and report["lost"] is None
    for op in ("release", "renew", "detach"):
        assert report[op] == ("bound", os.getpid()), op
    assert report["wait_lost"] is None
    # The parent still holds it, and releases it.
    assert lease.valid and table.get("parent").holder.pid == os.getpid()
    lease.release()


def _child_takes_its_own(table, conn):
    with table.lease("child-own", ttl=0.3) as lease:
        time.sleep(0.6)  # beyond its TTL: the child's own keeper must renew it
        conn.send((lease.valid, lease.token))


def test_forked_child_keeps_its_own_leases_alive(table):
    # The parent's keeper thread is not inherited; the child starts its own.
    with table.lease("warm", ttl=0.3):
        time.sleep(0.2)  # the parent's keeper thread runs
    (valid, token), _ = in_forked_child(_child_takes_its_own, table)
    assert valid and token > 0


HOLDER = """
import sys, shmlease
t = shmlease.Table(sys.argv[1], create=False)
lease = t.acquire("victim", ttl=60)
print(lease.token, flush=True)
sys.stdin.read() if False else __import__("time").sleep(600)
"""

TAKER = """
import sys, time, shmlease
t = shmlease.Table(sys.argv[1], create=False)
start = time.monotonic()
lease = t.acquire("victim", ttl=5, wait=30)
info = t.get("victim")
print(lease.token, time.monotonic() - start, t.info().counters.dead_holder_reclaims, flush=True)
"""


def test_kill_9_of_a_python_holder_is_reclaimed_by_another(table, children):
    holder = children.start(HOLDER, table.location)
    token = int(read_line(holder))
    assert table.get("victim").holder.pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    r = children.run(TAKER, table.location, timeout=60)
    assert r.returncode == 0, r.stderr
    new_token, waited, dead_reclaims = r.stdout.split()
    # Taken over long before the dead holder's 60 s TTL ran out: it was provably dead.
    assert int(new_token) > token and float(waited) < 30 and int(dead_reclaims) >= 1


def _cli(cli, table, *args, **kw):
    return subprocess.run(
        [cli, "-t", table.location, *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_python_and_the_cli_contend_for_one_name(table, cli, children):
    # The CLI takes a detached lease: Python sees it, is refused, and can end it by token.
    r = _cli(cli, table, "acquire", "job", "--ttl", "30s")
    assert r.returncode == 0, r.stderr
    cli_token = int(r.stdout.strip())
    with pytest.raises(shmlease.Held) as e:
        table.try_acquire("job", 1)
    assert e.value.token == cli_token and e.value.holder.detached
    table.release("job", cli_token)

    # Python holds it: the CLI is refused, then `shmlease run` waits for the release.
    lease = table.acquire("job", 30)
    assert lease.token > cli_token
    r = _cli(cli, table, "acquire", "job", "--ttl", "5s")
    assert r.returncode != 0 and "held" in r.stderr
    ls = json.loads(_cli(cli, table, "ls", "--json").stdout)
    entry = ls[0] if isinstance(ls, list) else ls["leases"][0]
    assert entry["name"] == "job" and entry["token"] == lease.token
    run = children.popen(
        [cli, "-t", table.location, "run", "job", "--ttl", "10s", "--wait", "30s", "--",
         "sh", "-c", 'echo "$SHMLEASE_TOKEN"'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    assert run.poll() is None, run.stderr.read()  # waiting for Python's lease
    lease.release()
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert int(out.strip()) > lease.token
    # And Python takes it after the CLI's run.
    with table.lease("job", 1, wait=0) as again:
        assert again.token > int(out.strip())
