"""Prometheus metrics: request latency from a middleware; queue figures read from the database
at scrape time, so every API replica reports the same truth."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trainyard.platform import states


class QueueCollector(Collector):
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def collect(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("trainyard_jobs", "Jobs by state", labels=["state"])
        depth = GaugeMetricFamily("trainyard_queue_depth", "Queued jobs by pool", labels=["pool"])
        oldest = GaugeMetricFamily("trainyard_queue_oldest_seconds", "Age of the oldest queued job")
        claim = GaugeMetricFamily(
            "trainyard_claim_latency_seconds",
            "Seconds from a job becoming claimable to its claim, over the last hour",
            labels=["quantile"],
        )
        queued = states.sql_list((states.QUEUED,))
        with self._factory() as session:
            counts: dict[str, int] = {
                status: n
                for status, n in session.execute(text("SELECT status, count(*) FROM jobs GROUP BY status"))
            }
            for state in states.STATUSES:
                by_state.add_metric([state], float(counts.get(state, 0)))
            for pool, n in session.execute(
                text(f"SELECT coalesce(pool, ''), count(*) FROM jobs WHERE status IN ({queued}) GROUP BY 1")
            ).all():
                depth.add_metric([pool], float(n))
            age = session.scalar(
                text(
                    "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM jobs"
                    f" WHERE status IN ({queued})"
                )
            )
            oldest.add_metric([], float(age or 0))
            row = session.execute(
                text(
                    """
                    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY w),
                           percentile_cont(0.99) WITHIN GROUP (ORDER BY w)
                    FROM (
                      SELECT extract(epoch FROM a.started_at - j.created_at) AS w
                      FROM job_attempts a JOIN jobs j ON j.id = a.job_id
                      WHERE a.number = 1 AND a.started_at > now() - interval '1 hour'
                    ) t
                    """
                )
            ).one()
            claim.add_metric(["0.5"], float(row[0] or 0))
            claim.add_metric(["0.99"], float(row[1] or 0))
        yield from (by_state, depth, oldest, claim)


def make_registry(factory: sessionmaker[Session]) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(QueueCollector(factory))
    latency = Histogram(
        "trainyard_http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route", "status"],
        registry=registry,
    )
    return registry, latency


class LatencyMiddleware:
    """Observes each HTTP request's latency, up to the start of its response, in the app's
    `state.latency` histogram (none until the lifespan has made it). A plain ASGI middleware:
    it adds no task and no stream to a request, as one built on `BaseHTTPMiddleware` would."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        latency: Histogram | None = getattr(scope["app"].state, "latency", None)
        if scope["type"] != "http" or latency is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The route template, not the raw path, keeps label cardinality bounded.
                route = getattr(scope.get("route"), "path", "unmatched")
                latency.labels(scope["method"], route, str(message["status"])).observe(
                    time.perf_counter() - start
                )
            await send(message)

        await self.app(scope, receive, timed_send)
