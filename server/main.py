"""Server assembly: engine + batcher + service + health + reflection + metrics + auth + TLS.

    jaxrec serve --checkpoint runs/ml1m_sasrec_ce --port 50051 [--max-batch-size 64]
        [--max-delay-ms 2] [--metrics-port 9090] [--watch] [--tls-cert C --tls-key K]
        [--auth-token-file F]

Start-up order matters: health is NOT_SERVING until every bucket is compiled. SIGTERM
flips health to NOT_SERVING, lets in-flight calls finish (``--grace-s``), then stops.
``--watch`` polls the run directory; a newer checkpoint is loaded and compiled in a
thread, off the request path, and swapped in atomically between batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hmac
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jaxrec.scoring import DEFAULT_CHUNK, DEFAULT_POOL
from jaxrec_server.batcher import AUTO_TARGET_UNITS, Batcher, auto_latency_target_ms
from jaxrec_server.engine import Engine
from jaxrec_server.metrics import ServerMetrics, core_call_counts, grpc_server_ids
from jaxrec_server.servicer import SERVICE, RecommenderServicer, add_to_server
from jaxrec_server.store import DEFAULT_TTL_S, EXCLUDE_WINDOW, EventStore, open_store

log = logging.getLogger("jaxrec_server")


@dataclasses.dataclass
class ServeConfig:
    checkpoint: str  # a run directory (or, with ``artifact``, the artifact's directory again)
    port: int = 50051
    host: str = "127.0.0.1"
    max_batch_size: int = 64
    max_delay_ms: float = 2.0
    max_queue: int = 1024
    # admission control (see batcher.py): the longest expected queue wait a request is admitted
    # with (None: four full-batch times, measured, at least 50 ms), and the RPCs gRPC admits
    # at once (None: max_queue + 2 batches); past either, RESOURCE_EXHAUSTED at once
    max_wait_ms: float | None = None
    max_concurrent_rpcs: int | None = None
    # HTTP/2 streams one connection may have open (grpc.max_concurrent_streams; None: gRPC's
    # default, unbounded): a client's calls past it wait in the client's own transport, costing
    # this server nothing, and fail there at their deadline (DEADLINE_EXCEEDED)
    max_streams_per_connection: int | None = None
    # Shedding before Python (benchmarks/RESULTS.md, "Overload"): calls gRPC's C core holds
    # for this process before the event loop takes them (grpc.server.max_pending_requests,
    # also its hard limit; None: one full batch; 0: gRPC's own 1000 / 3000). Past it a new
    # call is refused in the C core, at a small part of a Python refusal's CPU.
    max_pending_rpcs: int | None = None
    # the nice increment of the event-loop thread (the device thread, XLA's and gRPC's C-core
    # threads keep theirs; 0: none). When the one core is contended the device thread goes
    # first, so admitted work is answered, the loop falls behind in taking new calls, and
    # the excess waits in the C core and is refused there (max_pending_rpcs) instead of
    # costing Python a call each. An idle device leaves the whole core to the loop.
    loop_nice: int = 19
    # the nice increment of the compute threads (the device thread, XLA's; 0: none): below
    # gRPC's own threads, which then take the core as soon as a call arrives, so a call past
    # max_pending_rpcs is refused in the C core without waiting for the device thread's time
    # slice (refusal latency; the CPU each costs is the same). Keep it under loop_nice.
    compute_nice: int = 0
    # real-time priority (SCHED_FIFO, 1-99; 0: off) of gRPC's C-core threads (by name; not the
    # Python threads gRPC starts, which take the GIL): a call arriving on a core busy with the
    # device is taken (and, past max_pending_rpcs, refused) at once, not after the device
    # thread's time slice. Needs CAP_SYS_NICE (or RLIMIT_RTPRIO); without
    # it the server logs and keeps the threads' priority
    grpc_rt_priority: int = 0
    # past max_delay_ms a batch keeps filling while calls arrive less than this apart and its
    # members can still finish in time (0: off). With the loop behind the device it takes
    # calls only while the device is idle: on a slow model (1M items) batches otherwise stay
    # at the few it takes within max_delay_ms (benchmarks/RESULTS.md, "Large catalogs")
    fill_gap_ms: float = 0.0
    # a latency target: batches hold at most what the device answers in half of it (measured per
    # batch-size bucket) and a request expected to wait longer is refused, so admitted latency
    # under overload stays near it instead of growing to two full batches (None: off; "auto": a
    # multiple of the measured light-load latency, batcher.auto_latency_target_ms)
    latency_target_ms: float | str | None = None
    length_buckets: list | None = None
    # batch sizes compiled (None: powers of two up to max_batch_size; engine.batch_sizes)
    batch_buckets: list | None = None
    k_buckets: list | None = None
    max_history: int | None = None  # the model reads the latest N items (None: its max_len)
    max_k: int = 1000  # the largest k a client may ask (the largest k bucket)
    catalog_chunk: int | None = DEFAULT_CHUNK  # catalog columns scored at once (None: all)
    approx_recall: float | None = None  # approximate top-k (lax.approx_max_k) with this recall target
    table_dtype: str = "float32"  # the served item table: float32 | bfloat16 | int8 (per-row scales)
    # the GIL hand-off interval (sys.setswitchinterval) of the serving process, in ms (None: Python's
    # 5 ms). The device thread needs the GIL between XLA calls (dispatch, copies, answers); when the
    # event loop holds it, the device waits up to this long each time, idle. Measured on 2 cores
    # (ml-1m, RecommendBatch of 64, server on one core): 5 ms -> 0.5 ms +24% recommendations/s
    gil_switch_ms: float | None = 0.5
    # move the heap the start-up built (JAX, the model, gRPC) out of the garbage collector's
    # sight once serving (gc.freeze; freeze_heap): a full collection otherwise walks it all,
    # a pause of ~200 ms on 2 cores (ml-1m) that stops every thread, refuses a burst of calls and
    # blows the latency target. A process-wide setting: serve_forever applies it, tests that
    # run a server inside pytest (ThreadedServer) do not
    gc_freeze: bool = True
    metrics_port: int | None = None
    watch: bool = False
    watch_interval_s: float = 5.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # mutual TLS: clients must present a certificate this CA signed
    auth_token_file: str | None = None
    grace_s: float = 10.0
    artifact: str | None = None  # serve an exported artifact (jaxrec export) instead of the checkpoint
    ranker: str | None = None  # two-stage: a ranking run re-ranks the checkpoint's top candidates
    candidates: int = 200
    blend: float | None = None  # None: the ranker's trained residual weight (0 if none)
    # the user-event store (Observe, ForgetUser, Recommend by user_id; store.py): "sqlite:PATH"
    # (embedded, shared by --workers), "redis://HOST:PORT/DB" (many replicas) or "none"
    store: str = "sqlite:jaxrec-events.sqlite"
    store_ttl_s: float = DEFAULT_TTL_S  # a user's events are deleted this long after the last one
    # events kept per user beyond the model's history: exclude_seen still removes them
    exclude_window: int = EXCLUDE_WINDOW
    # diversity re-ranking (RecommendRequest.diversity): candidates it chooses among; 0 turns it off
    # (and its warm-up compiles: every k bucket within the pool, for embeddings and each item feature)
    diversity_pool: int = DEFAULT_POOL
    # items AddItems may add at serve time (spare table rows, filled from the items' features; a model
    # trained with item features), and how catalog items never trained on are served: "features" (their
    # id row replaced by the rarest trained items' mean: their features decide) or "trained" (as trained)
    new_item_slots: int = 0
    cold_items: str = "features"
    # an approximate item index (jaxrec.ann; faiss): a factory string such as "HNSW32" or
    # "IVF4096,Flat", "auto" (HNSW32) or "ivf" (~4 sqrt(N) cells); None: exact scoring.
    # index_params: faiss search parameters ("efSearch=128", "nprobe=32"; None: by index family)
    index: str | None = None
    index_params: str | None = None
    index_cache: str | None = None  # a directory keeping built indexes (keyed by the rows): restarts read them


def reload_failure_reason(e: Exception) -> str:
    """A label for the refusal counter: "mismatch" (another model or catalog: shapes or
    structure differ), else "unreadable" (partial or corrupt files)."""
    text = f"{type(e).__name__} {e}".lower()
    return "mismatch" if any(w in text for w in ("shape", "structure", "mismatch", "catalog", "tree")) \
        else "unreadable"


class ServerState:
    """What the handlers read; ``engine`` is replaced atomically on reload."""

    def __init__(self, engine: Engine | None, metrics: ServerMetrics):
        self.engine, self.metrics = engine, metrics
        self.batcher: Batcher | None = None
        self.store: EventStore | None = None
        self.draining = False  # stopping: new calls are refused UNAVAILABLE, taken ones answered

    def store_info(self) -> dict:
        """``ModelInfo``'s store fields."""
        s = self.store
        return {} if s is None else dict(store=s.url, store_max_events=s.max_events, store_ttl_s=int(s.ttl_s))


class TokenAuth(grpc.aio.ServerInterceptor):
    """Bearer-token check on every RPC but health checks (probes carry no token).

    The token file holds one token per line (several at once while rotating); it is re-read
    when it changes (checked at most once a second), so tokens rotate without a restart.
    Tokens are compared in constant time (``hmac.compare_digest``), so response timing does
    not reveal how much of a guess was right."""

    CHECK_EVERY_S = 1.0

    def __init__(self, token_file: str):
        self.path = Path(token_file)
        self._mtime, self._checked, self.tokens = None, 0.0, ()
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.CHECK_EVERY_S:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime_ns
            if force or mtime != self._mtime:
                self._mtime = mtime  # a bad version is reported once, not at every check
                tokens = tuple(t.strip().encode() for t in self.path.read_text().splitlines() if t.strip())
                if not tokens:
                    raise ValueError(f"{self.path}: empty token file")
                self.tokens = tokens
                if not force:
                    log.info("auth tokens reloaded from %s (%d token(s))", self.path, len(tokens))
        except (OSError, ValueError) as e:
            if force:
                raise ValueError(str(e)) from None
            log.error("auth token file unreadable (%s); keeping the previous tokens", e)

    def allowed(self, header: str | None) -> bool:
        self._reload()
        given = (header or "").encode()
        ok = False
        for t in self.tokens:  # every token compared, so timing does not depend on which matched
            ok |= hmac.compare_digest(given, b"Bearer " + t)
        return ok

    async def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1.Health/"):
            return await continuation(details)
        md = dict(details.invocation_metadata or ())
        if not self.allowed(md.get("authorization")):
            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            return grpc.unary_unary_rpc_method_handler(deny)
        return await continuation(details)


def load_engine(cfg: ServeConfig) -> Engine:
    if cfg.artifact:  # exported functions: no model code, no Orbax
        return Engine.from_artifact(cfg.artifact, max_batch_size=cfg.max_batch_size, batch_buckets=cfg.batch_buckets)
    from jaxrec.inference import Recommender
    rec = Recommender.from_checkpoint(cfg.checkpoint)
    ranker = Recommender.from_checkpoint(cfg.ranker) if cfg.ranker else None
    return Engine(rec, max_batch_size=cfg.max_batch_size, batch_buckets=cfg.batch_buckets,
                  length_buckets=cfg.length_buckets,
                  k_buckets=cfg.k_buckets, checkpoint=cfg.checkpoint, ranker=ranker,
                  candidates=cfg.candidates, blend=cfg.blend, max_history=cfg.max_history,
                  max_k=cfg.max_k, chunk=cfg.catalog_chunk, recall=cfg.approx_recall, table_dtype=cfg.table_dtype,
                  diversity_pool=cfg.diversity_pool, new_item_slots=cfg.new_item_slots, cold_items=cfg.cold_items,
                  index=cfg.index, index_params=cfg.index_params, index_cache=cfg.index_cache)


class Server:
    """One serving process. ``await start()``, then ``await wait()`` or ``await stop()``."""

    def __init__(self, cfg: ServeConfig, engine: Engine | None = None, *, bind_when_ready: bool = False):
        self.cfg = cfg
        self.bind_when_ready = bind_when_ready
        self.metrics = ServerMetrics()
        self._engine = engine
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.state: ServerState | None = None
        self.port: int | None = None
        self._watch_task = None
        self._count_task = None
        self._channelz_id = None
        self.grpc_threads: set[int] = set()  # gRPC's OS threads, started with the server (_bind)
        self._stopping = False
        self.stopped = asyncio.Event()

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE):
            r = self.health.set(name, status)
            if asyncio.iscoroutine(r):
                await r

    async def start(self) -> int:
        """Bind, compile, serve. A worker of ``--workers`` (``bind_when_ready``) compiles first
        and binds after: the port is shared, so a connection the kernel hands to this process
        must find it ready, and the health a client sees is the same whichever worker answers."""
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        # a latency target sizes the C core's pending queue by the measured call costs: one
        # capped batch, not one full batch (calls waiting there count against the target too)
        by_target = cfg.latency_target_ms is not None and cfg.max_pending_rpcs is None
        target_ms = None
        if self.bind_when_ready or cfg.latency_target_ms is not None:
            engine = await self._load(loop)
            target_ms = self._latency_target_ms(engine)
            pending = None
            if by_target:
                pending = engine.batch_within(target_ms / 2000.0)
                log.info("latency target %.1f ms: gRPC holds at most %d pending calls", target_ms, pending)
            await self._bind(pending)
        else:
            await self._bind()
            try:
                engine = await self._load(loop)
            except BaseException:
                await self.server.stop(0)  # release the port before the error surfaces
                raise
        try:  # bounded per user: what the model reads plus the exclude-seen window
            self.state.store = open_store(cfg.store, max_events=engine.max_len + cfg.exclude_window,
                                          ttl_s=cfg.store_ttl_s)
        except BaseException:
            await self.server.stop(0)
            raise
        if self.state.store is not None:
            log.info("event store %s: %d events per user, TTL %ss", self.state.store.url,
                     self.state.store.max_events, cfg.store_ttl_s)
        self.state.batcher = Batcher(lambda: self.state.engine, max_batch_size=cfg.max_batch_size,
                                     batch_sizes=engine.batch_buckets,
                                     max_delay_ms=cfg.max_delay_ms, max_queue=cfg.max_queue,
                                     metrics=self.metrics, max_wait_ms=cfg.max_wait_ms,
                                     fill_gap_ms=cfg.fill_gap_ms, latency_target_ms=target_ms)
        self.state.batcher.start()
        self.state.engine = engine
        self.metrics.model_step.set(engine.step or 0)
        self.metrics.time_gc()
        if cfg.metrics_port is not None:
            self.metrics.serve_http(cfg.metrics_port)
        if cfg.watch:
            self._watch_task = loop.create_task(self._watch())
        if self._channelz_id is not None:
            self._count_task = loop.create_task(self._count_grpc_calls())
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def _load(self, loop) -> Engine:
        engine = self._engine or await loop.run_in_executor(None, load_engine, self.cfg)
        if engine.index is not None:
            ix = engine.index
            log.info("approximate item index %s over %d items, %s in %.1fs", ix.describe(), ix.size,
                     f"read from {ix.loaded_from}" if ix.loaded_from else "built", engine.index_build_s)
        secs = await loop.run_in_executor(None, engine.warm_up)
        log.info("compiled %d buckets in %.1fs", engine.compile_count(), secs)
        log.info("one device call costs %s (measured after compiling)", engine.describe_costs())
        return engine

    async def _bind(self, pending: int | None = None) -> None:
        """Create the gRPC server and listen; ``pending`` overrides the C core's pending-call
        limit that ``max_pending_rpcs`` gives."""
        cfg = self.cfg
        interceptors = []
        if cfg.auth_token_file:
            interceptors.append(TokenAuth(cfg.auth_token_file))
        limit = cfg.max_concurrent_rpcs or cfg.max_queue + 2 * cfg.max_batch_size
        # so_reuseport: several worker processes listen on one port (the kernel spreads
        # connections); a lone server refuses a port another process holds
        options = [("grpc.so_reuseport", int(self.bind_when_ready))]
        if cfg.max_streams_per_connection:
            options.append(("grpc.max_concurrent_streams", int(cfg.max_streams_per_connection)))
        if pending is None:
            pending = cfg.max_batch_size if cfg.max_pending_rpcs is None else cfg.max_pending_rpcs
        if pending:
            options += [("grpc.server.max_pending_requests", int(pending)),
                        ("grpc.server.max_pending_requests_hard_limit", int(pending))]
        if os.environ.get("GRPC_EXPERIMENTS"):
            log.info("gRPC experiments: %s", os.environ["GRPC_EXPERIMENTS"])
        before, threads_before = grpc_server_ids(), os_thread_ids()
        self.server = grpc.aio.server(interceptors=interceptors, maximum_concurrent_rpcs=limit, options=options)
        ours = grpc_server_ids() - before  # one, unless another thread made a server just now
        self._channelz_id = ours.pop() if len(ours) == 1 else None
        # Everything is registered before start (gRPC needs that); the Recommender answers
        # UNAVAILABLE and health NOT_SERVING until the engine is compiled.
        self.state = ServerState(None, self.metrics)
        add_to_server(RecommenderServicer(self.state), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                            self.server)
        addr = f"{cfg.host}:{cfg.port}"
        if cfg.tls_cert:
            ca = Path(cfg.tls_client_ca).read_bytes() if cfg.tls_client_ca else None
            creds = grpc.ssl_server_credentials([(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())],
                                                root_certificates=ca, require_client_auth=ca is not None)
            self.port = self.server.add_secure_port(addr, creds)
        else:
            self.port = self.server.add_insecure_port(addr)
        await self.server.start()
        # gRPC's threads (its event engine, timers, the asyncio poller) start with the server:
        # --compute-nice leaves them at the process's priority
        self.grpc_threads = os_thread_ids() - threads_before

    def _latency_target_ms(self, engine: Engine) -> float | None:
        """``--latency-target-ms`` in ms for ``engine``: the number given, or for ``auto`` a
        multiple of the engine's measured light-load latency (logged)."""
        target = self.cfg.latency_target_ms
        if target != "auto":
            return target
        ms = auto_latency_target_ms(engine.light_call_s(), self.cfg.max_delay_ms)
        log.info("latency target auto: %.1f ms (%g x (%.1f ms batching delay + %.1f ms one request's call))",
                 ms, AUTO_TARGET_UNITS, self.cfg.max_delay_ms, 1000 * engine.light_call_s())
        return ms

    async def reload(self, force: bool = False) -> bool:
        """Load the newest checkpoint, compile it off the request path, swap it in.

        Returns False (and keeps the current model) when the checkpoint is not newer,
        unless ``force``."""
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(None, load_engine, self.cfg)
        current = self.state.engine.step
        if not force and current is not None and engine.step is not None and engine.step <= current:
            return False
        await loop.run_in_executor(None, engine.warm_up)
        if self.state.engine.added:
            log.warning("the new model does not have the %d item(s) AddItems added since the last load: "
                        "add them again", self.state.engine.added)
        if self.cfg.latency_target_ms == "auto":  # the new model's costs (the C core's pending limit stays)
            self.state.batcher.latency_target = self._latency_target_ms(engine) / 1000.0
        self.state.engine = engine  # atomic: the next batch uses it
        self.metrics.model_step.set(engine.step or 0)
        log.info("now serving step %s", engine.step)
        if gc.get_freeze_count():  # the process froze its heap (serve_forever): the old model is in it
            loop.call_later(self.REFREEZE_AFTER_S, self._refreeze)
        return True

    # the old model is freed once the batches that hold it end (milliseconds): collect it later
    REFREEZE_AFTER_S = 5.0

    def _refreeze(self) -> None:
        pause = freeze_heap(refreeze=True)
        log.info("collected the replaced model and froze the heap again (%.0f ms pause, %d objects frozen)",
                 1000 * pause, gc.get_freeze_count())

    async def _watch(self) -> None:
        """Poll the run directory; load a newer best checkpoint. One that cannot be served (partial,
        corrupt, another model's or catalog's) is refused with one log line and a counter, once,
        and the current model keeps serving."""
        from jaxrec.train.rundir import RunDir
        refused: set[int] = set()
        run = RunDir(self.cfg.checkpoint)
        while True:
            await asyncio.sleep(self.cfg.watch_interval_s)
            step, current = run.latest_step("best"), self.state.engine.step
            if step is None or step in refused or (current is not None and step <= current):
                continue
            try:
                await self.reload()
            except Exception as e:  # noqa: BLE001 - whatever is wrong with it, keep serving the old model
                refused.add(step)
                reason = reload_failure_reason(e)
                self.metrics.reload_failures.labels(reason).inc()
                detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                log.error("refused checkpoint step %s in %s (%s: %s); still serving step %s",
                          step, run.checkpoints_dir("best"), reason, detail, current)

    def sample_grpc_calls(self) -> None:
        """Bring ``jaxrec_grpc_calls_total`` up to gRPC's own counts for this server."""
        counts = core_call_counts(self._channelz_id) if self._channelz_id is not None else None
        if counts is not None:
            self.metrics.add_grpc_counts(counts)

    async def _count_grpc_calls(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                self.sample_grpc_calls()
            except Exception as e:  # a channelz change must not stop the server
                log.warning("gRPC call counts unavailable (%s: %s)", type(e).__name__, e)
                return

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, finish in-flight calls, then stop (a second call waits for the first)."""
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        for task in (self._watch_task, self._count_task):
            if task:
                task.cancel()
        # Drain in Python first, then stop gRPC: calls already taken are answered and new ones are
        # refused UNAVAILABLE (retried elsewhere by the documented retry policy) until none is in
        # flight or the grace runs out. gRPC's own stop(grace) does this on its default transport,
        # but its experimental one (--grpc-experiments ph2_server) resets in-flight streams.
        grace = self.cfg.grace_s if grace is None else grace
        t_end = time.monotonic() + grace
        if self.state:
            self.state.draining = True
            while self.state.metrics.in_flight_now() > 0 and time.monotonic() < t_end:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the last answers leave before gRPC closes the connections
        await self.server.stop(max(0.0, t_end - time.monotonic()))
        if self.state and self.state.batcher:
            await self.state.batcher.stop()
        if self.state and self.state.store:
            await self.state.store.close()
        self.metrics.time_gc(False)
        self.stopped.set()


def freeze_heap(refreeze: bool = False) -> float:
    """Collect once, then move every object alive into the collector's permanent generation
    (``gc.freeze``), where no collection walks it again. Why: a serving process holds a few
    hundred thousand long-lived objects (JAX, XLA's executables, the model, gRPC: 436k for
    ml-1m); a generation-2 collection walks them all, ~200 ms on 2 cores with the GIL held, and in
    that pause nothing is batched, answered or taken from gRPC's queue (what the collector
    scans after this is what serving allocates). ``refreeze``: after a hot reload, the frozen
    old model would never be collected (refcounting frees what has no cycle; its cycles stay),
    so unfreeze first and collect it: one such pause per reload. Returns the pause in seconds."""
    t = time.perf_counter()
    if refreeze:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - t


GRPC_THREAD_NAMES = ("grpc", "event_engine", "lifeguard")  # gRPC's C-core threads name themselves so


def os_thread_ids() -> set[int]:
    """This process's OS thread ids (Linux; empty elsewhere)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _thread_name(tid: int) -> str:
    try:
        return Path(f"/proc/self/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""


def grpc_core_thread_ids() -> set[int]:
    """This process's threads of gRPC's C core, by the names they give themselves (Linux)."""
    return {t for t in os_thread_ids() if _thread_name(t).startswith(GRPC_THREAD_NAMES)}


def _renice(tid: int, inc: int) -> None:
    os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + int(inc))


async def set_thread_priorities(srv: "Server", loop_nice: int, compute_nice: int = 0,
                                grpc_rt_priority: int = 0) -> None:
    """Lower the event-loop thread's priority by ``loop_nice`` and the compute threads' (the
    device thread's, XLA's) by ``compute_nice`` (``ServeConfig.loop_nice``, ``compute_nice``);
    gRPC's own threads keep the process's.

    On one contended core the order is then: gRPC's C core (taking calls, refusing those past
    the pending limit), the device (answering admitted work), the event loop (taking new
    calls only when the device is idle). Threads inherit the nice value of the thread that
    creates them, so the device thread is started first (one no-op on its executor); threads
    XLA starts later run at the compute threads' value, those the loop starts later (reload,
    the default executor, the event store's) at the loop's. ``grpc_rt_priority``
    (``ServeConfig.grpc_rt_priority``) puts gRPC's threads ahead of every nice value
    (SCHED_FIFO): on a core the device keeps busy, a call past the pending limit is refused
    within a millisecond instead of after the device's time slice (benchmarks/RESULTS.md,
    "Overload"); the threads they start inherit it. Only the C core's threads, found by name:
    the Python threads gRPC starts keep the process's policy. Linux only (there a thread id names one
    thread to ``setpriority``); elsewhere it logs.
    """
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is not a setpriority target
        log.warning("--loop-nice and --compute-nice work on Linux only; every thread keeps its priority")
        return
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(srv.state.batcher.executor, lambda: None)
    loop_tid = threading.get_native_id()
    try:
        if compute_nice:
            for tid in os_thread_ids() - srv.grpc_threads - grpc_core_thread_ids() - {loop_tid}:
                try:
                    _renice(tid, compute_nice)
                except ProcessLookupError:  # ended meanwhile
                    pass
        if loop_nice:
            _renice(loop_tid, loop_nice)
    except (AttributeError, OSError) as e:
        log.warning("could not lower the threads' priorities (--loop-nice %s, --compute-nice %s): %s",
                    loop_nice, compute_nice, e)
    if grpc_rt_priority:
        # by name only: the C core's own threads, which never take the GIL. Not the Python threads
        # gRPC starts (grpc.aio's completion-queue poller), which take the GIL: with the poller at
        # real-time priority two 30-minute soaks each lost a burst of ~160 calls to their deadline,
        # without it one lost 2 calls (benchmarks/RESULTS.md, "Overload")
        done = []
        try:
            for tid in grpc_core_thread_ids():
                try:
                    os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(grpc_rt_priority))
                    done.append(_thread_name(tid))
                except ProcessLookupError:  # ended meanwhile
                    pass
            log.info("gRPC's threads at real-time priority %d: %s", grpc_rt_priority, ", ".join(sorted(done)))
        except (AttributeError, OSError) as e:
            log.warning("could not give gRPC's threads real-time priority %s: %s", grpc_rt_priority, e)


async def serve_forever(cfg: ServeConfig, *, worker=None) -> None:
    """Serve until SIGTERM/SIGINT, then drain. ``worker``: called with the started ``Server``
    when this process is one of ``--workers`` (it binds once compiled and reports itself ready
    to the parent instead of printing)."""
    if cfg.gil_switch_ms is not None:
        sys.setswitchinterval(cfg.gil_switch_ms / 1000.0)
    srv = Server(cfg, bind_when_ready=worker is not None)
    port = await srv.start()
    if cfg.gc_freeze:
        pause = freeze_heap()
        log.info("froze %d start-up objects out of the garbage collector's sight (%.0f ms)",
                 gc.get_freeze_count(), 1000 * pause)
    loop = asyncio.get_running_loop()
    if cfg.loop_nice or cfg.compute_nice or cfg.grpc_rt_priority:
        await set_thread_priorities(srv, cfg.loop_nice, cfg.compute_nice, cfg.grpc_rt_priority)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(srv.stop()))
    if worker is not None:
        worker(srv)
    else:
        print(f"serving {srv.state.engine.name} step {srv.state.engine.step} on {cfg.host}:{port}"
              + (f", metrics on :{cfg.metrics_port}/metrics" if cfg.metrics_port is not None else ""), flush=True)
    await srv.stopped.wait()
    if worker is None:
        print("stopped", flush=True)


EVENT_LOOPS = ("asyncio", "uvloop")


def run_on_loop(coro, event_loop: str = "asyncio"):
    """Run ``coro`` to completion on the named event loop.

    ``uvloop`` (libuv, written in Cython) does the loop's own per-callback work faster than
    the standard library's. Measured on 2 cores it changed the batched server's throughput by
    only ~2% (grpc's per-call work, not the loop, is the cost; benchmarks/RESULTS.md, Serving),
    so asyncio stays the default and uvloop is there for deployments that standardise on it.
    """
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"event_loop={event_loop!r}; use one of {', '.join(EVENT_LOOPS)}")
    if event_loop == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


class ThreadedServer:
    """A server on its own event loop in a background thread (tests, notebooks, benchmarks)."""

    def __init__(self, cfg: ServeConfig, engine: Engine | None = None):
        self.loop = asyncio.new_event_loop()
        self.srv = Server(cfg, engine)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self.call(self.srv.start(), timeout=600)

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.srv.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
