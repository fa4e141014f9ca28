"""The pieces every long-lived loop uses, without Postgres or Ray: the outage log-once and backoff,
restarting a component that dies, the attempt's local lease deadline, the RunControl mailbox."""

from __future__ import annotations

import logging
import time

import pytest

from trainyard.platform.errors import LeaseLost
from trainyard.platform.outages import Outage, keep_running
from trainyard.workers.lease import LocalLease, retrying


def test_an_outage_is_logged_once_and_backs_off_with_jitter(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.outage")
    outage = Outage(log, "the thing", base=1.0, cap=8.0)
    with caplog.at_level(logging.DEBUG, logger="test.outage"):
        delays = [outage.failed(OSError("down")) for _ in range(6)]
        outage.recovered()
        outage.recovered()
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 1
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1
    caps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True)), delays
    assert not outage.ongoing


def test_keep_running_restarts_a_component_that_dies(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        keep_running(logging.getLogger("test.keep"), "component", flaky, stopping=lambda: False)
    assert len(runs) == 3
    assert sum("starting it again" in r.getMessage() for r in caplog.records) == 2

    def dies() -> None:
        raise RuntimeError("boom")

    keep_running(logging.getLogger("test.keep"), "component", dies, stopping=lambda: True)  # returns


def test_retrying_gives_up_at_the_local_deadline() -> None:
    lease = LocalLease(4.0)  # margin 2 s: the deadline is 2 s away
    lease.renewed(time.monotonic(), 2.5)  # 0.5 s left
    tries: list[float] = []

    def check() -> None:
        if lease.passed:
            raise LeaseLost("past the deadline")

    def failing() -> None:
        tries.append(time.monotonic())
        raise OSError("database down")

    t0 = time.monotonic()
    with pytest.raises(LeaseLost):
        retrying(logging.getLogger("test.retry"), "write", failing, lease=lease, check=check)
    assert len(tries) >= 2 and time.monotonic() - t0 < 2.0
    fresh = LocalLease(60)
    assert retrying(logging.getLogger("test.retry"), "write", lambda: 7, lease=fresh, check=lambda: None) == 7


def test_mailbox_keeps_reports_until_they_are_acknowledged() -> None:
    from trainyard.workers.control import MAX_PROGRESS_BACKLOG, RunControlState

    rc = RunControlState()
    rc.report({"type": "checkpoint", "step": 1, "metrics": {}, "uri": "file:///c1"})
    rc.report({"type": "progress", "step": 1})
    rc.report({"type": "checkpoint", "step": 2, "metrics": {}, "uri": "file:///c2"})
    first = rc.pending()
    assert [e["type"] for e in first] == ["checkpoint", "progress", "checkpoint"]
    assert rc.pending() == first, "reading removes nothing: a failed write is retried"
    rc.ack(first[1]["seq"])  # the first checkpoint and the progress were written
    assert [e.get("uri") for e in rc.pending()] == ["file:///c2"]
    rc.ack(first[-1]["seq"])
    assert rc.pending() == []
    # The progress backlog stays bounded and counted right across acknowledgements.
    for i in range(MAX_PROGRESS_BACKLOG + 5):
        rc.report({"type": "progress", "step": i})
    backlog = rc.pending()
    assert len(backlog) == MAX_PROGRESS_BACKLOG
    rc.ack(backlog[9]["seq"])
    for i in range(20):
        rc.report({"type": "progress", "step": 1000 + i})
    assert len(rc.pending()) == MAX_PROGRESS_BACKLOG
