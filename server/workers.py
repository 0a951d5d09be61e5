"""``jaxrec serve --workers N``: N server processes on one port.

One Python process serves at most what one event loop and gRPC's per-call work allow (about
2,000 requests/s on any machine measured), however many cores and accelerators the host has.
Workers are the way past it, as in gRPC Python's multiprocessing example: every worker binds
the same port with ``SO_REUSEPORT`` and the kernel spreads incoming connections over them.

* The parent reserves the port first (a socket bound with ``SO_REUSEPORT``, never listening),
  so ``--port 0`` works and no other program takes the port between workers.
* Each worker loads and compiles its own engine and binds only then: a connection the kernel
  hands to a worker always finds it SERVING, so health reads the same whichever answers.
  The parent prints ``serving ...`` when every worker is ready.
* One compilation for all: the workers share a JAX persistent compilation cache (a temporary
  directory removed at exit, or ``JAX_COMPILATION_CACHE_DIR`` when set) and worker 0 starts
  first; the others start once it serves and read its compiled buckets instead of all compiling
  them at once on the same cores (an 8-worker server on an H200 host, compiling so, had not
  started after 170 s); a restarted worker reads the cache too.
* CPU: worker i is pinned to its share of the cores this process may use (XLA's thread pool
  per worker would otherwise oversubscribe them). GPU: ``--worker-gpus 0,1,...`` gives worker i
  device ``ids[i % len(ids)]`` (``CUDA_VISIBLE_DEVICES``); workers sharing a device split its
  memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless set).
* Metrics: prometheus-client's multiprocess mode (a directory of memory-mapped files, one set
  per worker); the parent serves ``--metrics-port`` with the sum over workers (gauges: live
  workers' sum; the model step: the oldest step still served, so a rollout shows).
* SIGTERM or SIGINT to the parent: every worker drains (NOT_SERVING, in-flight calls finish
  within ``--grace-s``) and the parent exits when all have. A worker that dies otherwise is
  logged and started again. ``--watch``: each worker watches and reloads by itself.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time

log = logging.getLogger("jaxrec_server")


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and not listening: it holds the port for
    the workers (who bind it too) and receives no connection itself. Keep it open while serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        raise OSError("SO_REUSEPORT is not available on this system: --workers needs it")
    sock.bind((host, port))
    return sock


def cpu_shares(n: int, cpus=None) -> list[list[int] | None]:
    """Worker i's cores: the available cores dealt out in n contiguous shares (None for all
    workers when there are fewer cores than workers: then the OS schedules them)."""
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if n > len(cpus):
        return [None] * n
    per, extra = divmod(len(cpus), n)
    out, lo = [], 0
    for i in range(n):
        hi = lo + per + (i < extra)
        out.append(cpus[lo:hi])
        lo = hi
    return out


def worker_env(i: int, n: int, gpus: list[str] | None, environ=None) -> dict:
    """Environment changes for worker i of n: its GPU and its share of that GPU's memory."""
    environ = os.environ if environ is None else environ
    if not gpus:
        return {}
    env = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}
    sharing = sum(1 for j in range(n) if gpus[j % len(gpus)] == env["CUDA_VISIBLE_DEVICES"])
    if sharing > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in environ:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.75 / sharing:.3f}"  # JAX preallocates 75% by default
    return env


def use_compile_cache(cache_dir: str) -> None:
    """Make this process's JAX read and write ``cache_dir`` (unless JAX_COMPILATION_CACHE_DIR
    chose another), caching every compilation: a serving bucket compiles in well under JAX's
    default 1 s threshold on a CPU, and 49 of them are what a worker's start-up waits for. Set
    through ``jax.config``, not the environment: JAX reads its environment once, on import,
    and a spawned worker has imported it before its own code runs."""
    import jax
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _worker_main(cfg, index: int, cpus, env: dict, ready, event_loop: str, cache_dir: str) -> None:
    """A worker process (spawned: a fresh interpreter, so JAX's backend starts with this env and cores)."""
    os.environ.update(env)
    if cpus:
        os.sched_setaffinity(0, cpus)
    use_compile_cache(cache_dir)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{index} %(name)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.ERROR)
    from jaxrec_server.main import run_on_loop, serve_forever

    def report(srv):
        ready.put(("ready", index, os.getpid(), srv.state.engine.name, srv.state.engine.step))

    try:
        run_on_loop(serve_forever(cfg, worker=report), event_loop)
    except BaseException as e:  # noqa: BLE001 - the parent says why the worker could not start
        ready.put(("failed", index, os.getpid(), f"{type(e).__name__}: {e}", None))
        raise


class WorkerPool:
    """The parent of ``--workers``: ``start()`` returns the port once every worker serves;
    ``run()`` supervises until SIGTERM/SIGINT; ``stop()`` drains them all."""

    RESTART_BACKOFF_S = 1.0

    def __init__(self, cfg, workers: int, *, event_loop: str = "asyncio", gpus: list[str] | None = None):
        if workers < 1:
            raise ValueError(f"workers={workers}: need at least 1")
        self.cfg, self.n, self.event_loop, self.gpus = cfg, workers, event_loop, gpus
        self.ctx = mp.get_context("spawn")  # never fork a process that may hold JAX or gRPC threads
        self.ready = self.ctx.Queue()
        self.procs: list = [None] * workers
        self.cpus = cpu_shares(workers)
        self.stopping = False
        self._sock = None
        self.metrics_dir = None
        self.cache_dir = None

    def _spawn(self, i: int, worker_cfg) -> None:
        p = self.ctx.Process(target=_worker_main, name=f"jaxrec-worker{i}", daemon=False,
                             args=(worker_cfg, i, self.cpus[i], worker_env(i, self.n, self.gpus), self.ready,
                                   self.event_loop, self.cache_dir))
        p.start()
        self.procs[i] = p

    def start(self) -> int:
        cfg = self.cfg
        self._sock = reserve_port(cfg.host, cfg.port)
        port = self._sock.getsockname()[1]
        self.metrics_dir = tempfile.mkdtemp(prefix="jaxrec-metrics-")
        # set before the workers start: prometheus-client picks its value store at import
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self.worker_cfg = dataclasses.replace(cfg, port=port, metrics_port=None)
        self.cache_dir = tempfile.mkdtemp(prefix="jaxrec-xla-cache-")  # unused if the user set one
        self._spawn(0, self.worker_cfg)  # compiles into the cache ...
        self.info = self._wait_ready({0})
        for i in range(1, self.n):  # ... that the others read
            self._spawn(i, self.worker_cfg)
        self.info = self._wait_ready(set(range(1, self.n))) or self.info
        if cfg.metrics_port is not None:
            from prometheus_client import CollectorRegistry, start_http_server
            from prometheus_client.multiprocess import MultiProcessCollector
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.metrics_dir)
            start_http_server(cfg.metrics_port, addr="127.0.0.1", registry=registry)
        self.port = port
        return port

    def _wait_ready(self, waiting: set[int]) -> tuple:
        info = None
        while waiting:
            if self.stopping:  # a signal while the workers compile
                self.stop()
                raise RuntimeError("stopped by a signal before every worker was serving")
            try:
                kind, i, pid, what, step = self.ready.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty: check the workers are still alive
                dead = [i for i in waiting if not self.procs[i].is_alive()]
                if dead:
                    self.stop(grace=0)
                    raise RuntimeError(f"worker {dead[0]} exited with status {self.procs[dead[0]].exitcode} "
                                       "before serving (its log is above)") from None
                continue
            if kind == "failed":
                self.stop(grace=0)
                raise RuntimeError(f"worker {i} could not start: {what}")
            waiting.discard(i)
            info = (what, step)
            log.info("worker %d (pid %d) serving %s step %s", i, pid, what, step)
        return info

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT set ``stopping`` (installed before the workers start: a signal during
        their warm-up must still stop them, not leave them running without a parent)."""
        def on_signal(signum, frame):
            self.stopping = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    def run(self) -> int:
        """Supervise until a signal: restart workers that die, then drain all. Returns the exit status."""
        while not self.stopping:
            mp.connection.wait([p.sentinel for p in self.procs], timeout=0.5)
            for i, p in enumerate(self.procs):
                if not self.stopping and not p.is_alive():
                    log.error("worker %d (pid %d) exited with status %s; starting it again", i, p.pid, p.exitcode)
                    self._mark_dead(p.pid)
                    time.sleep(self.RESTART_BACKOFF_S)
                    self._spawn(i, self.worker_cfg)
                    try:
                        self._wait_ready({i})
                    except RuntimeError as e:
                        if self.stopping:  # a signal during the restart: stop() has drained the rest
                            return 0
                        log.error("%s; stopping", e)
                        return 1
        return self.stop()

    def _mark_dead(self, pid: int) -> None:
        if self.metrics_dir:
            from prometheus_client import multiprocess
            multiprocess.mark_process_dead(pid, self.metrics_dir)

    def stop(self, grace: float | None = None) -> int:
        """SIGTERM every worker (each drains within ``--grace-s``), wait for all; 0 when all exited 0."""
        self.stopping = True
        live = [p for p in self.procs if p is not None and p.is_alive()]
        for p in live:
            try:
                os.kill(p.pid, signal.SIGTERM if grace != 0 else signal.SIGKILL)
            except ProcessLookupError:  # it has just exited by itself
                pass
        limit = time.monotonic() + (self.cfg.grace_s if grace is None else grace) + 30
        for p in live:
            p.join(max(0.1, limit - time.monotonic()))
            if p.is_alive():
                log.error("worker pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.join(5)
        status = max((abs(p.exitcode or 0) for p in self.procs if p is not None), default=0)
        if self._sock:
            self._sock.close()
            self._sock = None
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            self.metrics_dir = None
        if self.cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = None
        return 0 if status == 0 else 1


def serve_workers(cfg, workers: int, *, event_loop: str = "asyncio", gpus: list[str] | None = None) -> int:
    pool = WorkerPool(cfg, workers, event_loop=event_loop, gpus=gpus)
    pool.handle_signals()
    port = pool.start()
    name, step = pool.info
    print(f"serving {name} step {step} on {cfg.host}:{port}, {workers} workers"
          + (f", metrics on :{cfg.metrics_port}/metrics" if cfg.metrics_port is not None else ""), flush=True)
    status = pool.run()
    print("stopped", flush=True)
    return status
