"""The user-event store (Observe, ForgetUser, Recommend by user_id) against the live server, on
both backends: SQLite (a file in a temp dir) and a real ``redis-server`` on a loopback port."""

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import grpc
import pytest

from jaxrec.train import Config, train
from jaxrec_server.client import Client
from jaxrec_server.main import ServeConfig, ThreadedServer
from jaxrec_server.store import EMPTY, RedisStore, SQLiteStore, StoreUnavailable, open_store
from ports import free_port

SERVE = dict(max_batch_size=8, length_buckets=[16, 50], k_buckets=[10], max_delay_ms=1.0, diversity_pool=0)
REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server not installed (.ci/run installs it)")


class RedisServer:
    """A real redis-server on 127.0.0.1, no persistence; stop() and start() again on the same port."""

    def __init__(self):
        self.port = free_port()
        self.proc = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def redis_server():
    if REDIS is None:
        pytest.skip("redis-server not installed (.ci/run installs it)")
    r = RedisServer()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("store") / "run"
    train(Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=2, seed=3), d,
          progress=False)
    return d


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=needs_redis)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'events.sqlite'}"
    return request.getfixturevalue("redis_server").url


def _serve(run_dir, store, **kw):
    return ThreadedServer(ServeConfig(str(run_dir), port=0, store=store, **(SERVE | kw)))


def _items(r):
    return [it.item_id for it in r.items]


def test_observe_then_recommend_reflects_the_events_and_excludes_them(run_dir, store_url):
    srv = _serve(run_dir, store_url)
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=20) as c:
            user = f"u-{os.getpid()}-observe"
            c.forget_user(user)
            assert c.observe(user, ["5", "9"]).history_length == 2
            r = c.observe(user, ["12", "nope-42"])  # an id the catalog lacks is kept and counted
            assert (r.history_length, r.unknown_items) == (4, 1)
            by_user = c.recommend(user_id=user, k=10)
            by_history = c.recommend(["5", "9", "12", "nope-42"], k=10)
            assert _items(by_user) == _items(by_history) and by_user.unknown_history_items == 1
            assert [it.score for it in by_user.items] == pytest.approx([it.score for it in by_history.items])
            assert not {"5", "9", "12"} & set(_items(by_user))  # exclude_seen covers stored events
            # the next event changes the next answer; request history is appended, not stored
            c.observe(user, [_items(by_user)[0]])
            after = c.recommend(user_id=user, k=10)
            assert after.items and _items(by_user)[0] not in _items(after)
            plus = c.recommend(["30"], user_id=user, k=10)
            assert _items(plus) == _items(c.recommend(["5", "9", "12", "nope-42", _items(by_user)[0], "30"], k=10))
            assert c.observe(user, ["31"]).history_length == 6  # "30" was not stored
            # Score by user_id reads the same history
            s = c.score([], ["1", "2"], user_id=user)
            assert [it.item_id for it in s.items] == ["1", "2"]
            # batch entries read the store in one call, each its own user
            other = f"u-{os.getpid()}-other"
            c.forget_user(other)
            c.observe(other, ["7"])
            res = c.recommend_batch([dict(user_id=user, k=5), dict(user_id=other, k=5), dict(history=["7"], k=5)])
            assert [x.code for x in res] == [0, 0, 0]
            assert _items(res[1].response) == _items(res[2].response)
            info = c.model_info()
            assert info.store == store_url
            assert info.store_max_events == 50 + 200 and info.store_ttl_s > 0
    finally:
        srv.stop()


def test_forget_user_bounded_history_and_bad_user_ids(run_dir, store_url):
    srv = _serve(run_dir, store_url, exclude_window=3)
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=20, retries=0) as c:
            user = f"u-{os.getpid()}-forget"
            c.forget_user(user)
            n = c.observe(user, [str(i) for i in range(1, 60)]).history_length
            assert n == 50 + 3  # bounded: the model's history plus the exclude window
            assert c.recommend(user_id=user, k=10).cold_start is False
            assert c.forget_user(user).found is True
            gone = c.recommend(user_id=user, k=10)
            assert gone.cold_start and gone.unknown_history_items == 0  # nothing left: popular items
            assert c.forget_user(user).found is False
            assert c.observe(user, ["3"]).history_length == 1
            for bad in (" padded", "x" * 300, "tab\there"):
                with pytest.raises(grpc.RpcError) as e:
                    c.recommend(user_id=bad, k=5)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in e.value.details()
            with pytest.raises(grpc.RpcError) as e:
                c.observe(user, [])
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "items" in e.value.details()
            with pytest.raises(grpc.RpcError) as e:
                c.observe(user, ["1", "2"], times=[5])
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "times" in e.value.details()
            res = c.recommend_batch([dict(user_id=" bad", k=5), dict(user_id=user, k=5)])
            assert [x.code for x in res] == [grpc.StatusCode.INVALID_ARGUMENT.value[0], 0]
    finally:
        srv.stop()


def test_ttl_expires_a_users_events(run_dir, store_url):
    srv = _serve(run_dir, store_url, store_ttl_s=1.0)
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=20) as c:
            user = f"u-{os.getpid()}-ttl"
            c.observe(user, ["4", "8"])
            assert not c.recommend(user_id=user, k=5).cold_start
            time.sleep(1.3)
            assert c.recommend(user_id=user, k=5).cold_start  # expired: as if never seen
            assert c.observe(user, ["4"]).history_length == 1  # a new history, not the old one extended
    finally:
        srv.stop()


def test_query_cli_observes_recommends_and_forgets(run_dir, tmp_path, capsys):
    from jaxrec.cli import main

    srv = _serve(run_dir, f"sqlite:{tmp_path / 'e.sqlite'}", diversity_pool=100)
    target = ["--target", f"127.0.0.1:{srv.port}"]
    try:
        assert main(["query", *target, "--user", "carol", "--observe", "3,9,nope"]) == 0
        assert "carol: 3 events stored (1 id(s) not in the served catalog)" in capsys.readouterr().out
        assert main(["query", *target, "--user", "carol", "-k", "5", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        with Client(f"127.0.0.1:{srv.port}", timeout=20) as c:
            want = [it.item_id for it in c.recommend(["3", "9", "nope"], k=5).items]
        assert [it["itemId"] for it in got["items"]] == want
        assert main(["query", *target, "--user", "carol", "-k", "5", "--diversity", "0.5",
                     "--diversity-by", "topic"]) == 0
        assert capsys.readouterr().out.count("\n") >= 6
        assert main(["query", *target, "--user", "carol", "--forget"]) == 0
        assert "events deleted" in capsys.readouterr().out
        assert main(["query", *target, "--observe", "1"]) == 2  # --observe needs --user
        assert "--observe and --forget go with --user" in capsys.readouterr().err
        assert main(["recommend", "--checkpoint", str(run_dir), "--history", "3,9", "-k", "5",
                     "--diversity", "0.4", "--diversity-by", "topic"]) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == 5
    finally:
        srv.stop()


def test_a_server_without_a_store_refuses_user_requests(run_dir):
    srv = _serve(run_dir, "none")
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=20, retries=0) as c:
            for call in (lambda: c.recommend(user_id="u", k=5), lambda: c.observe("u", ["1"]),
                         lambda: c.forget_user("u")):
                with pytest.raises(grpc.RpcError) as e:
                    call()
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--store" in e.value.details()
            assert len(c.recommend(["1"], k=5).items) == 5 and c.model_info().store == ""
    finally:
        srv.stop()


def test_two_server_processes_share_one_store(run_dir, store_url):
    """An event observed through one server process is read by another on the same store (the
    way --workers, or replicas behind a balancer, share it)."""
    srv = _serve(run_dir, store_url)
    proc = subprocess.Popen([sys.executable, "-m", "jaxrec.cli", "serve", "--checkpoint", str(run_dir), "--port", "0",
                             "--store", store_url, "--max-batch-size", "8", "--length-buckets", "16,50",
                             "--k-buckets", "10", "--diversity-pool", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
        log = []
        while not (m := re.search(r"^serving .* on 127\.0\.0\.1:(\d+)", log[-1] if log else "")):
            line = proc.stdout.readline()
            assert line, "server exited:\n" + "".join(log)
            log.append(line)
        with Client(f"127.0.0.1:{srv.port}", timeout=20) as a, Client(f"127.0.0.1:{m.group(1)}", timeout=20) as b:
            user = f"u-{os.getpid()}-shared"
            a.forget_user(user)
            a.observe(user, ["11", "13"])
            b.observe(user, ["17"])  # appended by the other process to the same history
            assert a.observe(user, ["19"]).history_length == 4
            assert _items(b.recommend(user_id=user, k=10)) == _items(a.recommend(["11", "13", "17", "19"], k=10))
            assert b.forget_user(user).found and a.recommend(user_id=user, k=10).cold_start
    finally:
        proc.terminate()
        proc.wait(30)
        srv.stop()


@needs_redis
def test_a_redis_outage_answers_unavailable_and_recovers(run_dir, redis_server):
    srv = _serve(run_dir, redis_server.url)
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=10, retries=0) as c:
            user = f"u-{os.getpid()}-outage"
            c.observe(user, ["2", "6"])
            redis_server.stop()
            try:
                for call in (lambda: c.recommend(user_id=user, k=5), lambda: c.observe(user, ["1"]),
                             lambda: c.forget_user(user)):
                    t = time.monotonic()
                    with pytest.raises(grpc.RpcError) as e:
                        call()
                    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
                    assert "redis" in e.value.details() and time.monotonic() - t < 5
                res = c.recommend_batch([dict(user_id=user, k=5), dict(history=["2"], k=5)])
                assert [x.code for x in res] == [grpc.StatusCode.UNAVAILABLE.value[0], 0]
                assert len(c.recommend(["2", "6"], k=5).items) == 5  # history requests still served
            finally:
                redis_server.start()  # same port, empty (no persistence)
            assert c.recommend(user_id=user, k=5).cold_start  # reconnected; the data did not survive
            assert c.observe(user, ["2"]).history_length == 1
    finally:
        srv.stop()


# ---------------------------------------------------------------- the backends alone

def _backend(kind, tmp_path, redis_server=None, **kw):
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "e.sqlite", **kw)
    return RedisStore(redis_server.url, **kw)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=needs_redis)])
def test_backends_keep_order_times_and_odd_ids(kind, tmp_path, request):
    r = request.getfixturevalue("redis_server") if kind == "redis" else None

    async def go():
        s = _backend(kind, tmp_path, r, max_events=4, ttl_s=60)
        try:
            await s.forget("a")
            await s.forget("b")
            assert await s.append("a", ["x y", "7"], [10, 20]) == 2  # an id with a space survives
            assert await s.append("a", ["8", "9", "10"], [30, 40, 50]) == 4  # the oldest dropped
            a, b = await s.histories(["a", "b"])
            assert (a.items, a.times) == (["7", "8", "9", "10"], [20, 30, 40, 50])
            assert b == EMPTY
            # concurrent reads are coalesced into a few store calls, each request gets its own users
            calls, real = [], s.histories

            async def counted(users):
                calls.append(len(users))
                return await real(users)
            s.histories = counted
            from jaxrec_server.store import EventStore
            coalesced = EventStore.read  # the base class's (SQLite overrides it: its reads do not suspend)
            out = await asyncio.gather(*(coalesced(s, ["a", "b"] if i % 2 else ["b"]) for i in range(40)))
            assert [len(o) for o in out] == [1, 2] * 20 and out[1][0].items == ["7", "8", "9", "10"]
            assert len(calls) <= 3 and max(calls) == 2  # users deduplicated within a call
            assert await s.forget("a") and not await s.forget("a")
        finally:
            await s.close()

    asyncio.run(go())


def test_open_store_specs(tmp_path):
    from jaxrec.errors import UserError

    assert open_store("none", max_events=5) is None and open_store("", max_events=5) is None
    with pytest.raises(UserError, match="sqlite:PATH"):
        open_store("mysql://x", max_events=5)
    with pytest.raises(UserError, match="does not exist"):
        open_store(f"sqlite:{tmp_path}/missing/e.sqlite", max_events=5)
    with pytest.raises(UserError, match="TTL"):
        open_store(f"sqlite:{tmp_path}/e.sqlite", max_events=5, ttl_s=0)

    async def go():
        s = open_store(f"sqlite://{tmp_path}/e.sqlite", max_events=5)
        assert isinstance(s, SQLiteStore) and s.path == tmp_path / "e.sqlite"
        await s.close()
        s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", max_events=5)  # nothing listens there
        t = time.monotonic()
        with pytest.raises(StoreUnavailable, match="redis"):
            await s.histories(["u"])
        assert time.monotonic() - t < 5
        await s.close()

    asyncio.run(go())
