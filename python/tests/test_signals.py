"""Ctrl-C during a wait: a child Python process blocked in a wait gets SIGINT and
raises KeyboardInterrupt (the wait does not swallow the signal or run to its end)."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import read_line

WAITER = """
import sys, time, shmlease
import signal
# Started from a background job, SIGINT may come ignored, and Python then installs no
# KeyboardInterrupt handler: install it, as an interactive start would.
signal.signal(signal.SIGINT, signal.default_int_handler)
t = shmlease.Table(sys.argv[1], create=False)
what = sys.argv[2]
if what == "wait_lost":
    lease = t.acquire("own", ttl=600)
print("waiting", flush=True)
start = time.monotonic()
try:
    if what == "acquire":
        t.acquire("held", ttl=1, wait=None)   # held by the test: would wait forever
    else:
        lease.wait_lost()                     # valid for 600 s: would wait that long
except KeyboardInterrupt:
    print("interrupted", time.monotonic() - start, flush=True)
    sys.exit(3)
print("returned", flush=True)
"""


@pytest.mark.parametrize("what", ["acquire", "wait_lost"])
def test_sigint_interrupts_a_blocking_wait(table, children, what):
    holder = table.acquire("held", ttl=600)
    child = children.start(WAITER, table.location, what)
    assert read_line(child) == "waiting"
    time.sleep(0.3)  # well inside the wait
    child.send_signal(signal.SIGINT)
    # The watchdog: a wait that ignored the signal would run for 600 s.
    out, err = child.communicate(timeout=30)
    assert child.returncode == 3, (out, err)
    assert out.startswith("interrupted"), out
    holder.release()
