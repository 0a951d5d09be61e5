"""Dynamic batching on the event loop; the model runs in one worker thread per device.

A request waits at most ``max_delay_ms`` after the first request of its batch, and a batch
holds at most ``max_batch_size`` requests. While the device runs one batch the next one
fills, so under load batches grow by themselves.

Admission control keeps goodput under overload (a queue that holds more work than a
deadline allows makes every request wait past its deadline while the server computes
answers nobody can use):

* the expected wait of a new request is the device time of the batches ahead of it (the one
  running, the full ones queued) and of its own, from an exponential average of recent batch
  times per batch-size bucket; a request is refused at once with RESOURCE_EXHAUSTED
  (``Overloaded``) when that wait exceeds its remaining deadline or ``max_wait_ms`` (by
  default four full-batch times, at least 50 ms: under overload the queue stays a few
  batches deep, so admitted requests keep a latency of a few batches, not of the deadline);
* an idle server (nothing queued, nothing running) admits every request, and an estimate not
  refreshed for ``STALE_S`` seconds, or learnt on another engine (before a hot reload), is
  forgotten: a refusal never rests on a stale figure, so a burst of slow batches (a reload's
  compiles sharing the CPU) cannot leave the server refusing everything with no batch left to
  correct the average;
* a batch keeps filling past ``max_delay`` while calls keep arriving close together
  (``fill_gap_ms``, off by default) and its members can still finish in time: with the
  event loop behind the device (``--loop-nice``), the loop takes calls only while the device
  is idle, and in ``max_delay`` alone it takes a few (1M items, 32 clients: batches of 1.7,
  22.4 req/s; with a 1 ms gap 98.5 req/s; benchmarks/RESULTS.md);
* with a latency target (``latency_target_ms``, off by default) a batch holds at most what
  the device answers in half of it (``batch_cap``, from the same averages) and the admission
  bound is the target: under overload every batch is full, so without a cap an admitted
  request waits a full batch and runs in the next, and its latency grows with the batch size
  instead of staying near what it is under light load;
* the queue is bounded (``max_queue``) as a last resort;
* when a batch forms, requests whose caller has gone (cancelled), whose deadline has passed,
  or whose deadline ends before the batch can finish are dropped (DEADLINE_EXCEEDED), so the
  device computes only answers someone can still use.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import dataclasses
import time

from jaxrec.data.codec import pick, pow2_buckets
from jaxrec_server.engine import Answer, Query
from jaxrec_server.metrics import ServerMetrics


AUTO_TARGET_UNITS = 4.5  # --latency-target-ms auto: this many light-load latencies (auto_latency_target_ms)


def auto_latency_target_ms(light_call_s: float, max_delay_ms: float) -> float:
    """The latency target ``auto`` means: ``AUTO_TARGET_UNITS`` times what one request takes on
    an idle server (the batching delay plus one call at the longest history bucket, timed after
    warm-up). A fixed number of milliseconds holds admitted latency under overload near a level
    that fits one machine's speed; the measured cost follows the model, the catalog and the
    machine, so the target stays a multiple of the latency the server has under light load."""
    return AUTO_TARGET_UNITS * (max_delay_ms + 1000.0 * light_call_s)


class QueueFull(Exception):
    pass


class Overloaded(QueueFull):
    """The expected queue wait exceeds what the request (or the server's bound) allows."""

    def __init__(self, message: str, pushback_ms: int):
        super().__init__(message)
        self.pushback_ms = pushback_ms  # when a retry has a chance: the expected wait


class DeadlineExpired(Exception):
    pass


@dataclasses.dataclass
class _Item:
    query: Query
    future: asyncio.Future
    arrived: float
    deadline: float | None  # loop time


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS (``top -H``, ``/proc/PID/task/*/comm``, per-thread CPU
    in benchmarks/overload.py): Python's thread names are its own. Linux only; elsewhere none."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # 15: PR_SET_NAME
    except (OSError, AttributeError):
        pass


class Batcher:
    EWMA = 0.2  # weight of the newest batch in the batch-time averages
    STALE_S = 5.0  # an average not refreshed for this long is forgotten

    FILL_MAX_S = 0.05  # a batch that keeps filling is sent at the latest this long after its first request

    def __init__(self, engine_ref, *, max_batch_size: int, max_delay_ms: float, max_queue: int,
                 metrics: ServerMetrics, max_wait_ms: float | None = None, fill_gap_ms: float = 0.0,
                 latency_target_ms: float | None = None, batch_sizes: list | None = None):
        self.engine_ref = engine_ref  # callable -> current Engine (swapped on hot reload)
        self.max_batch_size, self.max_delay = max_batch_size, max_delay_ms / 1000.0
        self.max_wait = None if max_wait_ms is None else max_wait_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.metrics = metrics
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxrec-device",
                                                              initializer=name_os_thread, initargs=("jaxrec-device",))
        self._task: asyncio.Task | None = None
        # the engine's compiled batch sizes: the buckets batch times are averaged over
        self.sizes = list(batch_sizes) if batch_sizes else pow2_buckets(max_batch_size)
        self.seconds: dict[int, tuple[float, float]] = {}  # bucket -> (average device s, clock when measured)
        self._measured_on = None  # the engine the averages were measured on
        self.clock = time.monotonic
        self.running: int = 0  # size of the batch on the device now (0: none)
        self.forming: int = 0  # requests taken off the queue into the batch being formed
        self._overloaded = metrics.rejects.labels("overloaded")
        self.fill_gap = fill_gap_ms / 1000.0
        self.latency_target = None if latency_target_ms is None else latency_target_ms / 1000.0

    def _fresh(self) -> dict[int, float]:
        """The averages still worth trusting: measured on the current engine, recently."""
        if self._measured_on is not None and self._measured_on is not self.engine_ref():
            self.seconds.clear()
            self._measured_on = None
        now = self.clock()
        for b in [b for b, (_, at) in self.seconds.items() if now - at > self.STALE_S]:
            del self.seconds[b]
        return {b: sec for b, (sec, _) in self.seconds.items()}

    def batch_time(self, n: int, fresh: dict | None = None) -> float | None:
        """Expected device seconds of a batch of ``n``: its bucket's average; for a bucket not
        measured yet, the nearest measured one's (optimistic for a larger batch: a burst is
        admitted until batches of its size have been timed, and the deadline check when a
        batch forms catches what the estimate let through)."""
        fresh = self._fresh() if fresh is None else fresh
        if not fresh:
            return None
        b = pick(self.sizes, n)
        return fresh[b] if b in fresh else fresh[min(fresh, key=lambda s: abs(s - b))]

    def _observe(self, n: int, seconds: float, engine=None) -> None:
        fresh, b = self._fresh(), pick(self.sizes, n)
        if engine is not None and engine is not self._measured_on:
            fresh, self._measured_on = {}, engine
            self.seconds.clear()
        old = fresh.get(b)
        avg = seconds if old is None else (1 - self.EWMA) * old + self.EWMA * seconds
        self.seconds[b] = (avg, self.clock())

    def batch_cap(self, fresh: dict | None = None) -> int:
        """The most requests one batch may hold now: ``max_batch_size``, or with a latency
        target the largest batch-size bucket whose measured time is at most half the target
        (a request waits for the batch running, then runs in its own: two batch times). A
        bucket not timed yet counts as the nearest larger timed one (no faster: time grows
        with the batch); above every timed bucket the cap grows one bucket at a time, each
        tried once and kept while it meets the target. A slow bucket's average goes stale
        after ``STALE_S`` and is tried again, as load and the machine's speed move."""
        if self.latency_target is None:
            return self.max_batch_size
        fresh = self._fresh() if fresh is None else fresh
        cap = self.sizes[0]
        for b in self.sizes:
            t = fresh.get(b)
            if t is None:
                larger = [sec for m, sec in fresh.items() if m > b]
                if not larger:  # above everything timed: try it
                    cap = b
                    break
                t = min(larger)
            if t > self.latency_target / 2:
                break
            cap = b
        return cap

    def expected_wait(self, depth: int | None = None, fresh: dict | None = None, cap: int | None = None) -> float:
        """Seconds until a request arriving now would have its answer: the batch running, the
        full batches queued ahead of it, and its own batch. ``fresh`` and ``cap``: this
        moment's averages and batch cap, where a caller asks for several depths at once."""
        depth = self.queue.qsize() + self.forming if depth is None else depth
        fresh = self._fresh() if fresh is None else fresh
        cap = self.batch_cap(fresh) if cap is None else cap
        full, rest = divmod(depth, cap)
        total = (self.batch_time(cap, fresh) or 0.0) * full + (self.batch_time(rest + 1, fresh) or 0.0)
        if self.running:
            total += self.batch_time(self.running, fresh) or 0.0
        return total + self.max_delay

    FULL_BATCHES = 4  # default bound: this many full-batch times of expected wait ...
    MIN_WAIT_S = 0.05  # ... but never below 50 ms (a fast model's batches take a few ms)

    def wait_limit(self, timeout: float | None) -> float | None:
        """The longest expected wait a request may be admitted with (None: no limit yet)."""
        bound = self.max_wait
        if self.latency_target is not None:
            bound = self.latency_target if bound is None else min(bound, self.latency_target)
        if bound is None:
            fresh = self._fresh()
            # batch time grows with batch size: no measured batch is slower than a full one
            full = max(fresh.values(), default=None)
            bound = None if full is None else max(self.FULL_BATCHES * full + 2 * self.max_delay, self.MIN_WAIT_S)
        if timeout is not None:
            bound = timeout if bound is None else min(bound, timeout)
        return bound

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    def admit(self, timeout: float | None) -> None:
        """Raise ``Overloaded`` when a request with ``timeout`` seconds left should not queue.
        The servicer asks before it parses the request's ids: a refusal costs next to nothing.
        An idle server (nothing queued, nothing running) admits: refusing saves nothing, and
        the batch refreshes the estimates."""
        if not self.admit_many(1, timeout):
            raise self.overloaded(timeout)

    def admit_many(self, n: int, timeout: float | None) -> int:
        """How many of ``n`` requests arriving together (a batch RPC's entries, all with
        ``timeout`` seconds left) may queue: the first ones, in order, as long as the expected
        wait with those ahead of them in the queue stays within the limit. The rest are counted
        as refused (``overloaded``); the caller answers each of them ``Overloaded``. One
        estimate for the whole call, not one per entry."""
        if not self.running and not self.forming and self.queue.empty():
            return n  # idle: refusing saves nothing, and the batch refreshes the estimates
        limit = self.wait_limit(timeout)
        if limit is None:
            return n
        fresh, depth = self._fresh(), self.queue.qsize() + self.forming
        cap = self.batch_cap(fresh)
        # the expected wait grows with the depth: the first entry that would wait too long
        m = bisect.bisect_right(range(n), limit, key=lambda j: self.expected_wait(depth + j, fresh, cap))
        if m < n:
            self._overloaded.inc(n - m)
        return m

    def overloaded(self, timeout: float | None) -> Overloaded:
        """The refusal of a request ``admit_many`` turned away."""
        wait, limit = self.expected_wait(), self.wait_limit(timeout) or 0.0
        return Overloaded(f"server overloaded: expected wait {1000 * wait:.0f} ms, more than the "
                          f"{1000 * limit:.0f} ms this request may wait; retry with backoff",
                          pushback_ms=max(1, int(1000 * wait)))

    def enqueue(self, query: Query, timeout: float | None) -> asyncio.Future:
        """Queue an admitted ``query``; the future resolves to its ``Answer``. Not a coroutine:
        a batch RPC queues all its entries at once and awaits their futures together."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            self.queue.put_nowait(_Item(query, fut, loop.time(), deadline))
        except asyncio.QueueFull:
            self.metrics.rejects.labels("queue_full").inc()
            raise QueueFull(f"queue full ({self.queue.maxsize} waiting requests)") from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return fut

    async def submit(self, query: Query, timeout: float | None) -> Answer:
        """Admit, queue and wait for the answer of one query."""
        self.admit(timeout)
        return await self.enqueue(query, timeout)

    async def _collect(self) -> list[_Item]:
        """The next batch: the first request, then whatever arrives within ``max_delay``. Past
        that the batch keeps filling while requests keep arriving less than ``fill_gap`` apart
        (calls the loop takes one after another from gRPC's backlog) and every request in it
        can still finish before its deadline (the batch-time average of one more), up to
        ``FILL_MAX_S`` after the first. Under load the device's next batch is then every call
        that waited, not the few the loop took within ``max_delay``; a lone request still
        waits ``max_delay`` at most."""
        loop = asyncio.get_running_loop()
        first = await self.queue.get()
        batch = [first]
        self.forming = 1  # counted as waiting work until the batch is on the device
        start = last = loop.time()
        end, due = start + self.max_delay, first.deadline
        cap = self.batch_cap()
        while len(batch) < cap:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                now = loop.time()
                limit = end
                if self.fill_gap and now - start < self.FILL_MAX_S and (
                        due is None or now + (self.batch_time(len(batch) + 1) or 0.0) < due):
                    limit = max(end, min(last + self.fill_gap, start + self.FILL_MAX_S))
                left = limit - now
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            batch.append(item)
            self.forming, last = len(batch), loop.time()
            if item.deadline is not None:
                due = item.deadline if due is None else min(due, item.deadline)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self.metrics.queue_depth.set(self.queue.qsize())
            now = loop.time()
            finish = now + (self.batch_time(len(batch)) or 0.0)  # when this batch's answers would arrive
            live = []
            for it in batch:
                if it.future.done():  # cancelled by the caller
                    self.metrics.rejects.labels("cancelled").inc()
                elif it.deadline is not None and finish >= it.deadline:
                    self.metrics.rejects.labels("deadline").inc()
                    it.future.set_exception(DeadlineExpired(
                        "deadline passed while queued" if now >= it.deadline else
                        "the deadline ends before this request's batch could finish"))
                else:
                    live.append(it)
            if not live:
                self.forming = 0
                continue
            for it in live:
                self.metrics.queue_seconds.observe(now - it.arrived)
            self.metrics.batch_size.observe(len(live))
            engine = self.engine_ref()
            self.running, self.forming, t0 = len(live), 0, loop.time()
            try:
                answers = await loop.run_in_executor(self.executor, engine.run, [it.query for it in live])
            except Exception as e:  # noqa: BLE001 - delivered to every caller of the batch
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            finally:
                self.running = 0
                self._observe(len(live), loop.time() - t0, engine)
                self.metrics.batch_seconds.observe(loop.time() - t0)
            for it, a in zip(live, answers):
                if not it.future.done():
                    it.future.set_result(a)
