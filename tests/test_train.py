"""Trainer: resume equals uninterrupted, 8-device mesh equals 1 device, NaN guard, CLI."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxrec.cli import main
from jaxrec.train import Config, train

TINY = dict(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=2,
            eval_every=1, seed=3)


def test_resume_equals_uninterrupted(tmp_path):
    full = train(Config(**TINY), tmp_path / "full", progress=False)
    # "killed" after the first epoch: a zero time budget stops after epoch 1's checkpoint
    train(Config(**TINY, max_minutes=0.0), tmp_path / "cut", progress=False)
    resumed = train(Config(**TINY), tmp_path / "cut", resume=True, progress=False)
    assert resumed["epochs"] == full["epochs"] == 2
    for k, v in full["metrics"].items():
        assert resumed["metrics"][k] == pytest.approx(v, abs=1e-6), k


def test_lr_scale_is_a_learning_rate_factor_and_linear_time_needs_a_budget(tmp_path):
    """The wall-clock schedule reaches the step as one factor on the update: 0 freezes the
    parameters, 0.5 halves Adam's step exactly; and it refuses to run without a budget."""
    import jax
    import numpy as np
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.errors import UserError
    from jaxrec.train import build_run
    from jaxrec.train.step import make_loss_fn, make_train_step
    cfg = Config(**TINY)
    run = build_run(cfg, leave_one_out(load_dataset(cfg.data)))
    step = make_train_step(run.graphdef, make_loss_fn("ce", cfg, run.split.data.num_items), run.tx)
    batch, key = next(iter(run.batches.epoch(0))), jax.random.PRNGKey(0)
    p0 = jax.tree.map(np.asarray, run.state["params"])
    deltas = {}
    for scale in (1.0, 0.5, 0.0):
        state = jax.tree.map(lambda x: x.copy(), run.state)
        new, _ = step(state, batch, key, np.float32(scale))
        deltas[scale] = jax.tree.map(lambda a, b: np.asarray(a) - b, new["params"], p0)
    for full, half, zero in zip(*(jax.tree.leaves(deltas[s]) for s in (1.0, 0.5, 0.0))):
        np.testing.assert_allclose(half, 0.5 * full, rtol=1e-4, atol=1e-7)
        assert not np.any(zero)
    with pytest.raises(UserError, match="max_minutes"):
        train(Config(**TINY | dict(schedule="linear_time")), tmp_path / "t", progress=False)


def test_refuses_to_overwrite_without_resume(tmp_path):
    train(Config(**TINY | dict(epochs=1)), tmp_path / "r", progress=False)
    from jaxrec.errors import UserError
    with pytest.raises(UserError, match="--resume"):
        train(Config(**TINY | dict(epochs=1)), tmp_path / "r", progress=False)


def test_nan_stops_with_step(tmp_path):
    from jaxrec.train.trainer import NonFiniteLoss
    with pytest.raises(NonFiniteLoss, match="at step"):
        train(Config(**TINY | dict(lr=1e30, clip_norm=0.0, epochs=3)), tmp_path / "nan",
              progress=False)


MESH_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.sharding import make_mesh, replicate, shard_batch
    from jaxrec.train import Config, build_run
    from jaxrec.train.step import make_loss_fn, make_train_step
    assert jax.device_count() == 8
    out = {}
    for n in (1, 8):
        cfg = Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, seed=0)
        run = build_run(cfg, leave_one_out(load_dataset(cfg.data)))
        mesh = make_mesh(n)
        step = make_train_step(run.graphdef, make_loss_fn("ce", cfg, run.split.data.num_items), run.tx)
        state, losses = replicate(run.state, mesh), []
        for i, b in enumerate(run.batches.epoch(0)):
            state, m = step(state, shard_batch(b, mesh), jax.random.PRNGKey(i))
            losses.append(float(m["loss"]))
        out[n] = losses
    print(np.max(np.abs(np.array(out[1]) - np.array(out[8]))))
""")


def test_eight_device_mesh_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 1e-4


def test_cli_train_eval_recommend(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "sasrec/small", "--data", "synthetic:tiny", "--out", str(out),
                 "--set", "epochs=1", "--set", "batch_size=32", "--set", "loss=ce", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert "full ranking" in res["protocol"] and "NDCG@10" in res["metrics"]
    assert (out / "metrics.jsonl").exists()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["NDCG@10"] == pytest.approx(res["metrics"]["NDCG@10"], abs=1e-6)
    assert main(["recommend", "--checkpoint", str(out), "--history", "3,5,nope", "-k", "5",
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert len(rec["items"]) == 5 and rec["unknown"] == 1
    assert not {"3", "5"} & set(rec["items"])  # seen items excluded
    assert main(["recommend", "--checkpoint", str(out), "--history", "3", "-k", "0"]) == 2
    assert main(["train", "--data", "synthetic:tiny", "--out", str(tmp_path / "x"),
                 "--set", "bogus=1"]) == 2


def test_last_out_protocol_end_to_end(tmp_path, capsys):
    """split=last_out trains on all but each user's last item, and `jaxrec eval` reuses the run's
    protocol (its string names it) and reproduces the trainer's test metrics."""
    out = tmp_path / "run"
    assert main(["train", "--model", "sasrec/small", "--data", "synthetic:tiny", "--out", str(out),
                 "--set", "epochs=1", "--set", "batch_size=32", "--set", "loss=ce",
                 "--set", "split=last_out", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"].startswith("last-out")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["protocol"] == res["protocol"]
    assert ev["metrics"]["NDCG@10"] == pytest.approx(res["metrics"]["NDCG@10"], abs=1e-6)
    assert main(["train", "--data", "synthetic:tiny", "--out", str(tmp_path / "y"),
                 "--set", "split=random"]) == 2


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.py")), ids=lambda p: p.stem)
def test_every_config_file_loads(path):
    """Configs are code: each one builds a Config and names the figure it aims at."""
    from jaxrec.models.registry import resolve
    from jaxrec.train.config import load_config_file

    cfg = load_config_file(str(path))
    resolve(cfg.model)  # a registered model and variant
    assert isinstance(cfg, Config) and cfg.expected["dataset"]
    assert Config.from_dict(cfg.to_dict()) == cfg  # what a run directory saves reads back the same
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.__doc__ and "jaxrec train" in mod.__doc__
