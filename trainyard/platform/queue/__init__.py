"""The Postgres-backed job queue: claim, lease, heartbeat, fencing, finish, rescue, notify.

One claim idiom: `FOR UPDATE SKIP LOCKED` in a CTE plus `UPDATE ... RETURNING`, committed at once.
No transaction stays open while a job runs: a running attempt is a row with a lease that its
worker keeps renewing, and every write an attempt makes goes through `fence`, which refuses it
once another attempt owns the job or its lease has expired (by the database clock, the same test
the rescuer makes). Every writer locks the job row, then the attempt row (`leases.lock`).

    claims.py         claim queued jobs (pool capacity, team GPU quotas) and start their attempts
    leases.py         lock (job, then attempt); fence an attempt's writes; heartbeat renews the lease
    quotas.py         team GPU quotas: the per-team claim lock, refusing a job that can never fit
    outcomes.py       end an attempt (finish, or rescue when its lease ran out), its cost report first
    notifications.py  LISTEN/NOTIFY that wakes idle workers; polling is the fallback
    summary.py        waiting and running jobs by pool
    reasons.py        why a queued job waits: the vocabulary of queue answers
    eta.py            when a queued job should start: the claim's rules played over estimates
    snapshot.py       the queue as of one instant, read for answering waiting jobs
    answers.py        a waiting job's position, start estimate, reason and better pools
"""

from __future__ import annotations

from trainyard.platform.queue.claims import Claim, claim
from trainyard.platform.queue.leases import Heartbeat, fence, heartbeat
from trainyard.platform.queue.notifications import NOTIFY_CHANNEL, Listener, notify
from trainyard.platform.queue.outcomes import backoff_seconds, finish, rescue
from trainyard.platform.queue.summary import queue_summary

__all__ = [
    "NOTIFY_CHANNEL",
    "Claim",
    "Heartbeat",
    "Listener",
    "backoff_seconds",
    "claim",
    "fence",
    "finish",
    "heartbeat",
    "notify",
    "queue_summary",
    "rescue",
]
