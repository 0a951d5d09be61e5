"""Multi-host training on JAX's own runtime: 2 processes x 4 CPU devices (jax.distributed on
localhost, gloo collectives) train to exactly the metrics of 1 process x 8 devices, and only
process 0 writes the run directory's files."""

import json
import os
import socket
import subprocess
import sys

ARGS = ["--model", "sasrec/small", "--data", "synthetic:tiny", "--set", "loss=ce", "--set", "epochs=2",
        "--set", "batch_size=32", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")


def test_two_processes_train_like_one_process_with_as_many_devices(tmp_path):
    port = _free_port()
    train = [sys.executable, "-m", "jaxrec.cli", "train"]
    procs = [subprocess.Popen(train + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                       "--process-id", str(i), "--out", str(tmp_path / "multi")] + ARGS,
                              env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    one = subprocess.run(train + ["--out", str(tmp_path / "one")] + ARGS, env=_env(8), capture_output=True,
                         text=True, timeout=600)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert one.returncode == 0, one.stderr[-2000:]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    assert all("8 cpu device(s)" in o for o in outs)
    multi = json.loads((tmp_path / "multi" / "results.json").read_text())
    single = json.loads((tmp_path / "one" / "results.json").read_text())
    assert multi["metrics"] == single["metrics"] and multi["best_valid"] == single["best_valid"]
    # one writer: the metrics log has each record once
    lines = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
