"""Fixtures: a table of its own for each test (removed afterwards), child Python
processes that are always killed, and the CLI binary; and what tests share besides:
reading a child's lines, multiprocessing workers and forked children that are never
left running, and the ticks of an event loop."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import shmlease

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def location(tmp_path: Path) -> str:
    """A path for a table of this test's own (in pytest's temporary directory)."""
    return str(tmp_path / "leases")


@pytest.fixture
def table(location: str):
    """A fresh file-backed table, removed (forcibly) after the test."""
    t = shmlease.Table(location, capacity=64)
    yield t
    shmlease.Table.remove(location, force=True)


@pytest.fixture
def shm_name():
    """A unique shared-memory segment name; the segment is removed after the test."""
    name = f"shmlease-pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        shmlease.Table.remove(f"shm:{name}", force=True)
    except shmlease.NotFound:
        pass


class Children:
    """Child processes started by a test: each in a process group of its own, killed
    with all its descendants (a stopped agent, a CLI's command) when the test ends,
    whatever happened."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, code: str, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            # Not the source tree: its shmlease/ lacks the built native module.
            cwd=kw.pop("cwd", "/"),
            start_new_session=True,
            **kw,
        )
        self.procs.append(p)
        return p

    def popen(self, argv: list, **kw) -> subprocess.Popen:
        """Any command, in its own process group, killed at the end like the others."""
        p = subprocess.Popen(argv, start_new_session=True, text=True, **kw)
        self.procs.append(p)
        return p

    def run(self, code: str, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        p = self.start(code, *args, **kw)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def kill_all(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()


@pytest.fixture
def children():
    c = Children()
    yield c
    c.kill_all()


def read_line(p: subprocess.Popen, timeout: float = 30) -> str:
    """The next line the child prints, or a failure (killing nothing: the fixture
    does) if it prints none within `timeout` seconds."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            pytest.fail(f"child printed nothing within {timeout}s")
        line = p.stdout.readline()
    finally:
        sel.close()
    if not line:
        err = p.stderr.read() if p.poll() is not None else ""
        pytest.fail(f"child ended (status {p.poll()}) without output: {err}")
    return line.strip()


def run_workers(workers: list, results, timeout: float) -> list:
    """Starts `workers` (multiprocessing processes that each put one result on the queue
    `results`) and returns their results, once every one has exited with status 0. None
    is left running, whatever happens."""
    for w in workers:
        w.start()
    try:
        got = [results.get(timeout=timeout) for _ in workers]
        for w in workers:
            w.join(30)
            assert w.exitcode == 0
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
    return got


def in_forked_child(target, *args):
    """Runs `target(*args, conn)` in a forked child, which sends one report on `conn`;
    returns the report and the child's exit code. The child is not left running."""
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    child = ctx.Process(target=target, args=(*args, there))
    child.start()
    try:
        assert here.poll(60), "the child sent no report"
        report = here.recv()
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
    return report, child.exitcode


@contextlib.asynccontextmanager
async def ticking():
    """The times of the running event loop's ticks (one every 10 ms) while in the block:
    a loop held up by a blocking call does not tick."""
    ticks: list = []
    stop = asyncio.Event()

    async def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        stop.set()
        await ticker


@pytest.fixture(scope="session")
def cli() -> str:
    """The `shmlease` binary: $SHMLEASE_CLI, else target/debug/shmlease (built by
    `cargo build --bin shmlease`)."""
    candidates = [os.environ.get("SHMLEASE_CLI")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(os.path.join(target, "debug", "shmlease"))
    candidates.append(str(REPO / "target" / "debug" / "shmlease"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    found = shutil.which("shmlease")
    if found:
        return found
    pytest.fail("the shmlease CLI was not found: run `cargo build --bin shmlease` or set SHMLEASE_CLI")
