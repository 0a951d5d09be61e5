"""Client-side adaptive throttling (SRE book, ch. 21) against its closed form, on a fake clock."""

import random

import grpc
import pytest

from jaxrec_server.client import Client
from jaxrec_server.throttle import AdaptiveThrottle, Throttled


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Refused(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


def _second(throttle, clock, asked, capacity):
    """One second of ``asked`` calls spread evenly; the server accepts the first ``capacity``
    sent and refuses the rest. Returns how many the client sent."""
    sent = 0
    for i in range(asked):
        clock.t = int(clock.t) + i / asked
        if throttle.allow():
            sent += 1
            throttle.record(sent <= capacity)
    clock.t = int(clock.t) + 1
    return sent


def test_under_overload_the_client_sends_about_k_times_what_is_accepted():
    """Steady state of p = (requests - K accepts) / (requests + 1): asked 1000/s, accepted 100/s,
    K = 2 -> p ~ 0.8, ~200 sent a second; K = 3 -> ~300."""
    for k in (2.0, 3.0):
        clock = Clock()
        t = AdaptiveThrottle(k, window_s=10, clock=clock, rng=random.Random(0))
        sent = [_second(t, clock, 1000, 100) for _ in range(30)]
        assert sent[0] > 1.5 * sent[-1]  # it learns within the first second, from the refusals
        steady = sent[12:]
        assert sum(steady) / len(steady) == pytest.approx(k * 100, rel=0.1), steady
        assert t.probability() == pytest.approx((10_000 - k * 1000) / 10_001, abs=0.02)


def test_normal_load_is_never_refused_and_the_window_forgets_an_overload():
    clock = Clock()
    t = AdaptiveThrottle(clock=clock, rng=random.Random(1))
    assert [_second(t, clock, 200, 200) for _ in range(15)] == [200] * 15  # all accepted: p = 0
    for _ in range(10):
        _second(t, clock, 1000, 50)  # an overload
    assert t.probability() > 0.8
    clock.t += 10  # a window without calls: the counts are gone
    assert t.probability() == 0.0 and _second(t, clock, 200, 200) == 200


def test_few_calls_are_never_refused_locally():
    """Below ``min_requests`` in the window every call is sent, so a client that calls now and then
    sees the server's own failures (the book's rule would refuse half of the second call)."""
    clock = Clock()
    t = AdaptiveThrottle(min_requests=20, clock=clock, rng=random.Random(2))
    for _ in range(20):
        assert t.allow()
        t.record(False)
    assert t.probability() == pytest.approx(20 / 21)


class NeverRefuse:
    """An rng whose draw never falls under p < 1: every call is sent, the counts stay exact."""

    def random(self):
        return 1.0


def test_which_answers_count_as_accepted():
    clock = Clock()
    t = AdaptiveThrottle(min_requests=1, clock=clock, rng=NeverRefuse())
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
        t.allow()
        t.ended(Refused(code))  # the server had capacity (or is restarting, not overloaded)
    t.allow()
    t.ended(None)
    assert t.probability() == 0.0
    for code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        t.allow()
        t.ended(Refused(code))
    assert t.probability() == 0.0  # 7 asked, 4 accepted: 7 - 2 * 4 < 0
    for _ in range(13):
        t.allow()
        t.ended(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED))
    assert t.probability() == pytest.approx((20 - 2 * 4) / 21)


@pytest.mark.parametrize("args, message", [((0.5,), "k must be >= 1"), ((2.0, 0), "window_s"),
                                           ((2.0, 1.5), "window_s")])
def test_bad_throttle_settings_are_a_clear_error(args, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveThrottle(*args)


def test_the_client_refuses_locally_once_the_server_refuses_most_calls():
    """``Client``'s unary calls go through its throttle: after a run of server refusals some calls
    fail with ``Throttled`` (RESOURCE_EXHAUSTED) without being sent; ``throttle_k=None`` sends all."""
    calls = []

    def refusing(req, timeout, metadata):
        calls.append(req)
        raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED)

    with Client("127.0.0.1:1") as c:  # never connects: the stub is replaced by ``refusing``
        c.throttle.rng = random.Random(4)
        codes = []
        for i in range(200):
            try:
                c._call(refusing, i)
            except Throttled as e:
                codes.append(("local", e.code()))
                assert "throttled by the client" in e.details()
            except grpc.RpcError as e:
                codes.append(("server", e.code()))
        local = sum(w == "local" for w, _ in codes)
        assert len(calls) + local == 200 and local > 100  # most of a sustained refusal stays local
        assert {code for _, code in codes} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    with Client("127.0.0.1:1", throttle_k=None) as c:
        calls.clear()
        for i in range(100):
            with pytest.raises(grpc.RpcError):
                c._call(refusing, i)
        assert len(calls) == 100


def test_a_burst_in_flight_is_not_refused():
    """Calls count when they end: 200 calls started together, before any answer, are all sent."""
    t = AdaptiveThrottle(clock=Clock(), rng=random.Random(5))
    assert all(t.allow() for _ in range(200))
    for _ in range(200):
        t.record(True)
    assert t.probability() == 0.0


# ------------------------------------------------- the overload benchmark's throttled load generators

@pytest.fixture()
def refusing_server():
    """A gRPC server whose Recommend refuses every call (RESOURCE_EXHAUSTED) and counts them."""
    from concurrent import futures

    got = []

    def refuse(request, context):
        got.append(1)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "server overloaded: expected wait (a test)")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "jaxrec.v1.Recommender", {"Recommend": grpc.unary_unary_rpc_method_handler(refuse)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", got
    server.stop(None)


def _bench():
    import runpy
    from pathlib import Path
    return runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "overload.py"))


def test_overload_client_throttle_keeps_a_refusing_servers_calls_down(refusing_server):
    """overload.py --client-throttle: against a server that refuses everything, the open loop's
    throttle refuses most calls itself (counted apart); without it every call reaches the server."""
    target, got = refusing_server
    bench = _bench()

    async def level(throttle):
        async with grpc.aio.insecure_channel(target) as ch:
            call = ch.unary_unary(bench["METHOD"])
            return await bench["open_level"](call, [b""], 300.0, 1.0, 2.0, 0, throttle)

    import asyncio
    plain = asyncio.run(level(None))
    assert plain["codes"] == {"RESOURCE_EXHAUSTED": plain["sent"]} and len(got) == plain["sent"]
    got.clear()
    throttled = asyncio.run(level(AdaptiveThrottle(2.0, rng=random.Random(6))))
    local = throttled["codes"][bench["LOCAL"]]
    assert local + len(got) == throttled["sent"] and len(got) < 0.3 * throttled["sent"], (local, len(got))
    assert set(throttled["codes"]) <= bench["REFUSAL_CODES"]


@pytest.mark.skipif(__import__("shutil").which("g++") is None
                    or __import__("subprocess").run(["pkg-config", "--exists", "grpc++"]).returncode != 0,
                    reason="the C++ load generator needs g++ and libgrpc++-dev")
def test_cpp_load_generator_throttles_as_the_python_client(refusing_server, tmp_path):
    """openloop.cc with THROTTLE_K: the same rule as ``AdaptiveThrottle``; its local refusals are
    lines of their own, counted as "RESOURCE_EXHAUSTED (client)"."""
    import os

    target, got = refusing_server
    bench = _bench()
    exe = bench["build_openloop"]()
    reqfile = tmp_path / "requests.bin"
    reqfile.write_bytes(b"\0\0\0\0")  # one empty request message
    cpus = f"0-{os.cpu_count() - 1}"
    plain = bench["open_level_cpp"](exe, target, reqfile, 300.0, 1.0, 2.0, 0, cpus)
    assert plain["codes"] == {"RESOURCE_EXHAUSTED": plain["sent"]} and len(got) == plain["sent"]
    # who refused, from the message: jaxrec's admission control's words
    (by, (n, slowest_ms)), = plain["details"].items()
    assert by.startswith("admission") and n == plain["sent"]
    assert slowest_ms == pytest.approx(plain["refusal_max_ms"], abs=0.05)
    got.clear()
    throttled = bench["open_level_cpp"](exe, target, reqfile, 300.0, 1.0, 2.0, 0, cpus, throttle_k=2.0)
    local = throttled["codes"][bench["LOCAL"]]
    assert local + len(got) == throttled["sent"] and len(got) < 0.3 * throttled["sent"], (local, len(got))
