"""``/metrics`` in Prometheus text format: HTTP requests per route, and the system's figures.

Litestar ships a Prometheus middleware, but it keeps its metrics in a class-level dict on the
process-wide default registry (two apps in one process would share counters); this one keeps a
registry per app. The dataflow's figures are read from the store at scrape time by a collector.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from litestar import Response, get
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .context import AppContext, Ctx
from .status import dataflow_state, model_versions

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ups_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "ups_http_request_duration_seconds", "HTTP request latency by route", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )


class MetricsMiddleware(ASGIMiddleware):
    """Counts and times every routed request, labelled by the route template (never the raw path)."""

    def __init__(self, http: HttpMetrics) -> None:
        self.http = http

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            route = str(scope.get("path_template") or "unmatched")
            method = str(scope.get("method", "GET"))
            self.http.requests.labels(method, route, str(status["code"])).inc()
            self.http.latency.labels(method, route).observe(time.perf_counter() - t0)


class SystemCollector(Collector):
    """Events ingested, dead letters, lag, refresh queue, jobs and model versions, read per scrape."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        store = self.ctx.store()
        flow = dataflow_state(store, self.ctx.settings.dataflow_stale_after)
        last_seq = store.last_seq()
        dead = store.dead_letter_count()
        yield CounterMetricFamily("ups_events_logged", "events in the log (last seq)", value=last_seq)
        yield CounterMetricFamily("ups_dead_letters", "events refused by validation", value=dead)
        yield CounterMetricFamily(
            "ups_dataflow_events_ingested", "events the running flow ingested since it started",
            value=flow.events_in or 0,
        )
        gauges: dict[str, tuple[str, float | int | None]] = {
            "ups_dataflow_up": ("1 when the dataflow runs and reports", 1 if flow.alive else 0),
            "ups_dataflow_ingesting": ("1 while ingestion runs", 1 if flow.alive and flow.ingestion == "running" else 0),
            "ups_dataflow_events_per_second": ("ingestion rate", flow.events_per_s),
            "ups_dataflow_lag_seconds": ("event time behind wall-clock time", flow.lag_s),
            "ups_dataflow_backlog_events": ("logged events not folded yet", flow.backlog),
            "ups_refresh_queue": ("embedding refreshes waiting", flow.refresh_queue),
        }
        for name, (doc, value) in gauges.items():
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        versions = GaugeMetricFamily("ups_model_version", "newest model version by kind", labels=["kind"])
        for kind, v in model_versions(store).items():
            if v is not None:
                versions.add_metric([kind], v)
        yield versions
        jobs = GaugeMetricFamily("ups_jobs", "jobs by state", labels=["state"])
        for state, n in store.jobs.count_by_state().items():
            jobs.add_metric([state], n)
        yield jobs


def build_registry(ctx: AppContext) -> tuple[CollectorRegistry, HttpMetrics]:
    registry = CollectorRegistry(auto_describe=False)
    http = HttpMetrics(registry)
    registry.register(SystemCollector(ctx))
    return registry, http


#: Litestar adds the charset itself
MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


@get("/metrics", sync_to_thread=True, media_type=MEDIA_TYPE, summary="Prometheus metrics (text format)")
def metrics(ctx: Ctx) -> Response[bytes]:
    return Response(generate_latest(ctx.registry), media_type=MEDIA_TYPE)
