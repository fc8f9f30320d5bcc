"""Prometheus metrics: what each web process counts as it serves (requests, signatures), and what
/metrics reads from the database and the broker at scrape time (outbox backlog, emails sent and
failed, held signatures, Celery queue lengths).

With PROMETHEUS_MULTIPROC_DIR set (several gunicorn workers), prometheus_client keeps each
process's counters in files there and a scrape adds them up; the scrape-time gauges come from the
database and are the same whichever worker answers.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from campaign.config import ConfigError

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class _ProcessMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    signatures_created: Counter
    signatures_confirmed: Counter


_metrics: _ProcessMetrics | None = None
_lock = threading.Lock()


def process_metrics() -> _ProcessMetrics:
    """The counters of this process, made on first use (in multiprocess mode making one opens
    its file, which importing this module must not do)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                # No `_created` series: they double the output and no dashboard here uses them.
                disable_created_metrics()
                registry = CollectorRegistry(auto_describe=True)
                _metrics = _ProcessMetrics(
                    registry=registry,
                    requests=Counter(
                        "campaign_http_requests", "HTTP requests answered, by endpoint (never the path: "
                        "paths can hold tokens), method and status", ["endpoint", "method", "status"],
                        registry=registry),
                    latency=Histogram(
                        "campaign_http_request_duration_seconds", "Time from the start of a request's "
                        "handling to its response, by endpoint and method", ["endpoint", "method"],
                        buckets=_BUCKETS, registry=registry),
                    signatures_created=Counter(
                        "campaign_signatures_created", "New (pending) signatures committed by this web "
                        "process", registry=registry),
                    signatures_confirmed=Counter(
                        "campaign_signatures_confirmed", "Signatures confirmed by their signers through "
                        "this web process", registry=registry),
                )
    return _metrics


def count_signature_created() -> None:
    process_metrics().signatures_created.inc()


def count_signature_confirmed() -> None:
    process_metrics().signatures_confirmed.inc()


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count and time one request. The label is the endpoint's name, never the path: paths can
    hold link tokens."""
    method = method if method in _METHODS else "OTHER"
    metrics = process_metrics()
    metrics.requests.labels(endpoint, method, str(status)).inc()
    metrics.latency.labels(endpoint, method).observe(seconds)


def check_multiprocess_setup(app: Flask) -> None:
    """prometheus_client reads PROMETHEUS_MULTIPROC_DIR when it is imported: a value set only in
    the app's config would leave every process counting on its own while /metrics reads the folder."""
    if app.config.get("PROMETHEUS_MULTIPROC_DIR") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise ConfigError("PROMETHEUS_MULTIPROC_DIR must be set in the environment of the process "
                          "before it starts, not only passed to the app")


# --- the scrape ---------------------------------------------------------------------------------

class _Snapshot:
    """Gauges computed for one scrape, handed to prometheus_client as a collector."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def gauge(name: str, documentation: str, labels: list[str] | None = None,
          samples: list[tuple[list[str], float]] | None = None, value: float | None = None) -> Metric:
    family = GaugeMetricFamily(name, documentation, value=value, labels=labels)
    for label_values, sample in samples or []:
        family.add_metric(label_values, sample)
    return family


def render(app: Flask, scraped: list[Metric]) -> tuple[bytes, str]:
    """The exposition text: this process's (or, in multiprocess mode, every worker's) counters and
    histograms, then the gauges computed for this scrape."""
    registry = CollectorRegistry(auto_describe=False)
    folder = app.config.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=folder)
    else:
        registry.register(process_metrics().registry)
    registry.register(_Snapshot(scraped))
    return generate_latest(registry), CONTENT_TYPE_LATEST
