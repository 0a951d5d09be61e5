"""Faults: a training process killed at any point resumes to the same result; a save that
fails stops training with a clear error and keeps the last good checkpoint; a bad checkpoint
in a watched run directory is refused while the old model keeps serving."""

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from jaxrec.train import Config, RunDir, train
from jaxrec.train.rundir import CheckpointError

TINY = ["--model", "sasrec/small", "--data", "synthetic:tiny", "--set", "loss=ce", "--set", "batch_size=32",
        "--set", "epochs=6", "--quiet"]
KILL_IN_SAVE = """
import os, signal, sys, threading
from jaxrec.train import rundir
orig, calls = rundir.Checkpoints.save, [0]
def save(self, which, state, meta):  # the 3rd save is killed while Orbax writes it
    calls[0] += 1
    if calls[0] == 3:
        threading.Timer(0.003, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    return orig(self, which, state, meta)
rundir.Checkpoints.save = save
from jaxrec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    cfg = Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=6)
    return train(cfg, out, progress=False)["metrics"], out


def _log(run_dir):
    """metrics.jsonl without its timings: (split or "train", epoch, step, loss or NDCG@10) per record."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r.get("split", "train"), r["epoch"], r.get("step"), round(r.get("loss", r.get("NDCG@10", 0.0)), 5))
            for r in recs]


def _run(args, kill_after=None, script=None):
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "jaxrec.cli", *args]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            p.wait(kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    return p.returncode, err


def test_sigkill_anywhere_then_resume_ends_with_the_same_metrics(tmp_path, tmp_path_factory):
    want, ref_dir = _reference(tmp_path_factory)
    out = tmp_path / "run"
    rc, err = _run(["train", *TINY, "--out", str(out)], script=KILL_IN_SAVE)
    assert rc == -signal.SIGKILL, err  # killed inside its third checkpoint save
    rng = np.random.default_rng(0)
    for attempt in range(7):  # kill at random moments, resume, until a run finishes by itself
        rc, err = _run(["train", *TINY, "--out", str(out), "--resume"],
                       kill_after=None if attempt == 6 else float(rng.uniform(2.0, 6.0)))
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, err
    assert rc == 0, err
    got = json.loads((out / "results.json").read_text())["metrics"]
    for k in ("HR@10", "NDCG@10", "MRR"):
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    leftovers = [p.name for p in (out / "checkpoints").rglob("*tmp*")]
    assert not leftovers, leftovers
    # the log reads as the uninterrupted run's: what each resume did again is set aside, not repeated
    assert _log(out) == _log(ref_dir)


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "disk"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_full_disk_stops_training_with_a_clear_error_and_keeps_the_last_good_checkpoint(small_disk):
    out = small_disk / "run"
    cfg = Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=50)
    with pytest.raises(CheckpointError) as e:
        train(cfg, out, progress=False)
    msg = str(e.value)
    assert "failed" in msg and "intact" in msg and str(out) in msg and "\n" not in msg
    rd = RunDir.open(out)
    good = rd.latest_step("best")
    assert good is not None  # the saves before the disk filled are whole and restore
    from jaxrec.inference import Recommender
    assert Recommender.from_checkpoint(out).step == good
    assert not [p.name for p in (out / "checkpoints").rglob("*tmp*")]


# ---------------------------------------------------------------- hot reload of bad checkpoints

def _scramble(d, rng):
    for f in d.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "METADATA" not in f.name and f.suffix != ".txt":
            f.write_bytes(rng.bytes(f.stat().st_size))


def test_watch_refuses_partial_corrupt_and_foreign_checkpoints_and_keeps_serving(tmp_path, monkeypatch):
    from jaxrec_server.client import Client
    from jaxrec_server.main import ServeConfig, ThreadedServer

    unraisable = []  # what Python would print as "Exception ignored in ...": one log line means none
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    run, other = tmp_path / "run", tmp_path / "other"
    base = dict(data="synthetic:tiny", loss="ce", batch_size=32, epochs=1)
    train(Config(model="sasrec/small", **base), run, progress=False)
    train(Config(model="sasrec/small", model_args={"dim": 16}, **base), other, progress=False)
    best = RunDir(run).checkpoints_dir("best")
    step = RunDir(run).latest_step("best")
    srv = ThreadedServer(ServeConfig(str(run), port=0, watch=True, watch_interval_s=0.1, max_batch_size=4,
                                     length_buckets=[50], k_buckets=[10], diversity_pool=0))
    errors, stop = [], threading.Event()

    def load():
        with Client(f"127.0.0.1:{srv.port}", timeout=20) as c:
            while not stop.is_set():
                try:
                    assert len(c.recommend(["1", "2", "3"], k=5).items) == 5
                except Exception as e:  # noqa: BLE001 - every failure is collected
                    errors.append(e)

    t = threading.Thread(target=load)
    t.start()
    rng = np.random.default_rng(0)
    failures = srv.srv.metrics.reload_failures
    try:
        staging = tmp_path / "staging"
        partial = staging / str(step + 1000)  # committed metadata, but the parameters are missing
        shutil.copytree(best / str(step), partial)
        shutil.rmtree(partial / "params")
        corrupt = staging / str(step + 2000)  # every parameter file overwritten with random bytes
        shutil.copytree(best / str(step), corrupt)
        _scramble(corrupt / "params", rng)
        foreign = staging / str(step + 3000)  # another model's checkpoint (dim 16, not 32)
        shutil.copytree(RunDir(other).checkpoints_dir("best") / str(RunDir(other).latest_step("best")), foreign)
        for i, d in enumerate((partial, corrupt, foreign)):  # one at a time, each the newest
            shutil.move(str(d), str(best / d.name))
            deadline = time.time() + 60
            while time.time() < deadline and sum(
                    failures.labels(r)._value.get() for r in ("unreadable", "mismatch")) < i + 1:
                time.sleep(0.1)
        counts = {r: failures.labels(r)._value.get() for r in ("unreadable", "mismatch")}
        assert counts == {"unreadable": 2, "mismatch": 1}, counts
        assert srv.srv.state.engine.step == step  # the old model still serves
    finally:
        stop.set()
        t.join(30)
        srv.stop()
    assert not errors, errors[:3]
    gc.collect()  # the failed reads report when their futures are collected
    assert not unraisable, [f"{u.exc_type.__name__}: {u.exc_value}" for u in unraisable[:3]]


def test_sigterm_saves_where_it_stands_and_resume_ends_with_the_same_metrics(tmp_path, tmp_path_factory):
    """SIGTERM (a preemption, a scheduler, Ctrl-C's SIGINT alike) stops training at the next step
    with checkpoints/last saved mid-epoch: exit 143 and a line naming --resume; resumed, the run
    ends with the uninterrupted run's metrics."""
    want, _ = _reference(tmp_path_factory)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jaxrec.cli", "train", *TINY, "--out", str(out)]
    p = subprocess.Popen(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    log = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:  # into the second epoch's steps
        if log.exists() and any(json.loads(line).get("epoch") == 2 and "loss" in line
                                for line in log.read_text().splitlines()):
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    line = stdout.strip().splitlines()[-1]
    assert line.startswith("stopped by SIGTERM at epoch") and "--resume" in line, stdout
    meta = RunDir.open(out).checkpoint_meta("last")
    assert meta is not None
    rc, err = _run(["train", *TINY, "--out", str(out), "--resume"])
    assert rc == 0, err
    got = json.loads((out / "results.json").read_text())["metrics"]
    for k in ("HR@10", "NDCG@10", "MRR"):
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
