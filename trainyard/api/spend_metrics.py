"""Prometheus spend metrics, read from the database at scrape time like the queue figures, so
every API replica reports the same dollars.

`trainyard_spend_usd_total{team,instance_type}` is a counter: the metered dollars of every
attempt (running ones as of their last heartbeat). Metering only ever grows an attempt's cost, so
the sum only grows, and `rate()` / `increase()` give spend per second or per day. Budgets come as
gauges next to it so an alert can compare this month's spend with the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import costs
from trainyard.platform.auth import Principal

_SPEND_SQL = text(
    """
    SELECT t.name, coalesce(a.instance_type, j.instance_type, '') AS instance_type, sum(a.cost_usd)
    FROM job_attempts a
    JOIN jobs j ON j.id = a.job_id
    JOIN teams t ON t.id = j.team_id
    GROUP BY 1, 2
    ORDER BY 1, 2
    """
)


def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        CounterMetricFamily(
            "trainyard_spend_usd",
            "Dollars spent on attempts (metered; running attempts as of their last heartbeat)",
            labels=["team", "instance_type"],
        ),
        GaugeMetricFamily(
            "trainyard_team_budget_usd", "Monthly budget per team (teams with one)", labels=["team"]
        ),
        GaugeMetricFamily(
            "trainyard_team_month_spend_usd",
            "Dollars spent this UTC calendar month, pro-rated by time, per team",
            labels=["team"],
        ),
    )


class SpendCollector(Collector):
    """Reads spend at scrape time, at most once per `min_interval_s`: the sums cover every
    attempt ever metered, so a busy scraper (or several) must not turn into a scan per scrape."""

    def __init__(self, factory: sessionmaker[Session], *, min_interval_s: float = 30.0) -> None:
        self._factory = factory
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Registering must not touch the database: describe with empty families.
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._min_interval_s:
                self._cached = (now, self._read())
            metrics = self._cached[1]
        yield from metrics

    def _read(self) -> list[Metric]:
        spend, budget, month = _families()
        with self._factory() as session:
            for team, instance_type, usd in session.execute(_SPEND_SQL).all():
                spend.add_metric([team, instance_type], float(usd or 0.0))
            for status in costs.list_budgets(session, _ALL):
                if status["budget"] is not None:
                    budget.add_metric([status["team"]], float(status["budget"]))
                month.add_metric([status["team"]], float(status["spent_this_month"]))
        return [spend, budget, month]


# The scrape sees every team, as an admin key would.
_ALL = Principal(key_id="metrics", team_id="", team_name="", role="admin")


def register_spend_metrics(
    registry: CollectorRegistry, sessionmaker: sessionmaker[Session], *, min_interval_s: float = 30.0
) -> SpendCollector:
    """Add the spend collector to `registry` (the app's `app.state.registry`)."""
    collector = SpendCollector(sessionmaker, min_interval_s=min_interval_s)
    registry.register(collector)
    return collector
