"""Prometheus text exposition of get_metrics(), via prometheus-client."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .metrics import Metrics, status_counts


class _MetricsCollector:
    def __init__(self, snapshot: Metrics):
        self.m = snapshot

    def collect(self) -> Iterator[Metric]:
        m, ns = self.m, self.m.get("namespace", "default")
        tasks = GaugeMetricFamily("taskmesh_tasks", "Tasks per status", labels=["namespace", "status"])
        for status, n in status_counts(m["tasks"]).items():
            tasks.add_metric([ns, status], n)
        yield tasks
        queued = GaugeMetricFamily("taskmesh_queue_depth", "Queued tasks per queue and priority",
                                   labels=["namespace", "queue", "priority"])
        age = GaugeMetricFamily("taskmesh_oldest_queued_age_seconds",
                                "Age of the oldest queued task per queue and priority",
                                labels=["namespace", "queue", "priority"])
        limited = GaugeMetricFamily("taskmesh_queue_rate_limited",
                                    "Queued tasks waiting for a rate-limit token, per queue",
                                    labels=["namespace", "queue"])
        for q, view in m["queues"].items():
            for p, n in view["by_priority"].items():
                queued.add_metric([ns, q, str(p)], n)
            for p, seconds in m["oldest_queued_age_s"].get(q, {}).items():
                age.add_metric([ns, q, str(p)], seconds)
            limited.add_metric([ns, q], view.get("rate_limited", 0))
        yield queued
        yield age
        yield limited
        totals = CounterMetricFamily("taskmesh_task_outcomes",
                                     "Registrations, outcomes and retries since the namespace began",
                                     labels=["namespace", "outcome"])
        for name, n in m["totals"].items():
            totals.add_metric([ns, name], n)
        yield totals
        yield CounterMetricFamily("taskmesh_recoveries", "Tasks taken over from dead workers",
                                  value=m["recoveries"])
        yield GaugeMetricFamily("taskmesh_throughput_per_second",
                                "Completions per second over the last 60 s",
                                value=m["throughput_per_s"])
        yield GaugeMetricFamily("taskmesh_failure_rate", "Failed / finished over the last 60 s",
                                value=m["failure_rate"])
        workers = GaugeMetricFamily("taskmesh_worker_running", "Tasks running per alive worker",
                                    labels=["namespace", "worker", "host"])
        for w in m["workers"]:
            workers.add_metric([ns, w["id"], w["host"] or ""], w["running"])
        yield workers
        yield GaugeMetricFamily("taskmesh_workers", "Alive workers", value=len(m["workers"]))
        runtime = GaugeMetricFamily("taskmesh_runtime_milliseconds",
                                    "Runtime of recent completions", labels=["namespace", "stat"])
        rt = m["runtime_ms"]
        for stat, value in (("avg", rt["avg"]), ("p50", rt["p50"]), ("p95", rt["p95"]),
                            ("max", rt["max"])):
            if value is not None:
                runtime.add_metric([ns, stat], value)
        yield runtime


def exposition(snapshot: Metrics) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MetricsCollector(snapshot))
    notes = "".join(f"# note: {n}\n" for n in snapshot.get("notes", ()))  # skipped counters
    return notes + generate_latest(registry).decode()
