"""Multi-host training on JAX's own runtime: 2 processes x 4 CPU devices (jax.distributed on
localhost, gloo collectives) train to exactly the metrics of 1 process x 8 devices, and only
process 0 writes the run directory's files; both processes killed after a checkpoint and
started again with --resume end the same."""

import json
import os
import signal
import subprocess
import sys
import time

from jaxrec.train import RunDir
from ports import free_port

ARGS = ["--model", "sasrec/small", "--data", "synthetic:tiny", "--set", "loss=bce", "--set", "epochs=3",
        "--set", "batch_size=32", "--quiet"]


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")


def _multi(out, extra=()) -> list:
    port = free_port()  # a fresh coordinator port for every start
    train = [sys.executable, "-m", "jaxrec.cli", "train"]
    return [subprocess.Popen(train + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                      "--process-id", str(i), "--out", str(out), *extra] + ARGS,
                             env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]


def test_two_processes_train_like_one_process_with_as_many_devices_and_resume(tmp_path):
    multi = tmp_path / "multi"
    procs = _multi(multi)
    one = subprocess.Popen([sys.executable, "-m", "jaxrec.cli", "train", "--out", str(tmp_path / "one")] + ARGS,
                           env=_env(8), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while RunDir(multi).latest_step("last") is None and all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "no checkpoint from the 2-process run"
        time.sleep(0.2)
    killed = all(p.poll() is None for p in procs)  # both still training after the first checkpoint
    for p in procs:
        p.send_signal(signal.SIGKILL)
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert killed, outs[0][-2000:] + outs[1][-2000:]
    assert all("8 cpu device(s)" in o for o in outs)
    procs = _multi(multi, ["--resume"])  # both processes again, from the last checkpoint
    outs = [p.communicate(timeout=600)[0] for p in procs]
    single_out = one.communicate(timeout=600)[0]
    assert one.returncode == 0, single_out[-2000:]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    multi_res = json.loads((multi / "results.json").read_text())
    single = json.loads((tmp_path / "one" / "results.json").read_text())
    assert multi_res["metrics"] == single["metrics"] and multi_res["best_valid"] == single["best_valid"]
    # one writer: the metrics log has each record once (the resumed part after the checkpoint's)
    lines = (multi / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
