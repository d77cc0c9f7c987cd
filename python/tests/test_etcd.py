"""The package on a real etcd cluster: three members on free loopback ports in a
temporary directory, started once for this file, waited for until every member is
healthy, and always stopped — by the fixture's finalizer, at exit, and by the kernel if
pytest itself dies (the members share one process group, which is killed, and each has
PR_SET_PDEATHSIG). Needs a build with the etcd backend
(``pip install --config-settings=build-args="--features etcd" ./python``, as `.ci/run`
does) and ``etcd``/``etcdctl`` on PATH; in a default build only the refusal runs."""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

import shmlease
from shmlease import LeaseState, LostReason, _shmlease

from conftest import read_line, run_workers

needs_etcd = pytest.mark.skipif(
    not _shmlease.ETCD, reason="this build of shmlease has no etcd backend (--features etcd)"
)

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """`members` etcd processes in one process group of their own (fast elections:
    50 ms heartbeats, 500 ms election timeout, hence a 1 s minimum TTL)."""

    def __init__(self, members: int = 3, tls: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="shmlease-pytest-etcd-")
        self.procs: list[subprocess.Popen] = []
        self.pgid = 0
        self.tls = tls
        atexit.register(self.stop)
        try:
            if tls:
                self._make_certs()
            self._start(members)
            self.wait_healthy(60)
        except BaseException:
            self.stop()
            raise

    def _make_certs(self) -> None:
        """A CA, a server certificate for 127.0.0.1 and a client certificate it signed,
        and a second CA that signed nothing here (openssl, in the cluster's directory)."""

        def ssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True, timeout=60)

        for ca in ("ca", "other-ca"):
            ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN=shmlease pytest {ca}")  # fmt: skip
        exts = {"server": "subjectAltName=IP:127.0.0.1,DNS:localhost\n", "client": "extendedKeyUsage=clientAuth\n"}
        for who, ext in exts.items():
            with open(os.path.join(self.dir, f"{who}.ext"), "w") as f:
                f.write(ext)
            ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key",
                "-out", f"{who}.csr", "-subj", f"/CN={who}")  # fmt: skip
            ssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}.pem")  # fmt: skip

    def cert(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _start(self, members: int) -> None:
        ports = _free_ports(2 * members)
        self.clients, peers = ports[:members], ports[members:]
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
        token = f"shmlease-py-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        scheme = "https" if self.tls else "http"
        for i in range(members):
            client = f"{scheme}://127.0.0.1:{self.clients[i]}"
            peer = f"http://127.0.0.1:{peers[i]}"
            argv = [
                "etcd", "--name", f"m{i}", "--data-dir", os.path.join(self.dir, f"m{i}"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-level", "error",
            ]  # fmt: skip
            if self.tls:
                argv += ["--cert-file", self.cert("server.pem"), "--key-file", self.cert("server.key"),
                         "--trusted-ca-file", self.cert("ca.pem"), "--client-cert-auth"]  # fmt: skip
            with open(os.path.join(self.dir, f"m{i}.log"), "wb") as log:
                p = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    preexec_fn=lambda group=self.pgid: self._in_child(group),
                )
            self.procs.append(p)
            self.pgid = self.pgid or p.pid

    @staticmethod
    def _in_child(group: int) -> None:
        os.setpgid(0, group)  # the first member leads the group, the others join it
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # and die with pytest

    def endpoint(self, i: int) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.clients[i]}"

    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.clients)

    def location(self, prefix: str, query: str = "") -> str:
        if self.tls:
            files = f"ca={self.cert('ca.pem')}&cert={self.cert('client.pem')}&key={self.cert('client.key')}"
            return f"etcds://{self.hosts()}/{prefix}?{files}{query.replace('?', '&')}"
        return f"etcd://{self.hosts()}/{prefix}{query}"

    def ctl(self, *args: str, endpoints: str | None = None, check: bool = True):
        endpoints = endpoints or ",".join(self.endpoint(i) for i in range(len(self.procs)))
        tls = []
        if self.tls:
            tls = ["--cacert", self.cert("ca.pem"), "--cert", self.cert("client.pem"), "--key", self.cert("client.key")]
        return subprocess.run(
            ["etcdctl", "--endpoints", endpoints, "--command-timeout=5s", *tls, *args],
            env={**os.environ, "ETCDCTL_API": "3"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def wait_healthy(self, limit: float) -> None:
        end = time.monotonic() + limit
        for i, p in enumerate(self.procs):
            while self.ctl("endpoint", "health", endpoints=self.endpoint(i), check=False).returncode:
                if p.poll() is not None:
                    with open(os.path.join(self.dir, f"m{i}.log")) as f:
                        raise RuntimeError(f"etcd member {i} exited ({p.returncode}):\n{f.read()}")
                if time.monotonic() > end:
                    raise RuntimeError(f"etcd member {i} not healthy after {limit} s")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGKILL to the whole group (a paused member too), then reaping; idempotent."""
        if self.pgid:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.kill()
            p.wait()
        # Once reaped, the group's id may be reused: never signalled again.
        self.pgid, self.procs = 0, []
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def etcd_location(cluster) -> str:
    """A table of this test's own: a fresh key prefix."""
    return cluster.location(f"pytest-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def etcd_table(etcd_location):
    t = shmlease.Table(etcd_location)
    yield t
    # `force`: also with the live grants a failed test left.
    shmlease.Table.remove(etcd_location, force=True)


@pytest.mark.timeout(30)
@pytest.mark.skipif(_shmlease.ETCD, reason="this build has the etcd backend")
def test_without_the_backend_an_etcd_location_is_refused_saying_how_to_build(monkeypatch):
    for loc in ("etcd://127.0.0.1:2379/jobs", "etcds://127.0.0.1:2379/jobs?ca=/ca.pem"):
        with pytest.raises(shmlease.Unsupported, match="--features etcd"):
            shmlease.Table(loc)
        monkeypatch.setenv("SHMLEASE_TABLE", loc)
        with pytest.raises(shmlease.Unsupported, match="--features etcd"):
            shmlease.Table()


@needs_etcd
@pytest.mark.timeout(120)
def test_the_lease_api_on_etcd(etcd_table, etcd_location):
    t = etcd_table
    assert t.location == etcd_location
    assert repr(t).startswith(f'shmlease.Table("{etcd_location}"')
    with pytest.raises(shmlease.AlreadyExists):
        shmlease.Table.create(etcd_location)
    assert shmlease.Table(etcd_location, create=False).location == etcd_location

    with t.lease("job", ttl=5, label="worker 1") as lease:
        assert lease.valid and lease.lost is None and 0 < lease.remaining <= 5
        assert lease.deadline <= time.monotonic() + 5
        with pytest.raises(shmlease.Held) as held:
            t.try_acquire("job", 5)
        assert held.value.token == lease.token and held.value.holder.pid == os.getpid()
        with pytest.raises(shmlease.Timeout):
            t.acquire("job", 5, wait=0.3)
        info = t.get("job")
        assert info.state == LeaseState.HELD and info.token == lease.token
        assert info.holder.pid == os.getpid() and info.holder.label == "worker 1"
        assert 0 < info.remaining <= 5
        assert [i.name for i in t.list()] == ["job"]
        with pytest.raises(shmlease.InUse):
            shmlease.Table.remove(etcd_location)
        lease.renew(3)
        first = lease.token
    assert not lease.valid
    info = t.get("job")
    assert info.state == LeaseState.FREE and info.transitions == 1
    facts = t.info()
    assert facts.location == etcd_location and facts.counters.grants == 1

    # Revocation by anyone: the holder learns it at its next renewal.
    again = t.try_acquire("job", 2, keep_alive=False)
    assert again.token > first
    assert t.revoke("job") == again.token
    assert t.get("job").state == LeaseState.REVOKED
    with pytest.raises(shmlease.Lost) as lost:
        again.renew()
    assert lost.value.reason == LostReason.REVOKED and lost.value.token == again.token

    # Detached: renewed and released by name and token; a stale token is lost.
    d = t.acquire("detached", 3).detach()
    assert d.deadline > time.monotonic()
    assert t.renew(d.name, d.token, 5) > time.monotonic()
    t.release(d.name, d.token)
    with pytest.raises(shmlease.Lost):
        t.release(d.name, d.token)

    # A blocking acquire is woken by a release in another thread.
    holder = t.acquire("wake", 30)
    releaser = threading.Timer(0.3, holder.release)
    releaser.start()
    try:
        with t.lease("wake", 5, wait=20) as woken:
            assert woken.token > holder.token
    finally:
        releaser.join()


@needs_etcd
@pytest.mark.timeout(60)
def test_the_keeper_renews_an_etcd_lease_beyond_its_ttl(etcd_table):
    with etcd_table.lease("kept", ttl=1) as lease:
        time.sleep(2.5)  # past the TTL granted (whole seconds: 1 s here)
        assert lease.valid and etcd_table.get("kept").token == lease.token


@needs_etcd
@pytest.mark.timeout(60)
def test_asyncio_on_etcd(etcd_table):
    import asyncio

    async def main():
        async with etcd_table.lease_async("aio", 5) as lease:
            return lease.token, etcd_table.get("aio").token

    mine, seen = asyncio.run(main())
    assert mine == seen and etcd_table.get("aio").state == LeaseState.FREE


@needs_etcd
@pytest.mark.timeout(60)
def test_cancel_ends_a_wait_on_etcd(etcd_table):
    holder = etcd_table.acquire("busy", 30)
    cancel = threading.Event()
    setter = threading.Timer(0.3, cancel.set)
    setter.start()
    try:
        # A wait that ignored it would raise Timeout after 20 s.
        assert etcd_table.acquire("busy", 5, wait=20, cancel=cancel) is None
    finally:
        setter.join()
        holder.release()


@needs_etcd
@pytest.mark.timeout(60)
def test_sigint_interrupts_a_wait_on_etcd(etcd_table, children):
    holder = etcd_table.acquire("held", ttl=60)
    child = children.start(
        """
        import signal, sys, shmlease
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even from a background job
        t = shmlease.Table(sys.argv[1], create=False)
        print("waiting", flush=True)
        try:
            t.acquire("held", ttl=1, wait=None)  # held by the test: would wait forever
        except KeyboardInterrupt:
            sys.exit(3)
        """,
        etcd_table.location,
    )
    assert read_line(child, timeout=30) == "waiting"
    time.sleep(0.3)  # well inside the wait
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 3, (out, err)
    holder.release()


@needs_etcd
@pytest.mark.timeout(60)
def test_shmlease_table_names_an_etcd_table(etcd_location, monkeypatch):
    monkeypatch.setenv("SHMLEASE_TABLE", etcd_location)
    t = shmlease.Table()
    try:
        assert t.location == etcd_location
        with t.lease("env", 5) as lease:
            assert shmlease.Table(etcd_location).get("env").token == lease.token
    finally:
        shmlease.Table.remove(etcd_location, force=True)


@needs_etcd
@pytest.mark.timeout(60)
def test_an_unreachable_cluster_is_unavailable_after_the_locations_timeout():
    (port,) = _free_ports(1)
    loc = f"etcd://127.0.0.1:{port}/nobody?timeout=300ms"
    with pytest.raises(shmlease.Unavailable) as e:
        shmlease.Table(loc)
    assert e.value.location == loc


@needs_etcd
@pytest.mark.timeout(90)
def test_a_table_whose_only_endpoint_stops_answering_is_unavailable(cluster):
    # A table reaching the cluster through member 0 alone; member 0 is then paused.
    loc = f"etcd://127.0.0.1:{cluster.clients[0]}/pytest-{uuid.uuid4().hex[:12]}?timeout=500ms"
    t = shmlease.Table(loc)
    lease = t.acquire("held", 5, keep_alive=False)
    os.kill(cluster.procs[0].pid, signal.SIGSTOP)
    try:
        with pytest.raises(shmlease.Unavailable):
            t.get("held")
        with pytest.raises(shmlease.Unavailable):
            t.try_acquire("other", 5)
        with pytest.raises(shmlease.Unavailable):
            lease.renew()
        assert lease.remaining <= 5  # still its own conservative deadline, no later
    finally:
        os.kill(cluster.procs[0].pid, signal.SIGCONT)
        cluster.wait_healthy(60)
    lease.release()
    shmlease.Table.remove(loc)


def _contend(table, name, rounds, results):
    """A worker (in another process): takes the lease `rounds` times and records the
    interval it used it in, checked against its own conservative validity (`valid`
    still true at its end)."""
    seen = []
    for _ in range(rounds):
        with table.lease(name, ttl=5, wait=60) as lease:
            start = time.monotonic()
            time.sleep(0.002)
            end = time.monotonic()
            seen.append((start, end, lease.token, lease.valid and end <= lease.deadline))
    results.put(seen)


@needs_etcd
@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_processes_contend_exclusively_with_growing_tokens(etcd_table, method):
    rounds = 15
    ctx = multiprocessing.get_context(method)
    results = ctx.Queue()
    # Spawned workers get the table pickled (as its location); forked ones inherit it.
    workers = [
        ctx.Process(target=_contend, args=(etcd_table, "contended", rounds, results))
        for _ in range(2)
    ]
    grants = sorted(g for seen in run_workers(workers, results, 150) for g in seen)
    assert len(grants) == 2 * rounds
    assert all(valid for *_, valid in grants), "used past its own deadline"
    for (_, end, _, _), (start, _, _, _) in zip(grants, grants[1:]):
        assert end < start, "two holders at once"
    tokens = [token for _, _, token, _ in grants]
    assert all(a < b for a, b in zip(tokens, tokens[1:])), "tokens did not grow in grant order"
    assert etcd_table.get("contended").state == LeaseState.FREE


@needs_etcd
@pytest.mark.timeout(90)
def test_a_killed_holder_is_reclaimed_after_its_ttl_never_before(etcd_table, children):
    holder = children.start(
        """
        import sys, time, shmlease
        lease = shmlease.Table(sys.argv[1]).acquire("victim", ttl=2)
        print(lease.token, lease.deadline, flush=True)
        time.sleep(600)
        """,
        etcd_table.location,
    )
    token, deadline = read_line(holder, timeout=60).split()
    token, deadline = int(token), float(deadline)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    # Nobody on another host could tell it is dead: no early reclaim, the TTL only.
    info = etcd_table.get("victim")
    assert info.state == LeaseState.HELD and info.holder.pid == holder.pid
    if time.monotonic() < deadline:
        with pytest.raises(shmlease.Held):
            etcd_table.try_acquire("victim", 2)
    with etcd_table.lease("victim", 2, wait=30) as lease:
        assert time.monotonic() >= deadline, "granted before the dead holder's own deadline"
        assert lease.token > token


@needs_etcd
@pytest.mark.timeout(60)
def test_a_table_pickles_as_its_location(etcd_table):
    again = pickle.loads(pickle.dumps(etcd_table))
    assert again.location == etcd_table.location
    with etcd_table.lease("p", 5) as lease:
        assert again.get("p").token == lease.token
        with pytest.raises(TypeError):
            pickle.dumps(lease)


def _report_token(table, name, conn):
    conn.send(table.get(name).token)


def _token_seen_by_a_spawned_child(table, name):
    """The token a child started with `spawn` (the table reaching it pickled) reads for
    `name`; the child is killed if it has not ended in time."""
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_report_token, args=(table, name, there))
    child.start()
    try:
        assert here.poll(60), "the spawned child sent nothing"
        token = here.recv()
        child.join(30)
        return token
    finally:
        if child.is_alive():
            child.kill()


@needs_etcd
@pytest.mark.timeout(120)
def test_a_table_with_a_password_pickles_without_it(tmp_path):
    # A cluster of its own (one member): authentication is cluster-wide.
    c = Cluster(members=1)
    try:
        c.ctl("user", "add", "root:root-secret")
        c.ctl("user", "add", "app:app-secret-pw")
        c.ctl("role", "add", "app")
        c.ctl("role", "grant-permission", "app", "--prefix=true", "readwrite", "/authed")
        c.ctl("user", "grant-role", "app", "app")
        c.ctl("auth", "enable")
        secret = tmp_path / "password"
        secret.write_text("app-secret-pw\n")
        loc = c.location("authed", f"?user=app&password_file={secret}")
        t = shmlease.Table(loc)
        data = pickle.dumps(t)
        assert b"app-secret-pw" not in data and str(secret).encode() in data
        assert "app-secret-pw" not in t.location + repr(t)
        with t.lease("p", 5) as lease:
            assert _token_seen_by_a_spawned_child(t, "p") == lease.token
        # The password goes in a file, never in the location.
        with pytest.raises(shmlease.InvalidOptions):
            shmlease.Table(f"etcd://app:app-secret-pw@{c.hosts()}/authed")
        with pytest.raises(shmlease.PermissionDenied):
            shmlease.Table(c.location("elsewhere", f"?user=app&password_file={secret}"))
    finally:
        c.stop()


@needs_etcd
@pytest.mark.timeout(120)
def test_tls_with_client_certificates_and_what_is_refused():
    # A cluster of its own (one member) that speaks TLS only and wants client
    # certificates: the location names the CA, the client certificate and its key.
    c = Cluster(members=1, tls=True)
    try:
        loc = c.location("sec")
        assert loc.startswith("etcds://")
        t = shmlease.Table(loc)
        with t.lease("job", 5) as lease:
            assert t.get("job").token == lease.token
        # A child gets the table through pickling (spawn) and sees the same grant.
        with t.lease("p", 5) as lease:
            assert _token_seen_by_a_spawned_child(t, "p") == lease.token
        hosts = c.hosts()
        # Servers signed by a CA we were not told to trust.
        wrong_ca = loc.replace(c.cert("ca.pem"), c.cert("other-ca.pem")) + "&timeout=2s"
        with pytest.raises((shmlease.Unavailable, shmlease.PermissionDenied)):
            shmlease.Table(wrong_ca)
        # No client certificate: the servers refuse us.
        with pytest.raises(shmlease.Error):
            shmlease.Table(f"etcds://{hosts}/sec?ca={c.cert('ca.pem')}&timeout=2s")
        # Plain text against TLS servers.
        with pytest.raises(shmlease.Error):
            shmlease.Table(f"etcd://{hosts}/sec?timeout=2s")
        # etcds:// without a CA is refused before anything is sent.
        with pytest.raises(shmlease.InvalidOptions):
            shmlease.Table(f"etcds://{hosts}/sec")
    finally:
        c.stop()


@needs_etcd
@pytest.mark.timeout(90)
def test_an_election_on_etcd_hands_over_to_another_process(etcd_table, children):
    election = etcd_table.election("leader", ttl=3, label="first")
    leadership = election.campaign(wait=10)
    assert leadership.is_leader and election.leader().term == leadership.term
    assert election.leader().holder.label == "first"
    candidate = children.start(
        """
        import sys, shmlease
        election = shmlease.Table(sys.argv[1], create=False).election("leader", ttl=3)
        print("campaigning", flush=True)
        with election.campaign(wait=60) as leadership:
            print(leadership.term, leadership.is_leader, flush=True)
        """,
        etcd_table.location,
    )
    assert read_line(candidate, timeout=30) == "campaigning"
    time.sleep(0.3)  # the candidate waits on the leader's key
    observer = election.observe()
    assert observer.next_change(timeout=10).term == leadership.term
    leadership.resign()
    term, leading = read_line(candidate, timeout=30).split()
    assert int(term) > leadership.term and leading == "True"
    assert candidate.wait(timeout=30) == 0
    # The observer, read only now, accounts for the candidate's term exactly once:
    # reported as a leader, or counted as skipped (changes in between may be merged).
    changes = []
    while not changes or (changes[-1].term, changes[-1].leader) != (int(term), None):
        change = observer.next_change(timeout=10)
        assert change is not None, f"no change after {changes}"
        changes.append(change)
    assert sum((c.leader is not None) + c.skipped for c in changes) == 1, changes
    assert election.leader() is None


@needs_etcd
@pytest.mark.timeout(60)
def test_a_request_to_release_reaches_the_holder_on_etcd(etcd_table):
    with etcd_table.lease("asked", 5) as lease:
        assert not lease.release_requested
        assert etcd_table.request_release("asked") == lease.token
        lease.renew()  # without a keep-alive yet, the holder learns at its renewal
        assert lease.release_requested
    with etcd_table.lease("asked", 5) as later:
        assert not later.release_requested  # never reaches a later grant


# Takes a grant of the kind in argv (with a 2 s TTL, kept alive), prints its token,
# and holds it until killed.
KIND_HOLDER = """
import sys, time, shmlease
t = shmlease.Table(sys.argv[1], create=False)
kw = {"permits": 2} if sys.argv[3] == "permits" else {"shared": True}
lease = t.acquire(sys.argv[2], ttl=2, wait=30, **kw)
print(lease.token, flush=True)
time.sleep(3600)
"""

# Waits fairly for the name, prints the token it is granted, releases it at once.
FAIR_WAITER = """
import sys, shmlease
t = shmlease.Table(sys.argv[1], create=False)
lease = t.acquire(sys.argv[2], ttl=5, wait=60, fair=True)
print(lease.token, flush=True)
lease.release()
"""


@needs_etcd
@pytest.mark.timeout(90)
def test_permits_on_etcd(etcd_table, children):
    t = etcd_table
    mine = t.acquire("pool", 10, permits=2)
    other = children.start(KIND_HOLDER, t.location, "pool", "permits")
    theirs = int(read_line(other))
    assert theirs > mine.token
    with pytest.raises(shmlease.Held):
        t.try_acquire("pool", 5, permits=2)
    with pytest.raises(shmlease.WrongKind) as e:
        t.try_acquire("pool", 5)
    assert (e.value.recorded, e.value.recorded_permits) == (shmlease.LeaseKind.PERMITS, 2)
    info = t.get("pool")
    assert info.kind == shmlease.LeaseKind.PERMITS
    assert sorted(g.token for g in info.grants) == [mine.token, theirs]
    # The killed holder's permit is free once its TTL has run out, not before.
    os.killpg(other.pid, signal.SIGKILL)
    other.wait(30)
    with t.lease("pool", 5, permits=2, wait=30) as next_permit:
        assert next_permit.token > theirs
    mine.release()


@needs_etcd
@pytest.mark.timeout(90)
def test_shared_leases_on_etcd(etcd_table):
    t = etcd_table
    r1 = t.acquire("rw", 10, shared=True)
    r2 = t.acquire("rw", 10, shared=True)
    assert r2.token > r1.token
    assert all(g.shared for g in t.get("rw").grants) and len(t.get("rw").grants) == 2
    with pytest.raises(shmlease.Held):
        t.try_acquire("rw", 5)
    got = []
    writer = threading.Thread(target=lambda: got.append(t.acquire("rw", 5, wait=60)))
    writer.start()
    try:
        # The waiting writer keeps new shared holders out (once it has taken the name).
        deadline = time.monotonic() + 30
        while True:
            try:
                t.try_acquire("rw", 5, shared=True).release()
            except shmlease.Held:
                break
            assert time.monotonic() < deadline, "the writer never kept readers out"
            time.sleep(0.02)
        assert not got
        r1.release()
        r2.release()
    finally:
        writer.join(60)
    assert got and got[0].token > r2.token
    got[0].release()


@needs_etcd
@pytest.mark.timeout(120)
def test_fair_waiters_on_etcd_are_served_in_the_order_they_came(etcd_table, children):
    t = etcd_table
    held = t.acquire("line", 30)
    waiters = []
    for _ in range(3):
        w = children.start(FAIR_WAITER, t.location, "line")
        deadline = time.monotonic() + 30
        while w.pid not in [q.holder.pid for q in t.get("line").queue]:
            assert time.monotonic() < deadline, f"waiter {w.pid} never queued"
            time.sleep(0.01)
        waiters.append(w)
    assert [q.holder.pid for q in t.get("line").queue] == [w.pid for w in waiters]
    # The first in line is stopped for a moment (well within its place's 2 s TTL) as the
    # name is freed: those behind it wait for it, they do not race it.
    os.kill(waiters[0].pid, signal.SIGSTOP)
    held.release()
    time.sleep(0.5)
    os.kill(waiters[0].pid, signal.SIGCONT)
    tokens = [int(read_line(w)) for w in waiters]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3, tokens
    for w in waiters:
        assert w.wait(30) == 0
    assert t.get("line").queue == []
