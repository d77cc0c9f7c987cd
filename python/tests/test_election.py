"""Leader election from Python: campaign, leader, resign, observe (with skipped
counts), the runner's callbacks and stop reasons, hand-over requests, asyncio, and real
processes — a SIGKILLed leader replaced by a standby blocked in campaign, a Python and
a CLI candidate on one election, a forked child's copy of a leadership, Ctrl-C and a
stopper in a signal handler. Each test has a table of its own; every wait has a limit."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import shmlease
from shmlease import LostReason, StopReason

from conftest import in_forked_child, read_line, ticking


def _in_thread(target, *args):
    """Runs `target(*args)` in a daemon thread; returns (thread, result dict)."""
    out: dict = {}

    def run():
        try:
            out["value"] = target(*args)
        except BaseException as e:  # handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _until(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return False


# -- campaign, leader, resign ---------------------------------------------------------


def test_campaign_leader_resign(table):
    election = table.election("sched", ttl=5, label="node-a")
    assert election.name == "sched" and election.ttl == 5 and election.label == "node-a"
    assert election.leader() is None
    leadership = election.campaign(wait=1)
    assert leadership.is_leader and leadership.lost is None
    assert 4 < leadership.remaining <= 5
    assert not leadership.release_requested
    leader = election.leader()
    assert leader.term == leadership.term
    assert leader.pid == os.getpid() and leader.label == "node-a"
    assert leader.since is not None and leader.expires_at > leader.since
    assert 4 < leader.remaining <= 5
    # The election is a lease like any other.
    assert table.get("sched").token == leadership.term
    leadership.resign()
    assert election.leader() is None
    assert not leadership.is_leader and leadership.remaining == 0.0
    assert leadership.lost is None  # resigned, not lost
    with pytest.raises(shmlease.Lost):
        leadership.resign()
    # As a context manager: resigned at the end of the block.
    with election.campaign() as again:
        assert again.term > leadership.term and election.leader().term == again.term
    assert election.leader() is None


def test_terms_strictly_increase(table):
    election = table.election("terms", ttl=2)
    terms = []
    for _ in range(10):
        with election.campaign(wait=1) as leadership:
            terms.append(leadership.term)
    # Revoked and expired terms count too.
    leadership = election.campaign()
    table.revoke("terms")
    assert leadership.wait_lost(10) == LostReason.REVOKED
    terms.append(leadership.term)
    short = table.election("terms", ttl=0.05).campaign()
    terms.append(short.term)
    assert all(a < b for a, b in zip(terms, terms[1:])), terms


def test_try_campaign_is_refused_while_someone_leads(table):
    election = table.election("try")
    leadership = election.campaign()
    with pytest.raises(shmlease.Held) as e:
        election.campaign(0)
    assert e.value.token == leadership.term and e.value.holder.pid == os.getpid()
    with pytest.raises(shmlease.Timeout) as t:
        election.campaign(wait=0.2)
    assert t.value.waited >= 0.2
    # A campaign blocked in another thread is elected the moment the leader resigns.
    thread, out = _in_thread(election.campaign, 30)
    time.sleep(0.2)
    assert "value" not in out
    leadership.resign()
    thread.join(30)
    assert out["value"].term > leadership.term and out["value"].is_leader
    out["value"].resign()


def test_a_dropped_leadership_resigns(table):
    election = table.election("gc")
    leadership = election.campaign()
    assert election.leader() is not None
    del leadership
    gc.collect()
    assert election.leader() is None
    assert election.campaign(0).is_leader


def test_lost_leadership_says_why(table):
    election = table.election("lost", ttl=5)
    leadership = election.campaign()
    table.revoke("lost")
    assert leadership.wait_lost(10) == LostReason.REVOKED
    assert leadership.lost == LostReason.REVOKED and not leadership.is_leader
    with pytest.raises(shmlease.Lost) as e:
        leadership.resign()
    assert e.value.reason == LostReason.REVOKED
    # A block that ran while leadership was lost ends with Lost.
    with pytest.raises(shmlease.Lost):
        with election.campaign():
            table.revoke("lost")
            time.sleep(0.05)


def test_invalid_arguments(table):
    with pytest.raises(shmlease.InvalidName):
        table.election("")
    with pytest.raises(shmlease.InvalidTtl):
        table.election("x", ttl=0)
    with pytest.raises(shmlease.InvalidLabel):
        table.election("x", label="much-too-long")
    with pytest.raises(shmlease.InvalidOptions):
        table.election("x", ttl=1).run(lambda leading: None, stop_margin=0.9)


# -- hand-over requests --------------------------------------------------------------


def test_request_release_reaches_a_leadership(table, children):
    election = table.election("handover", ttl=30)
    leadership = election.campaign()
    assert leadership.wait_notice(0.1) is None
    # Asked by another process, by name.
    r = children.run(
        "import sys, shmlease; print(shmlease.Table(sys.argv[1], create=False).request_release('handover'))",
        table.location,
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == leadership.term
    notice = leadership.wait_notice(10)
    assert notice is not None and notice.release_requested and notice.lost is None
    assert leadership.release_requested and leadership.is_leader  # asked, not forced
    # Level-triggered: it stays asked until the leader goes.
    assert leadership.wait_notice(0).release_requested
    leadership.resign()
    assert table.request_release("handover") is None
    with pytest.raises(shmlease.Lost):
        table.request_release("handover", leadership.term)
    # A loss is a notice too.
    other = election.campaign()
    table.revoke("handover")
    notice = other.wait_notice(10)
    assert notice.lost == LostReason.REVOKED and not notice.release_requested


def test_request_release_also_reaches_a_lease(table):
    lease = table.acquire("plain", ttl=30)
    assert not lease.release_requested
    assert table.request_release("plain", lease.token) == lease.token
    assert lease.release_requested and lease.valid
    lease.release()
    assert not lease.release_requested


# -- observe -------------------------------------------------------------------------


def test_observe_reports_changes_and_skipped_terms(table):
    election = table.election("watched", ttl=10)
    observer = election.observe()
    first = observer.next_change(0)
    assert first.term == 0 and first.leader is None and first.skipped == 0
    assert observer.next_change(0.1) is None  # nothing changed

    a = election.campaign()
    change = observer.next_change(10)
    assert change.term == a.term and change.leader.pid == os.getpid() and change.skipped == 0
    a.resign()
    change = observer.next_change(10)
    assert change.leader is None and change.term == a.term and change.skipped == 0

    # Three terms come and go while the observer looks away.
    terms = []
    for _ in range(3):
        with election.campaign() as leadership:
            terms.append(leadership.term)
    change = observer.next_change(10)
    assert change.leader is None and change.term == terms[-1] and change.skipped == 3

    # Two more, and the third still leads: two skipped, the leader reported.
    for _ in range(2):
        election.campaign().resign()
    current = election.campaign()
    change = observer.next_change(10)
    assert change.term == current.term and change.leader.term == current.term
    assert change.skipped == 2
    current.resign()


def test_observe_says_unknown_when_the_name_was_rebound(location):
    # A table of two slots: an idle election gives its slot back to other names, and
    # what happened to it meanwhile is unknown — reported as such, never as zero.
    table = shmlease.Table(location + "-small", capacity=2)
    try:
        election = table.election("idle")
        observer = election.observe()
        election.campaign().resign()
        assert observer.next_change(0).leader is None  # its slot is idle now
        with table.lease("x", 30), table.lease("y", 30):  # "y" evicts "idle"
            assert table.get("idle") is None
        leadership = election.campaign()  # bound again, elsewhere
        change = observer.next_change(10)
        assert change.leader.term == leadership.term and change.skipped is None
        leadership.resign()
    finally:
        shmlease.Table.remove(location + "-small", force=True)


def test_observer_wakes_for_a_change_made_by_another_thread(table):
    election = table.election("wake")
    observer = election.observe()
    assert observer.next_change(0).leader is None
    seen = []

    def follow():
        for change in observer:  # iterating waits without limit
            seen.append(change)
            if change.leader is None and len(seen) >= 2:
                return

    thread, out = _in_thread(follow)
    time.sleep(0.1)
    with election.campaign() as leadership:
        assert _until(lambda: len(seen) == 1)
    thread.join(30)
    assert "error" not in out, out
    assert [c.leader.term if c.leader else None for c in seen] == [leadership.term, None]
    terms = [c.term for c in seen]
    assert terms == sorted(terms)


# -- the runner ----------------------------------------------------------------------


def test_runner_callback_order(table):
    election = table.election("runner", ttl=5)
    other = election.campaign()
    events = []
    saw_other = threading.Event()

    def on_new_leader(leader):
        events.append(("new", leader.term))
        if leader.term == other.term:
            saw_other.set()

    def lead(leading):
        events.append(("lead", leading.term, leading.is_leader, leading.should_stop()))
        assert election.leader().term == leading.term and leading.remaining > 4
        return "done"

    def on_stopped(stopped):
        events.append(("stopped", stopped.term, stopped.reason, stopped.resigned))
        assert election.leader() is None  # resigned before on_stopped

    thread, out = _in_thread(
        lambda: election.run(lead, on_new_leader=on_new_leader, on_stopped=on_stopped)
    )
    assert saw_other.wait(30), "on_new_leader never heard of the current leader"
    time.sleep(0.2)  # several campaign attempts: the same leader is reported once
    assert events == [("new", other.term)]
    other.resign()
    thread.join(30)
    assert out.get("value") == "done", out
    mine = events[1][1]
    assert mine > other.term
    assert events == [
        ("new", other.term),
        ("new", mine),
        ("lead", mine, True, None),
        ("stopped", mine, None, True),
    ]


def test_on_stopped_only_for_a_candidate_that_led(table):
    election = table.election("never", ttl=5)
    holder = election.campaign()
    stopper = shmlease.Stopper()
    called = []
    thread, out = _in_thread(
        lambda: election.run(lambda leading: called.append("lead"), on_stopped=called.append, stopper=stopper)
    )
    time.sleep(0.2)
    stopper.stop()  # from another thread, while campaigning
    thread.join(30)
    assert not thread.is_alive()
    assert out == {"value": None} and called == [] and stopper.stopped
    assert election.leader().term == holder.term
    # A stopped stopper stops the next run at once.
    assert election.run(lambda leading: called.append("lead"), stopper=stopper) is None
    assert called == []
    # A campaign limit runs out with Timeout, and nothing was called.
    with pytest.raises(shmlease.Timeout):
        election.run(lambda leading: called.append("lead"), on_stopped=called.append, campaign_wait=0.2)
    with pytest.raises(shmlease.Timeout):
        election.run(lambda leading: called.append("lead"), campaign_wait=0)
    assert called == []
    holder.resign()


def test_stop_reasons_reach_lead(table):
    election = table.election("reasons", ttl=5)
    # A hand-over request.
    def asked(leading):
        table.request_release("reasons")
        return leading.wait_stop(10)

    stops = []
    assert election.run(asked, on_stopped=stops.append) == StopReason.REQUESTED
    assert stops[-1].reason == StopReason.REQUESTED and stops[-1].resigned

    # The stopper, from another thread, while leading.
    stopper = shmlease.Stopper()

    def stopped(leading):
        threading.Timer(0.1, stopper.stop).start()
        reason = leading.wait_stop(10)
        assert leading.is_leader  # told to stop, still leading until lead returns
        return reason

    assert election.run(stopped, stopper=stopper, on_stopped=stops.append) == StopReason.STOPPED
    assert stops[-1].reason == StopReason.STOPPED and stops[-1].resigned

    # A revocation: lost, and not resigned (it was no longer ours).
    def revoked(leading):
        table.revoke("reasons")
        reason = leading.wait_stop(10)
        # The keep-alive says why at once; a loss seen before it did reads as expiry.
        assert _until(lambda: leading.lost != LostReason.EXPIRED, 10)
        return reason, leading.lost, leading.is_leader

    assert election.run(revoked, on_stopped=stops.append) == (StopReason.LOST, LostReason.REVOKED, False)
    assert stops[-1].reason == StopReason.LOST and stops[-1].lost == LostReason.REVOKED
    assert not stops[-1].resigned

    # Nothing to stop for: wait_stop times out.
    assert election.run(lambda leading: leading.wait_stop(0.1)) is None

    # The Leading outlives lead: it no longer leads.
    kept = election.run(lambda leading: leading)
    assert not kept.is_leader and kept.remaining == 0.0
    assert kept.should_stop() == StopReason.LOST and kept.wait_stop(1) == StopReason.LOST
    assert election.leader() is None


def test_other_threads_read_the_leading_while_lead_waits(table):
    election = table.election("threads", ttl=5)

    def lead(leading):
        def helper():
            reads = [leading.is_leader and leading.remaining > 0 for _ in range(100)]
            table.request_release("threads")
            return all(reads)

        thread, out = _in_thread(helper)
        reason = leading.wait_stop(30)  # sleeping in slices while the helper reads
        thread.join(30)
        return reason, out.get("value")

    assert election.run(lead) == (StopReason.REQUESTED, True)


def test_an_exception_in_lead_propagates_after_resigning(table):
    election = table.election("boom", ttl=30)
    stops = []

    def lead(leading):
        assert leading.is_leader
        raise RuntimeError("lead failed")

    with pytest.raises(RuntimeError, match="lead failed"):
        election.run(lead, on_stopped=stops.append)
    assert election.leader() is None, "the runner left the leadership behind"
    assert len(stops) == 1 and stops[0].resigned
    # The next candidate is elected at once.
    assert election.campaign(0).is_leader


def test_an_exception_in_a_callback_propagates_and_nobody_is_left_leading(table):
    election = table.election("hooks", ttl=30)
    called = []

    def bad_new_leader(leader):
        raise ValueError("on_new_leader failed")

    with pytest.raises(ValueError, match="on_new_leader failed"):
        election.run(lambda leading: called.append("lead"), on_new_leader=bad_new_leader, on_stopped=called.append)
    assert called == [] and election.leader() is None

    def bad_stopped(stopped):
        raise KeyError("on_stopped failed")

    with pytest.raises(KeyError):
        election.run(lambda leading: called.append("lead"), on_stopped=bad_stopped)
    assert called == ["lead"] and election.leader() is None

    # While campaigning behind another leader, an on_new_leader failure ends the run.
    holder = election.campaign()
    with pytest.raises(ValueError):
        election.run(lambda leading: called.append("lead again"), on_new_leader=bad_new_leader)
    assert called == ["lead"] and election.leader().term == holder.term
    holder.resign()


# -- asyncio -------------------------------------------------------------------------


def test_campaign_async_and_next_change_async(table):
    election = table.election("aio", ttl=10)

    async def main():
        async with ticking() as ticks:
            observer = election.observe()
            assert (await observer.next_change_async(0)).leader is None
            first = await election.campaign_async()
            with pytest.raises(shmlease.Held):
                await election.campaign_async(0)
            # A second campaign waits without blocking the loop; elected when first resigns.
            second = asyncio.create_task(election.campaign_async(30).campaign())
            change = await observer.next_change_async(10)
            assert change.leader.term == first.term
            await asyncio.sleep(0.3)
            assert not second.done()
            first.resign()
            leadership = await asyncio.wait_for(second, 30)
            assert leadership.term > first.term
            with pytest.raises(shmlease.Held):
                async with election.campaign_async(0):
                    pytest.fail("elected while another leads")
        assert len(ticks) >= 20  # the loop ran while the campaign waited
        change = await observer.next_change_async(10)
        assert change.leader.term == leadership.term and change.skipped == 0
        leadership.resign()
        async with election.campaign_async(1) as third:
            assert third.term > leadership.term
        return third

    third = asyncio.run(main())
    assert not third.is_leader and election.leader() is None  # resigned by `async with`


def test_async_waits_are_cancelled_cleanly(table):
    election = table.election("aio-cancel", ttl=30)
    holder = election.campaign()

    async def main():
        task = asyncio.create_task(election.campaign_async().campaign())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        observer = election.observe()
        assert (await observer.next_change_async(0)).leader.term == holder.term
        waiting = asyncio.create_task(observer.next_change_async())
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        notice = asyncio.create_task(holder.wait_notice_async())
        await asyncio.sleep(0.05)
        table.request_release("aio-cancel")
        assert (await asyncio.wait_for(notice, 10)).release_requested
        # The cancelled observer wait missed nothing: the resignation is reported next.
        holder.resign()
        change = await observer.next_change_async(10)
        assert change.leader is None and change.term == holder.term

    asyncio.run(main())
    assert _until(lambda: not any(t.name == "shmlease-async-wait" for t in threading.enumerate()))
    assert election.leader() is None  # the cancelled campaign won nothing


# -- real processes ------------------------------------------------------------------

LEADER = """
import sys, time, shmlease
table = shmlease.Table(sys.argv[1], create=False)
leadership = table.election("standby", ttl=float(sys.argv[2]), label="first").campaign(wait=30)
print(leadership.term, flush=True)
time.sleep(600)
"""

STANDBY = """
import sys, time, shmlease
table = shmlease.Table(sys.argv[1], create=False)
election = table.election("standby", ttl=600, label="second")
print("campaigning", flush=True)
leadership = election.campaign()               # no limit: only the leader's end elects it
print(leadership.term, table.info().counters.dead_holder_reclaims, flush=True)
time.sleep(600)
"""


def test_sigkilled_leader_is_replaced_by_a_standby_blocked_in_campaign(table, children):
    # Both TTLs are far beyond the test's watchdog: only the death wake-up can elect
    # the standby before the dead leader's term would have expired.
    leader = children.start(LEADER, table.location, "600")
    term = int(read_line(leader))
    standby = children.start(STANDBY, table.location)
    assert read_line(standby) == "campaigning"
    election = table.election("standby")
    observer = election.observe()
    assert observer.next_change(0).leader.pid == leader.pid
    time.sleep(0.3)
    assert election.leader().pid == leader.pid  # the standby waits behind a live leader
    os.kill(leader.pid, signal.SIGKILL)
    new_term, dead_reclaims = read_line(standby, timeout=60).split()
    assert int(new_term) > term and int(dead_reclaims) >= 1
    now = election.leader()
    assert now.term == int(new_term) and now.pid == standby.pid and now.label == "second"
    assert now.remaining > 500  # the new term's own TTL: the old one was not waited out
    # An observer saw the takeover, in term order.
    terms = []
    while True:
        change = observer.next_change(10)
        assert change is not None
        terms.append(change.term)
        if change.leader and change.leader.pid == standby.pid:
            break
    assert terms == sorted(terms) and terms[-1] == int(new_term)


CLI_CMD = 'echo "$SHMLEASE_TOKEN"; echo started > "$0"; sleep 600'


def _cli(cli, table, *args):
    return subprocess.run([cli, "-t", table.location, *args], capture_output=True, text=True, timeout=60)


def test_python_and_the_cli_on_one_election(table, cli, children, tmp_path):
    election = table.election("mixed", ttl=5, label="py")
    leadership = election.campaign()
    # The CLI sees Python's leadership.
    r = _cli(cli, table, "leader", "mixed", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["leading"] and shown["term"] == leadership.term
    assert shown["pid"] == os.getpid() and shown["label"] == "py"
    # A CLI candidate waits behind Python, and takes over the moment Python resigns.
    flag = tmp_path / "started"
    run = children.popen(
        [cli, "-t", table.location, "run", "mixed", "--ttl", "5s", "--label", "cli", "--",
         "sh", "-c", CLI_CMD, str(flag)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    observer = election.observe()
    assert observer.next_change(0).leader.term == leadership.term
    time.sleep(0.5)
    assert run.poll() is None and not flag.exists()
    leadership.resign()
    cli_term = int(read_line(run, timeout=30))
    assert cli_term > leadership.term
    # Python sees the CLI lead (observer and leader query agree).
    change = observer.next_change(10)
    while change.leader is None:
        change = observer.next_change(10)
    assert change.term == cli_term and change.leader.label == "cli"
    assert election.leader().term == cli_term
    # A Python runner waits behind the CLI, hears of it, asks it to hand over, and leads.
    events = []

    def on_new_leader(leader):
        events.append(("new", leader.term, leader.label))
        if leader.term == cli_term:
            table.request_release("mixed")  # `run` passes it to CMD as SIGTERM

    def lead(leading):
        events.append(("lead", leading.term))
        r = _cli(cli, table, "leader", "mixed", "--json")
        return json.loads(r.stdout)

    shown = election.run(lead, on_new_leader=on_new_leader, campaign_wait=30)
    assert shown["pid"] == os.getpid() and shown["label"] == "py" and shown["term"] > cli_term
    assert events[0] == ("new", cli_term, "cli") and events[-1] == ("lead", shown["term"])
    run.communicate(timeout=30)  # the CLI's CMD ended on the request
    r = _cli(cli, table, "leader", "mixed")
    assert r.returncode == 1, r.stdout  # nobody leads: the runner resigned


def _forked_child(leadership, observer, conn):
    report = {"is_leader": leadership.is_leader, "term": leadership.term, "lost": leadership.lost}
    try:
        leadership.resign()
        report["resign"] = "done"
    except shmlease.BoundToProcess as e:
        report["resign"] = ("bound", e.holder.pid if e.holder else None)
    report["wait_lost"] = leadership.wait_lost(0.1)
    report["wait_notice"] = leadership.wait_notice(0.1)
    report["release_requested"] = leadership.release_requested
    try:
        observer.next_change(0)
        report["inherited observer"] = "used"
    except RuntimeError:
        report["inherited observer"] = "refused"
    # The child's own observer, and its own campaign, work: it sees the parent lead.
    mine = leadership.election.observe().next_change(0)
    report["child sees"] = mine.leader.pid if mine.leader else None
    with leadership:  # leaving the block in the child resigns nothing
        pass
    del leadership
    gc.collect()
    conn.send(report)


def test_a_forked_child_never_resigns_its_parents_leadership(table):
    election = table.election("forked", ttl=30)
    leadership = election.campaign()
    observer = election.observe()
    assert observer.next_change(0).leader.term == leadership.term
    report, exitcode = in_forked_child(_forked_child, leadership, observer)
    assert exitcode == 0
    assert report["is_leader"] and report["term"] == leadership.term and report["lost"] is None
    assert report["resign"] == ("bound", os.getpid())
    assert report["wait_lost"] is None and report["wait_notice"] is None
    assert not report["release_requested"]
    assert report["inherited observer"] == "refused" and report["child sees"] == os.getpid()
    # The parent still leads, renewed as before, and resigns.
    assert leadership.is_leader and election.leader().pid == os.getpid()
    leadership.resign()
    assert election.leader() is None
    assert observer.next_change(10).leader is None  # the parent's observer goes on


SIGINT_CAMPAIGN = """
import sys, time, shmlease
import signal
# Started from a background job, SIGINT may come ignored, and Python then installs no
# KeyboardInterrupt handler: install it, as an interactive start would.
signal.signal(signal.SIGINT, signal.default_int_handler)
election = shmlease.Table(sys.argv[1], create=False).election("held")
print("waiting", flush=True)
try:
    if sys.argv[2] == "campaign":
        election.campaign()
    else:
        election.run(lambda leading: None)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


@pytest.mark.parametrize("what", ["campaign", "run"])
def test_ctrl_c_interrupts_a_campaign(table, children, what):
    holder = table.election("held", ttl=600).campaign()
    child = children.start(SIGINT_CAMPAIGN, table.location, what)
    assert read_line(child) == "waiting"
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)  # a campaign that ignored it: 600 s
    assert child.returncode == 3, (out, err)
    assert holder.is_leader
    holder.resign()


SIGNAL_STOPPER = """
import signal, sys, shmlease
election = shmlease.Table(sys.argv[1], create=False).election("svc", ttl=30)
stopper = shmlease.Stopper()
signal.signal(signal.SIGTERM, lambda *_: stopper.stop())

def lead(leading):
    print("leading", leading.term, flush=True)
    return leading.wait_stop()  # no limit: only the stopper ends it

print("stopped by", election.run(lead, stopper=stopper, on_stopped=lambda s: print("resigned", s.resigned)), flush=True)
"""


def test_a_stopper_in_a_signal_handler_ends_the_run(table, children):
    child = children.start(SIGNAL_STOPPER, table.location)
    line = read_line(child)
    assert line.startswith("leading")
    term = int(line.split()[1])
    assert table.election("svc").leader().term == term
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.split("\n")[:2] == ["resigned True", "stopped by stopped"], out
    assert table.election("svc").leader() is None
