"""Prometheus metrics of one server instance (its own registry, so tests can run several).

Under ``--workers`` (prometheus-client's multiprocess mode) the parent serves the workers'
figures together: counters and histograms summed, gauges as each ``multiprocess_mode`` says
(ignored by a lone server)."""

from __future__ import annotations

import gc
import json
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


GRPC_RESULTS = ("started", "succeeded", "failed")


def _channelz():
    """gRPC's channelz entry points (what the grpcio-channelz service reads), or None."""
    try:
        from grpc._cython import cygrpc
        return cygrpc if hasattr(cygrpc, "channelz_get_server") else None
    except ImportError:
        return None


def grpc_server_ids() -> set[int]:
    """The channelz ids of this process's gRPC servers (empty where channelz is unavailable)."""
    cz, out, start = _channelz(), set(), 0
    try:
        while cz is not None:
            page = json.loads(cz.channelz_get_servers(start))
            ids = [int(x["ref"]["serverId"]) for x in page.get("server", [])]
            out.update(ids)
            if page.get("end", True) or not ids:
                break
            start = max(ids) + 1
    except (ValueError, KeyError, TypeError):  # channelz's JSON changed: no counts, still serving
        return set()
    return out


def core_call_counts(server_id: int) -> dict[str, int] | None:
    """gRPC's call counts (started, succeeded, failed) of one server, from channelz. A call
    the C core refuses from its pending queue is started and neither succeeded nor failed,
    which is how the calls refused before Python are counted at all."""
    cz = _channelz()
    if cz is None:
        return None
    data = json.loads(cz.channelz_get_server(server_id)).get("server", {}).get("data", {})
    return {k: int(data.get("calls" + k.capitalize(), 0)) for k in GRPC_RESULTS}


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_seconds = Histogram("jaxrec_queue_seconds", "Time from arrival to batch start",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("jaxrec_batch_size", "Requests per device batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("jaxrec_batch_seconds", "Time of a device batch, as admission control "
                                       "times it: from the hand-off to the device thread until the event loop "
                                       "has the answers", buckets=LATENCY_BUCKETS, registry=r)
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
        self.grpc_calls = Counter("jaxrec_grpc_calls_total", "gRPC's own call counts for this server "
                                  "(channelz), by result: started - succeeded - failed - in flight = calls "
                                  "gRPC's C core refused before Python took them (--max-pending-rpcs)",
                                  ["result"], registry=r)
        self._grpc_seen = dict.fromkeys(GRPC_RESULTS, 0)
        self.gc_seconds = Histogram("jaxrec_gc_seconds", "Pauses of Python's cyclic garbage collector, by "
                                    "generation: every thread of the process waits them out", ["generation"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self._gc_started: float | None = None
        self.reload_failures = Counter("jaxrec_reload_failures_total",
                                       "Checkpoints refused by hot reload, by reason", ["reason"], registry=r)

    def serve_http(self, port: int, addr: str = "127.0.0.1"):
        """Expose /metrics over HTTP; returns (server, thread)."""
        return start_http_server(port, addr=addr, registry=self.registry)

    def add_grpc_counts(self, counts: dict[str, int]) -> None:
        """Advance ``jaxrec_grpc_calls_total`` to gRPC's counts (``core_call_counts``)."""
        for k in GRPC_RESULTS:
            if counts.get(k, 0) > self._grpc_seen[k]:
                self.grpc_calls.labels(k).inc(counts[k] - self._grpc_seen[k])
                self._grpc_seen[k] = counts[k]

    def _time_gc(self, phase: str, info: dict) -> None:
        # gc.callbacks run holding the GIL, so one collection's start and stop cannot interleave
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.gc_seconds.labels(str(info.get("generation"))).observe(time.perf_counter() - self._gc_started)
            self._gc_started = None

    def time_gc(self, on: bool = True) -> None:
        """Start (or stop) timing the garbage collector's pauses into ``jaxrec_gc_seconds``."""
        if on and self._time_gc not in gc.callbacks:
            gc.callbacks.append(self._time_gc)
        elif not on and self._time_gc in gc.callbacks:
            gc.callbacks.remove(self._time_gc)

    def in_flight_now(self) -> int:
        """Recommender RPCs this process is handling now (the drain on stop waits for 0)."""
        return int(self.registry.get_sample_value("jaxrec_in_flight_rpcs") or 0)

    def batches_served(self) -> int:
        return int(self.registry.get_sample_value("jaxrec_batch_size_count") or 0)
