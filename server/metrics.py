"""Prometheus metrics of one server instance (its own registry, so tests can run several).

Under ``--workers`` (prometheus-client's multiprocess mode) the parent serves the workers'
figures together: counters and histograms summed, gauges as each ``multiprocess_mode`` says
(ignored by a lone server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_seconds = Histogram("jaxrec_queue_seconds", "Time from arrival to batch start",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("jaxrec_batch_size", "Requests per device batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.latency_seconds = Histogram("jaxrec_request_latency_seconds", "Handler latency",
                                         ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("jaxrec_requests_total", "Requests by method and status code",
                                ["method", "code"], registry=r)
        self.rejects = Counter("jaxrec_rejects_total", "Requests rejected before the model ran",
                               ["reason"], registry=r)
        self.model_step = Gauge("jaxrec_model_step", "Checkpoint step being served (workers: the oldest)",
                                registry=r, multiprocess_mode="livemin")
        self.queue_depth = Gauge("jaxrec_queue_depth", "Requests waiting for a device batch", registry=r,
                                 multiprocess_mode="livesum")
        self.in_flight = Gauge("jaxrec_in_flight_rpcs", "Recommender RPCs being handled", registry=r,
                               multiprocess_mode="livesum")
        self.store_seconds = Histogram("jaxrec_store_seconds", "Event-store calls: reads for user_id "
                                       "requests, Observe, ForgetUser", ["op"], buckets=LATENCY_BUCKETS, registry=r)
        self.reload_failures = Counter("jaxrec_reload_failures_total",
                                       "Checkpoints refused by hot reload, by reason", ["reason"], registry=r)

    def serve_http(self, port: int, addr: str = "127.0.0.1"):
        """Expose /metrics over HTTP; returns (server, thread)."""
        return start_http_server(port, addr=addr, registry=self.registry)

    def batches_served(self) -> int:
        return int(self.registry.get_sample_value("jaxrec_batch_size_count") or 0)
