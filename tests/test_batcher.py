"""Admission control in the batcher: refuse fast what cannot finish in time, never compute it."""

import asyncio
import time

import numpy as np
import pytest

from jaxrec_server.batcher import Batcher, DeadlineExpired, Overloaded
from jaxrec_server.engine import Answer, Query
from jaxrec_server.metrics import ServerMetrics


class SlowEngine:
    """A device batch takes 20 ms + 5 ms per request; records every query it computed."""

    def __init__(self):
        self.computed = []
        self.queued = 0

    def run(self, queries):
        start = time.monotonic()
        time.sleep(0.020 + 0.005 * len(queries))
        self.computed += [(q, start) for q in queries]  # (query, when its batch began computing)
        return [Answer(np.array([1]), np.array([0.0])) for _ in queries]


def _query(i):
    return Query(np.array([i % 50 + 1], np.int32), 1)


async def _offer(batcher, n, timeout, spacing=0.0, deadlines=None):
    """Submit n requests (``spacing`` s apart); per request: (outcome, seconds until it ended).
    ``deadlines``, when given, maps each submitted query's ``id`` to its deadline (monotonic)."""
    async def one(i):
        t0, query = time.monotonic(), _query(i)
        if deadlines is not None:
            deadlines[id(query)] = t0 + timeout
        try:
            await batcher.submit(query, timeout)
            return "ok", time.monotonic() - t0
        except Overloaded:
            return "refused", time.monotonic() - t0
        except DeadlineExpired:
            return "deadline", time.monotonic() - t0

    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.sleep(spacing)
    return await asyncio.gather(*tasks)


def _overload_trial():
    """One overload run on a fresh batcher: (engine, metrics, outcomes, deadlines)."""
    engine, metrics, deadlines = SlowEngine(), ServerMetrics(), {}

    async def main():
        b = Batcher(lambda: engine, max_batch_size=8, max_delay_ms=1.0, max_queue=10_000, metrics=metrics)
        enqueue = b.enqueue

        def counted(query, timeout):  # every request that entered the queue
            engine.queued += 1
            return enqueue(query, timeout)
        b.enqueue = counted
        b.start()
        await _offer(b, 16, 1.0, spacing=0.01)  # learn the batch times
        engine.computed.clear()
        engine.queued = 0
        # 400 requests in 0.4 s = 1,000/s against a capacity of ~8 / 60 ms = 133/s
        out = await _offer(b, 400, 0.4, spacing=0.001, deadlines=deadlines)
        await b.stop()
        return out

    return engine, metrics, asyncio.run(main()), deadlines


def test_overload_is_refused_fast_and_admitted_work_meets_its_deadline():
    # Up to 3 runs for the one timing-dependent bound (admitted work that expired in the queue):
    # a stall of the whole VM inside the 0.4 s window (a garbage collection of the test process's
    # heap, another process on the 2 cores) expires admitted requests whatever the batcher
    # decided; in one full CI run (session 53) it cost 16 of 113. Every other assertion holds on every run.
    for attempt in range(3):
        engine, metrics, out, deadlines = _overload_trial()
        ok = [s for o, s in out if o == "ok"]
        refused = [s for o, s in out if o == "refused"]
        expired = sum(o == "deadline" for o, _ in out)
        assert refused and ok, (len(ok), len(refused))
        # refused at once, not after waiting: a refusal is raised before the request is queued (so
        # it never waits for anything), and typically within microseconds. The median, not the
        # slowest: one garbage collection of the test process's heap (JAX and every earlier test's
        # objects) can stop any line of Python for a few hundred ms on a loaded 2-core machine
        assert engine.queued == len(ok) + expired
        assert float(np.median(refused)) < 0.010
        # what was admitted was computed before its deadline: no batch began with a member whose
        # deadline had passed (judged by the batcher's own decisions, not by how long a sleep took on
        # a loaded machine: the batcher starts a batch only when its measured batch time fits, so
        # a slow moment of the VM can make an answer late, never make the batcher start a late one)
        assert all(start < deadlines[id(q)] for q, start in engine.computed)
        # goodput: the device computed only answers that were delivered in time
        assert len(engine.computed) == len(ok)
        assert metrics.registry.get_sample_value("jaxrec_rejects_total", {"reason": "overloaded"}) == len(refused)
        if expired <= 0.05 * len(ok):
            break
    assert expired <= 0.05 * len(ok), (attempt + 1, expired, len(ok))


def _serve(engine, metrics, offers, **batcher_args):
    """Run a started Batcher (batches of up to 64, 1 ms delay) through ``offers`` of
    ``_offer(n, timeout, spacing)`` one after another; every request's outcome."""
    async def main():
        b = Batcher(lambda: engine, max_batch_size=64, max_delay_ms=1.0, max_queue=10_000, metrics=metrics,
                    **batcher_args)
        b.start()
        out = []
        for n, timeout, spacing in offers:
            out += await _offer(b, n, timeout, spacing=spacing)
        await b.stop()
        return out
    return asyncio.run(main())


def test_light_load_and_bursts_within_the_deadline_are_admitted():
    engine, metrics = SlowEngine(), ServerMetrics()
    # then a burst: 4 batches of 64, ~1.3 s, within the 2 s bound
    out = _serve(engine, metrics, [(8, 5.0, 0.02), (200, 5.0, 0.0)], max_wait_ms=2_000)
    assert all(o == "ok" for o, _ in out), {o for o, _ in out}


def test_expected_wait_counts_running_and_queued_batches():
    b = Batcher(lambda: None, max_batch_size=4, max_delay_ms=0.0, max_queue=100, metrics=ServerMetrics())
    assert b.expected_wait(10) == 0.0 and b.wait_limit(None) is None  # nothing measured: no refusal
    b._observe(4, 0.1)
    b._observe(1, 0.04)
    assert b.batch_time(3) == pytest.approx(0.1) and b.batch_time(1) == pytest.approx(0.04)
    assert b.batch_time(2) == pytest.approx(0.04)  # not measured: the nearest bucket's
    assert b.expected_wait(9) == pytest.approx(2 * 0.1 + 0.04)  # two full batches ahead, then its own
    b.running = 4
    assert b.expected_wait(0) == pytest.approx(0.04 + 0.1)
    assert b.wait_limit(0.15) == pytest.approx(0.15) and b.wait_limit(5.0) == pytest.approx(0.4)
    fast = Batcher(lambda: None, max_batch_size=4, max_delay_ms=0.0, max_queue=100, metrics=ServerMetrics())
    fast._observe(4, 0.001)  # a fast model: the bound does not fall below 50 ms
    assert fast.wait_limit(None) == pytest.approx(0.05)


def test_a_batch_call_admits_the_entries_that_fit_in_order():
    """``admit_many``: one estimate per batch RPC; its entries queue behind one another, so the
    first ones that fit are admitted, as if each had been admitted with those before it queued."""
    b = Batcher(lambda: None, max_batch_size=4, max_delay_ms=0.0, max_queue=100, metrics=ServerMetrics())
    assert b.admit_many(50, 0.01) == 50  # idle: everything
    b._observe(4, 0.1)
    b._observe(1, 0.04)
    b.running = 4
    refused = b.metrics.rejects.labels("overloaded")
    before = refused._value.get()
    m = b.admit_many(20, 0.35)
    # one by one: entry j waits for the running batch and depth j ahead of it
    assert m == sum(1 for j in range(20) if b.expected_wait(j) <= 0.35) == 10
    assert b.expected_wait(m - 1) <= 0.35 < b.expected_wait(m)
    assert refused._value.get() - before == 10
    limit = b.wait_limit(None)  # the default bound: four full batches
    assert b.admit_many(20, None) == sum(1 for j in range(20) if b.expected_wait(j) <= limit) > 10
    assert "expected wait" in str(b.overloaded(0.35)) and b.overloaded(0.35).pushback_ms >= 1


def test_a_stale_or_foreign_estimate_never_refuses():
    """A burst of slow batches (a reload compiling on the same CPU) must not leave the server
    refusing everything: refusals stop the batches that would correct the average."""
    now = [0.0]
    engines = [object()]
    b = Batcher(lambda: engines[0], max_batch_size=4, max_delay_ms=0.0, max_queue=100, metrics=ServerMetrics())
    b.clock = lambda: now[0]
    b._observe(4, 0.001, engines[0])
    b._observe(1, 0.5, engines[0])  # one slow outlier in the small bucket
    # the bound rests on the slowest measured batch, so a slow small batch is not "overload"
    assert b.wait_limit(None) == pytest.approx(4 * 0.5)
    b.running = 1
    b.admit(None)  # one batch ahead: admitted
    b.running = 0
    b.admit(0.1)  # idle: admitted whatever the estimate says
    now[0] = b.STALE_S + 1  # not refreshed since: forgotten
    assert b.batch_time(1) is None and b.wait_limit(None) is None
    b._observe(1, 0.01, engines[0])
    engines[0] = object()  # hot reload: the new engine's batch times are its own
    assert b.batch_time(1) is None


@pytest.mark.parametrize("gap_ms,slow", [(0.0, False), (30.0, False), (30.0, True)])
def test_a_batch_keeps_filling_while_calls_arrive_close_together(gap_ms, slow):
    """Requests to an instant device: with no fill gap a batch closes ``max_delay`` (1 ms) after
    its first request, so requests 20 ms apart go one by one; with a 30 ms gap, requests 2 ms
    apart keep one batch filling, up to the batch limit, unless a batch is known to take longer
    than its requests' deadlines allow. Both spacings are 15-20x from the time they are tested
    against, so a busy machine's scheduling jitter (CI once saw > 3 ms; a test run beside three
    training runs merged 2 ms-apart requests) cannot turn one answer into the other."""
    metrics = ServerMetrics()

    class Instant:
        def run(self, queries):
            return [Answer(np.array([1]), np.array([0.0])) for _ in queries]
    engine = Instant()

    async def main():
        b = Batcher(lambda: engine, max_batch_size=8, max_delay_ms=1.0, max_queue=10_000, metrics=metrics,
                    fill_gap_ms=gap_ms)
        if slow:
            b.clock = lambda: 0.0  # the averages never go stale
            b._observe(8, 0.2, engine)  # a batch takes 0.2 s: 8 ms of filling leaves it in time
        b.start()
        out = await _offer(b, 8, 0.21, spacing=0.002 if gap_ms else 0.02)
        await b.stop()
        return out

    out = asyncio.run(main())
    batches = metrics.registry.get_sample_value("jaxrec_batch_size_count")
    if slow:  # the first batch stopped filling when one more would finish past its first deadline
        assert 2 <= batches, batches
        assert max(metrics.registry.get_sample_value("jaxrec_batch_size_bucket", {"le": "4.0"}), 0) >= 1
        return
    assert all(o == "ok" for o, _ in out)
    if gap_ms:
        # one batch of 8 (two if the first closed before the others came; more only when the
        # machine stalls the client > 30 ms between two requests, as three training runs did)
        assert batches <= 4, batches
    else:
        assert batches >= 5, batches  # one per request, but for stalls of > 20 ms


def test_a_latency_target_caps_the_batch_by_measured_times_and_bounds_the_wait():
    """Half the target is what one batch may take (a request waits for the batch running, then
    runs in its own); the cap grows one untimed bucket at a time and falls back when a bucket
    is timed too slow; the admission bound is the target."""
    b = Batcher(lambda: None, max_batch_size=64, max_delay_ms=0.0, max_queue=100, metrics=ServerMetrics(),
                latency_target_ms=100.0)
    b.clock = lambda: 0.0
    assert b.batch_cap() == 1  # nothing timed: start small
    b._observe(1, 0.010)
    assert b.batch_cap() == 2
    b._observe(2, 0.020)
    b._observe(4, 0.040)
    assert b.batch_cap() == 8  # the next bucket up is tried once
    b._observe(8, 0.080)  # over 50 ms
    assert b.batch_cap() == 4
    # two full batches of the cap queued, then one of one: 2 x 40 ms + 10 ms
    assert b.expected_wait(8) == pytest.approx(0.09)
    assert b.wait_limit(None) == pytest.approx(0.1) and b.wait_limit(0.05) == pytest.approx(0.05)

    timed_large = Batcher(lambda: None, max_batch_size=64, max_delay_ms=0.0, max_queue=100,
                          metrics=ServerMetrics(), latency_target_ms=500.0)
    timed_large.clock = lambda: 0.0
    timed_large._observe(64, 0.2)  # smaller buckets are no slower than a timed larger one
    assert timed_large.batch_cap() == 64
    timed_large.latency_target = 0.2
    assert timed_large.batch_cap() == 1
    no_target = Batcher(lambda: None, max_batch_size=64, max_delay_ms=0.0, max_queue=100, metrics=ServerMetrics())
    assert no_target.batch_cap() == 64


def test_under_a_burst_batches_stay_within_the_latency_target():
    """SlowEngine: 20 ms + 5 ms a request, so a 70 ms target allows batches of 2 (30 ms); one of
    4 (40 ms) may be tried, never more, however many requests wait."""
    engine, metrics = SlowEngine(), ServerMetrics()
    out = _serve(engine, metrics, [(200, 5.0, 0.001)], latency_target_ms=70.0)
    assert {o for o, _ in out} <= {"ok", "refused", "deadline"}
    assert any(o == "ok" for o, _ in out) and any(o == "refused" for o, _ in out)
    sizes = metrics.registry
    assert sizes.get_sample_value("jaxrec_batch_size_bucket", {"le": "4.0"}) == \
        sizes.get_sample_value("jaxrec_batch_size_count")
    # every batch timed, as admission control times it
    assert sizes.get_sample_value("jaxrec_batch_seconds_count") == sizes.get_sample_value("jaxrec_batch_size_count")


def test_the_pending_calls_a_latency_target_allows_follow_the_measured_call_costs():
    """With a latency target the server's C core holds one capped batch of calls: the largest
    batch bucket whose call at the longest history bucket fits in half the target."""
    from types import SimpleNamespace
    from jaxrec_server.engine import Engine
    e = SimpleNamespace(batch_buckets=[1, 2, 4, 8, 16], length_buckets=[16, 64],
                        call_costs={16: (0.004, 0.0003), 64: (0.005, 0.004)})
    assert Engine.batch_within(e, 0.030) == 4  # 5 + 4 x 4 = 21 ms; 8 rows: 37 ms
    assert Engine.batch_within(e, 0.001) == 1  # never below the smallest bucket
    assert Engine.batch_within(e, 1.0) == 16


def test_a_latency_target_that_is_not_positive_is_a_clear_error(capsys):
    from jaxrec.cli import main
    assert main(["serve", "--checkpoint", "nowhere", "--latency-target-ms", "0"]) != 0
    assert "--latency-target-ms 0.0: must be more than 0 ms" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "nowhere", "--latency-target-ms", "fast"]) != 0
    assert "--latency-target-ms 'fast': a number of ms or 'auto'" in capsys.readouterr().err


def test_thread_priorities_out_of_order_are_a_clear_error(capsys):
    """--compute-nice at or above --loop-nice would put the event loop ahead of the device."""
    from jaxrec.cli import main
    assert main(["serve", "--checkpoint", "nowhere", "--compute-nice", "19"]) != 0
    assert "--compute-nice 19 must be under --loop-nice 19" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "nowhere", "--loop-nice", "25"]) != 0
    assert "--loop-nice 25: a nice increment from 0 (off) to 19" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "nowhere", "--grpc-rt-priority", "100"]) != 0
    assert "--grpc-rt-priority 100: a SCHED_FIFO priority from 1 to 99 (0: off)" in capsys.readouterr().err
