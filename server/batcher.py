"""Dynamic batching on the event loop; the model runs in one worker thread per device.

A request waits at most ``max_delay_ms`` after the first request of its batch, and a batch
holds at most ``max_batch_size`` requests. While the device runs one batch the next one
fills, so under load batches grow by themselves. The queue is bounded: a full queue is a
fast RESOURCE_EXHAUSTED, not an unbounded latency. Requests whose caller has gone
(cancelled) or whose deadline has passed are dropped before a batch forms.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses

from jaxrec_server.engine import Answer, Query
from jaxrec_server.metrics import ServerMetrics


class QueueFull(Exception):
    pass


class DeadlineExpired(Exception):
    pass


@dataclasses.dataclass
class _Item:
    query: Query
    future: asyncio.Future
    arrived: float
    deadline: float | None  # loop time


class Batcher:
    def __init__(self, engine_ref, *, max_batch_size: int, max_delay_ms: float, max_queue: int,
                 metrics: ServerMetrics):
        self.engine_ref = engine_ref  # callable -> current Engine (swapped on hot reload)
        self.max_batch_size, self.max_delay = max_batch_size, max_delay_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.metrics = metrics
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxrec-device")
        self._task: asyncio.Task | None = None
        self.in_flight = 0

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

    async def submit(self, query: Query, timeout: float | None) -> Answer:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            self.queue.put_nowait(_Item(query, fut, loop.time(), deadline))
        except asyncio.QueueFull:
            self.metrics.rejects.labels("queue_full").inc()
            raise QueueFull(f"queue full ({self.queue.maxsize} waiting requests)") from None
        self.in_flight += 1
        try:
            return await fut
        finally:
            self.in_flight -= 1

    async def _collect(self) -> list[_Item]:
        first = await self.queue.get()
        batch = [first]
        end = asyncio.get_running_loop().time() + self.max_delay
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            now = loop.time()
            live = []
            for it in batch:
                if it.future.done():  # cancelled by the caller
                    self.metrics.rejects.labels("cancelled").inc()
                elif it.deadline is not None and now >= it.deadline:
                    self.metrics.rejects.labels("deadline").inc()
                    it.future.set_exception(DeadlineExpired("deadline passed while queued"))
                else:
                    live.append(it)
            if not live:
                continue
            for it in live:
                self.metrics.queue_seconds.observe(now - it.arrived)
            self.metrics.batch_size.observe(len(live))
            engine = self.engine_ref()
            try:
                answers = await loop.run_in_executor(self.executor, engine.run, [it.query for it in live])
            except Exception as e:  # noqa: BLE001 - delivered to every caller of the batch
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            for it, a in zip(live, answers):
                if not it.future.done():
                    it.future.set_result(a)
