"""The user-event store behind ``Observe``, ``ForgetUser`` and ``Recommend`` by ``user_id``.

A client that sends each click with ``Observe`` gets recommendations that follow it, with no
state of its own: the next ``Recommend`` with that ``user_id`` reads the stored history. Per
user the store keeps the latest ``max_events`` events (the model's history plus the exclude-seen
window: older events change neither the model's input nor what is excluded) and deletes them
``ttl_s`` seconds after the user's last event. Items are kept as external ids, not catalog
indices, so a hot reload to a model with another catalog reads the same histories.

Two backends behind one interface (``EventStore``):

* ``SQLiteStore`` (``--store sqlite:PATH``, the default): embedded, no setup, standard library.
  WAL mode, so the processes of ``--workers`` share one file: readers never wait for the
  writer, and appends are serialised by SQLite's write lock (``BEGIN IMMEDIATE``). Writes (which
  may wait for another process's lock) run on one thread per process, off the event loop;
  reads, one indexed SELECT that WAL never makes wait for a writer, run on the event loop
  itself: tens of microseconds, less than a hand-off to a thread that must win the GIL back.
* ``RedisStore`` (``--store redis://HOST:PORT/DB``): for many replicas on many machines. One list
  per user (``RPUSH`` + ``LTRIM`` + ``PEXPIRE`` in one transaction), read with one pipelined
  ``LRANGE`` per batch. Short socket timeouts: when Redis is down a call fails in about a second
  with ``StoreUnavailable`` (the servicer answers UNAVAILABLE) instead of hanging, and the next
  call after Redis is back reconnects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import sqlite3
import time
from pathlib import Path

from jaxrec.errors import UserError

DEFAULT_TTL_S = 30 * 24 * 3600  # a month
EXCLUDE_WINDOW = 200  # events kept beyond the model's history, for exclude_seen


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time (the servicer: UNAVAILABLE)."""


@dataclasses.dataclass
class Events:
    """One user's stored history, oldest first: external item ids and their event times."""

    items: list
    times: list

    def __len__(self) -> int:
        return len(self.items)


EMPTY = Events([], [])


class EventStore:
    """The interface both backends keep; every method is a coroutine and raises
    ``StoreUnavailable`` when the backend fails."""

    url: str

    def __init__(self, max_events: int, ttl_s: float):
        if max_events < 1:
            raise UserError(f"store max events must be at least 1, got {max_events}")
        if ttl_s <= 0:
            raise UserError(f"store TTL must be positive seconds, got {ttl_s}")
        self.max_events, self.ttl_s = int(max_events), float(ttl_s)
        self._waiting: list = []  # (users, future) reads not yet sent
        self._reading, self._drainer = False, None

    async def read(self, users: list) -> list:
        """``histories``, with the reads of concurrent requests coalesced: while one store call is
        in flight, the reads that arrive wait and then go together in the next one (one SELECT,
        one Redis pipeline), as the batcher does for the model. Under load this turns N store
        round trips (each a thread hop or a network round trip) into a few."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append((list(users), fut))
        if not self._reading:
            self._reading = True
            self._drainer = asyncio.ensure_future(self._drain())  # held: the loop keeps tasks only weakly
        return await fut

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # the requests that arrived in this loop iteration join
                batch, self._waiting = self._waiting, []
                try:
                    found = await self.histories(list(dict.fromkeys(u for us, _ in batch for u in us)))
                except Exception as e:  # noqa: BLE001 - each waiting request gets the store's error
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                by_user = dict(zip(dict.fromkeys(u for us, _ in batch for u in us), found))
                for us, f in batch:
                    if not f.done():
                        f.set_result([by_user[u] for u in us])
        finally:
            self._reading = False

    async def append(self, user: str, items: list, times: list) -> int:
        """Append events (oldest first); returns how many the user has now (at most max_events)."""
        raise NotImplementedError

    async def histories(self, users: list) -> list:
        """``Events`` per user, in order (``EMPTY`` for an unknown or expired user)."""
        raise NotImplementedError

    async def forget(self, user: str) -> bool:
        """Delete the user's events; True if there were any."""
        raise NotImplementedError

    async def close(self) -> None:
        pass


class SQLiteStore(EventStore):
    """One row per user: items and times as JSON arrays, and the time of the last event (the
    TTL's clock: wall time, shared by the processes on the file). Expired rows are invisible at
    once and deleted by a sweep at most once per ``min(ttl, 60 s)``."""

    BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another process's write lock
    MAX_VARS = 500  # ids per SELECT ... IN (...)

    def __init__(self, path: str | Path, max_events: int, ttl_s: float = DEFAULT_TTL_S):
        super().__init__(max_events, ttl_s)
        self.path = Path(path)
        self.url = f"sqlite:{self.path}"
        if not self.path.parent.exists():
            raise UserError(f"--store {self.url}: directory {self.path.parent} does not exist")
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxrec-store")
        self._swept = 0.0  # when expired rows were last deleted
        self._db = self._connect()  # the writer's (used only on the pool's thread)
        self._reader = self._connect(self.READ_TIMEOUT_MS)  # the event loop's

    READ_TIMEOUT_MS = 100  # a read waits at most this long (WAL: only while a checkpoint resets the log)

    def _connect(self, timeout_ms: int | None = None) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=(timeout_ms or self.BUSY_TIMEOUT_MS) / 1000,
                                 isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a process crash, not a power loss
            db.execute("CREATE TABLE IF NOT EXISTS events (user TEXT PRIMARY KEY, items TEXT NOT NULL, "
                       "times TEXT NOT NULL, updated REAL NOT NULL) WITHOUT ROWID")
            db.execute("CREATE INDEX IF NOT EXISTS events_updated ON events (updated)")
        except sqlite3.Error as e:  # a bad path fails at start-up, not at the first call
            raise UserError(f"--store {self.url}: {e}") from None
        return db

    async def _run(self, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"event store {self.url}: {e}") from None

    def _sweep(self, now: float) -> None:
        if now - self._swept >= min(self.ttl_s, 60.0):
            self._swept = now
            self._db.execute("DELETE FROM events WHERE updated < ?", (now - self.ttl_s,))

    def _append(self, user, items, times) -> int:
        db, now = self._db, time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT items, times, updated FROM events WHERE user = ?", (user,)).fetchone()
            old_i, old_t = ([], []) if row is None or row[2] < now - self.ttl_s else (json.loads(row[0]),
                                                                                       json.loads(row[1]))
            new_i, new_t = (old_i + list(items))[-self.max_events:], (old_t + list(times))[-self.max_events:]
            db.execute("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)",
                       (user, json.dumps(new_i), json.dumps(new_t), now))
            self._sweep(now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(new_i)

    def _histories(self, users) -> list:
        now = time.time()
        found = {}
        for lo in range(0, len(users), self.MAX_VARS):
            part = users[lo: lo + self.MAX_VARS]
            q = f"SELECT user, items, times FROM events WHERE updated >= ? AND user IN ({','.join('?' * len(part))})"
            for u, i, t in self._reader.execute(q, (now - self.ttl_s, *part)):
                found[u] = Events(json.loads(i), json.loads(t))
        return [found.get(u, EMPTY) for u in users]

    def _forget(self, user) -> bool:
        return self._db.execute("DELETE FROM events WHERE user = ?", (user,)).rowcount > 0

    async def append(self, user, items, times) -> int:
        return await self._run(self._append, user, items, times)

    async def histories(self, users) -> list:
        try:  # on the event loop (see the module docstring)
            return self._histories(list(users))
        except sqlite3.Error as e:
            raise StoreUnavailable(f"event store {self.url}: {e}") from None

    async def read(self, users: list) -> list:
        """A read answers in microseconds without suspending the request (no coalescing: there is
        no round trip to save, and each suspension costs the event loop more than the read)."""
        return await self.histories(users)

    async def forget(self, user) -> bool:
        return await self._run(self._forget, user)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._db.close)
        self._reader.close()
        self._pool.shutdown(wait=False)


class RedisStore(EventStore):
    """One Redis list per user (``PREFIX + user``), each entry ``"<time> <item id>"`` (a time has
    no space; an item id may, and is everything after the first one)."""

    PREFIX = "jaxrec:events:"
    TIMEOUT_S = 1.0  # connect and socket timeout: an outage answers in about this long

    def __init__(self, url: str, max_events: int, ttl_s: float = DEFAULT_TTL_S):
        super().__init__(max_events, ttl_s)
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.asyncio.retry import Retry  # the asyncio client's own (a sync Retry is converted, with a warning)

        self.url = url
        # no retries inside the client: the caller's deadline is short, and gRPC clients retry
        # UNAVAILABLE themselves (client.py's policy)
        self._r = aioredis.Redis.from_url(url, socket_timeout=self.TIMEOUT_S, socket_connect_timeout=self.TIMEOUT_S,
                                          retry=Retry(NoBackoff(), 0), decode_responses=True)

    async def _do(self, coro):
        import redis
        try:
            return await coro
        except (redis.RedisError, OSError) as e:
            raise StoreUnavailable(f"event store {self.url}: {type(e).__name__}: {e}") from None

    async def append(self, user, items, times) -> int:
        key = self.PREFIX + user
        entries = [f"{int(t)} {i}" for i, t in zip(items, times)]

        async def txn():
            async with self._r.pipeline(transaction=True) as p:
                p.rpush(key, *entries).ltrim(key, -self.max_events, -1).pexpire(key, int(self.ttl_s * 1000))
                n, *_ = await p.execute()
            return min(int(n), self.max_events)
        return await self._do(txn())

    async def histories(self, users) -> list:
        async def read():
            async with self._r.pipeline(transaction=False) as p:
                for u in users:
                    p.lrange(self.PREFIX + u, 0, -1)
                return await p.execute()
        out = []
        for entries in await self._do(read()):
            if not entries:
                out.append(EMPTY)
                continue
            t, i = zip(*(e.split(" ", 1) for e in entries))
            out.append(Events(list(i), [int(x) for x in t]))
        return out

    async def forget(self, user) -> bool:
        return bool(await self._do(self._r.delete(self.PREFIX + user)))

    async def ping(self) -> None:
        await self._do(self._r.ping())

    async def close(self) -> None:
        await self._r.aclose()


def open_store(spec: str | None, *, max_events: int, ttl_s: float = DEFAULT_TTL_S) -> EventStore | None:
    """``--store``: "sqlite:PATH" (or a path ending .sqlite / .db), "redis://HOST:PORT/DB"
    (``rediss://`` for TLS), or "none" / "" for no store (user_id requests are then refused)."""
    if not spec or spec == "none":
        return None
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(spec, max_events, ttl_s)
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        path = path[2:] if path.startswith("//") else path  # sqlite:///abs/path as in SQLAlchemy
        return SQLiteStore(path, max_events, ttl_s)
    if spec.endswith((".sqlite", ".db")):
        return SQLiteStore(spec, max_events, ttl_s)
    raise UserError(f"--store {spec!r}: use sqlite:PATH, redis://HOST:PORT/DB or none")
