"""Trainer: resume equals uninterrupted, 8-device mesh equals 1 device, NaN guard, CLI."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxrec.cli import main
from jaxrec.train import Config, train

TINY = dict(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=2,
            eval_every=1, seed=3)


def test_resume_equals_uninterrupted(tmp_path, capsys):
    """...and --resume refuses settings the checkpoint was not trained with, naming each one;
    the budget may change, and what it continues from is printed."""
    from jaxrec.errors import UserError
    from jaxrec.train.config import Retrieval
    full = train(Config(**TINY), tmp_path / "full", progress=False)
    # "killed" early: a zero time budget stops after the first batch, with a checkpoint
    train(Config(**TINY, max_minutes=0.0), tmp_path / "cut", progress=False)
    with pytest.raises(UserError, match=r"lr 0.001 -> 0.002; seed 3 -> 4 \(its config.json\)"):
        train(Config(**TINY | dict(lr=2e-3, seed=4)), tmp_path / "cut", resume=True, progress=False)
    with pytest.raises(UserError, match=r"retrieval.gbce_t 0.75 -> 0.5"):
        train(Config(**TINY | dict(retrieval=Retrieval(gbce_t=0.5))), tmp_path / "cut", resume=True, progress=False)
    capsys.readouterr()
    log = tmp_path / "cut" / "metrics.jsonl"  # records past the checkpoint, as a killed piece leaves them
    log_text = log.read_text()
    kept = "".join(r for r in log_text.splitlines(True) if '"split": "test"' not in r)  # what the resume keeps
    log.write_text(log_text + '{"step": 7, "epoch": 1, "loss": 9.0}\n{"step": 8, "epoch": 1, "loss": 8.0}\n'
                   '{"split": "test", "epoch": 1, "NDCG@10": 0.5}\n')  # a test record, as a finished piece writes
    # a run written before a setting existed trained with that setting's default: not a change
    stored = json.loads((tmp_path / "cut" / "config.json").read_text())
    del stored["train"]["retrieval"]["teachers"], stored["train"]["retrieval"]["distill"]
    (tmp_path / "cut" / "config.json").write_text(json.dumps(stored))
    resumed = train(Config(**TINY), tmp_path / "cut", resume=True, progress=False)
    out = capsys.readouterr().out
    assert "resume: max_minutes 0.0 -> None" in out  # the minutes trained depend on the machine's load
    assert re.search(r"resume: from epoch 0 \+ 1 batches, [\d.]+ min trained, best validation", out)
    # the two injected steps, the injected test record and the one the cut piece wrote when its budget ended
    assert "resume: 4 records of steps 7-8 in metrics.jsonl" in out and "moved to metrics.redone.jsonl" in out
    assert (tmp_path / "cut" / "metrics.redone.jsonl").read_text().count("loss") == 2
    assert log.read_text().startswith(kept) and '"loss": 9.0' not in log.read_text()
    assert log.read_text().count('"split": "test"') == 1 and '"NDCG@10": 0.5' not in log.read_text()
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


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 10])
def test_decay_fraction_holds_lr_then_decays_over_the_last_share(schedule, warmup):
    """Warmup-stable-decay against its closed form: lr during the first 1 - f of the steps after
    warmup, then the whole schedule's shape compressed into the last f, reaching 0 at the end;
    f = 1 is the plain schedule. The clock's version (linear_time) gives the same factor."""
    import numpy as np
    from jaxrec.errors import UserError
    from jaxrec.train.step import make_schedule, time_decay_factor
    total, lr, f = 110, 2e-3, 0.25
    sched = make_schedule(Config(**TINY | dict(schedule=schedule, lr=lr, warmup_steps=warmup,
                                               decay_fraction=f)), total)
    plain = make_schedule(Config(**TINY | dict(schedule=schedule, lr=lr)), total)
    decay = round((total - warmup) * f)
    start = total - decay

    def expected(t):
        if t < warmup:
            return lr * t / warmup
        if t < start:
            return lr
        u = (t - start) / decay
        return lr * (1 - u) if schedule == "linear" else lr * 0.5 * (1 + np.cos(np.pi * u))

    for t in range(total + 1):
        np.testing.assert_allclose(float(sched(t)), expected(t), rtol=1e-5, atol=1e-9, err_msg=f"step {t}")
    assert float(plain(total // 2)) < lr  # the default (f = 1) decays from the first step
    for left, want in [(1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (0.125, 0.5), (0.0, 0.0), (-0.1, 0.0)]:
        assert time_decay_factor(left, f) == pytest.approx(want)
    assert time_decay_factor(0.5, 1.0) == pytest.approx(0.5)
    with pytest.raises(UserError, match="schedule=constant"):
        make_schedule(Config(**TINY | dict(decay_fraction=f)), total)


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


@pytest.mark.slow  # overlapping coverage in the default run; kept for pytest -m slow
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


def test_sparse_item_updates_equal_dense_adam_when_every_row_is_in_every_batch(tmp_path):
    """Lazy Adam moves only the rows a batch touches; with sampled negatives covering the whole
    (tiny) catalog in every batch that is every row, so it must equal dense Adam (clipping,
    bias correction and weight decay included), step after step. Then a real run trains."""
    import jax
    import numpy as np
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.errors import UserError
    from jaxrec.train import build_run
    from jaxrec.train.config import Retrieval
    from jaxrec.train.step import SparseItemAdam, make_loss_fn, make_train_step
    split = leave_one_out(load_dataset("synthetic:tiny"))
    base = TINY | dict(loss="sampled_softmax", num_negatives=256, weight_decay=0.01, clip_norm=0.5)
    runs = {s: build_run(Config(**base, retrieval=Retrieval(sparse_items=s)), split) for s in (False, True)}
    assert isinstance(runs[True].tx, SparseItemAdam)
    states, losses = {}, {}
    batches = list(runs[False].batches.epoch(0))[:3]
    for s, run in runs.items():
        step = make_train_step(run.graphdef, make_loss_fn(run.loss, run.cfg, split.data.num_items), run.tx)
        state = jax.tree.map(lambda x: x.copy(), run.state)
        losses[s] = []
        for i, b in enumerate(batches):
            seen = np.unique(np.concatenate([b[k].ravel() for k in ("inputs", "targets", "negatives")]))
            assert set(range(1, split.data.num_items + 1)) <= set(seen.tolist())  # every row, every batch
            state, m = step(state, b, jax.random.PRNGKey(i))
            losses[s].append(float(m["loss"]))
        states[s] = jax.tree.map(np.asarray, state["params"])
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(states[False]), jax.tree.leaves(states[True])):
        k = jax.tree_util.keystr(path)
        if "item_emb" in k:
            a, b = a[1:], b[1:]  # row 0 is padding: lazy Adam never moves it
        # a key bias has no gradient (softmax is shift-invariant): Adam turns its float noise,
        # which the two paths sum in different orders, into steps of up to lr; elsewhere 1e-7
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4 if "['kv']['bias']" in k else 1e-6, err_msg=k)
    with pytest.raises(UserError, match="sparse_items: loss 'ce'"):
        build_run(Config(**TINY, retrieval=Retrieval(sparse_items=True)), split)
    with pytest.raises(UserError, match="sparse_items: similarity='cosine'"):
        build_run(Config(**base | dict(model_args={"similarity": "cosine"}), retrieval=Retrieval(sparse_items=True)),
                  split)


@pytest.mark.slow
def test_a_run_with_sparse_item_updates_trains(tmp_path):
    from jaxrec.train.config import Retrieval
    cfg = Config(**TINY | dict(loss="sampled_softmax", num_negatives=8, epochs=2),
                 retrieval=Retrieval(sparse_items=True, shared_negatives=True))
    assert train(cfg, tmp_path / "sparse", progress=False)["metrics"]["NDCG@10"] > 0.05


@pytest.mark.slow
def test_negatives_outside_the_sequence_train_with_sampled_softmax_and_ce(tmp_path):
    """``retrieval.negatives_outside_sequence`` trains end to end with the losses it applies to
    (SASRec+ 3000's draw, its full-softmax limit, and SASRec BCE's per-position draw)."""
    from jaxrec.train.config import Retrieval
    rt = Retrieval(shared_negatives=True, negatives_outside_sequence=True)
    cfg = Config(**TINY | dict(loss="sampled_softmax", num_negatives=16, epochs=1), retrieval=rt)
    assert train(cfg, tmp_path / "outside", progress=False)["metrics"]["NDCG@10"] > 0.0
    cfg = Config(**TINY | dict(epochs=1), retrieval=Retrieval(negatives_outside_sequence=True))  # ce
    assert train(cfg, tmp_path / "outside_ce", progress=False)["metrics"]["NDCG@10"] > 0.0
    cfg = Config(**TINY | dict(loss="bce", epochs=1, clip_norm=0.0, adam_b2=0.999),  # SASRec vanilla's
                 retrieval=Retrieval(negatives_outside_sequence=True))
    assert train(cfg, tmp_path / "outside_bce", progress=False)["metrics"]["NDCG@10"] > 0.0


def test_negatives_outside_the_sequence_need_a_loss_they_apply_to():
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.errors import UserError
    from jaxrec.train import build_run
    from jaxrec.train.config import Retrieval
    rt = Retrieval(negatives_outside_sequence=True)
    with pytest.raises(UserError, match="negatives_outside_sequence applies to loss sampled_softmax, ce, bce"):
        build_run(Config(**TINY | dict(model="bert4rec/small", loss="cloze"), retrieval=rt),
                  leave_one_out(load_dataset("synthetic:tiny")))


@pytest.mark.slow
def test_future_targets_and_all_windows_train_with_ce(tmp_path):
    """``retrieval.future_targets`` (the chunked CE's extra targets) trains end to end, with and
    without the excluded window; so do ``all_windows`` with ``exclude_history``."""
    from jaxrec.train.config import Retrieval
    for outside in (False, True):
        rt = Retrieval(future_targets=2, future_weight=0.5, negatives_outside_sequence=outside)
        cfg = Config(**TINY | dict(epochs=1), retrieval=rt)
        assert train(cfg, tmp_path / f"future_{outside}", progress=False)["metrics"]["NDCG@10"] > 0.0
    rt = Retrieval(negatives_outside_sequence=True, exclude_history=True, all_windows=True)
    assert train(Config(**TINY | dict(epochs=1), retrieval=rt), tmp_path / "windows",
                 progress=False)["metrics"]["NDCG@10"] > 0.0


def test_future_targets_and_history_windows_are_refused_where_they_do_not_apply():
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.errors import UserError
    from jaxrec.train import build_run
    from jaxrec.train.config import Retrieval
    split = leave_one_out(load_dataset("synthetic:tiny"))
    with pytest.raises(UserError, match="future_targets applies to loss ce, not 'bce'"):
        build_run(Config(**TINY | dict(loss="bce"), retrieval=Retrieval(future_targets=2)), split)
    with pytest.raises(UserError, match="exclude_history widens .* set both"):
        build_run(Config(**TINY, retrieval=Retrieval(exclude_history=True)), split)


def test_ema_step_follows_its_recurrence_and_refuses_sparse_items():
    """The step's moving average against the recurrence computed in numpy from the iterates
    it produced: ema_t = d_t ema_{t-1} + (1 - d_t) params_t, d_t = min(decay, (1 + t) / (10 + t))."""
    import jax
    import numpy as np
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.errors import UserError
    from jaxrec.train import build_run
    from jaxrec.train.config import Retrieval
    from jaxrec.train.step import make_loss_fn, make_train_step
    split = leave_one_out(load_dataset("synthetic:tiny"))
    cfg = Config(**TINY | dict(ema_decay=0.5))
    run = build_run(cfg, split)
    step = make_train_step(run.graphdef, make_loss_fn("ce", cfg, run.split.data.num_items), run.tx,
                           ema_decay=cfg.ema_decay)
    state = run.state
    ema = jax.tree.map(np.asarray, state["params"])
    for t, batch in zip(range(4), run.batches.epoch(0)):
        state, _ = step(state, batch, jax.random.PRNGKey(t), np.float32(1.0))
        d = min(0.5, (1 + t) / (10 + t))
        ema = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), ema, state["params"])
    for got, want, raw in zip(*(jax.tree.leaves(x) for x in (state["ema"], ema, state["params"]))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(np.asarray(e), np.asarray(p))
               for e, p in zip(jax.tree.leaves(state["ema"]), jax.tree.leaves(state["params"])))
    sparse = Config(**TINY | dict(loss="sampled_softmax", num_negatives=8, ema_decay=0.9),
                    retrieval=Retrieval(sparse_items=True, shared_negatives=True))
    with pytest.raises(UserError, match="ema_decay .* does not combine with retrieval.sparse_items"):
        build_run(sparse, split)


def test_ema_run_resumes_exactly_and_its_checkpoint_is_the_average(tmp_path):
    """With ema_decay, a killed-and-resumed run equals an uninterrupted one (the iterate and the
    average both come back), and what the run's best checkpoint loads (``jaxrec eval``, the
    server) is the validated average: evaluating it gives the run's own test figures."""
    from jaxrec.train.rundir import RunDir
    from jaxrec.train.trainer import build_run
    cfg = Config(**TINY | dict(ema_decay=0.9))
    full = train(cfg, tmp_path / "full", progress=False)
    train(Config(**TINY | dict(ema_decay=0.9, max_minutes=0.0)), tmp_path / "cut", progress=False)
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    for k, v in full["metrics"].items():
        assert resumed["metrics"][k] == pytest.approx(v, abs=1e-6), k
    loaded = RunDir(tmp_path / "full").load_model("best")
    run = build_run(cfg)
    again = run.evaluate(loaded.params, "test").metrics
    for k, v in full["metrics"].items():
        assert again[k] == pytest.approx(v, abs=1e-6), k
    # the checkpoint holds what was validated (the average), not the iterate
    valid = [json.loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
             if '"split": "valid"' in r]
    best = max(valid, key=lambda r: r[run.select])
    assert run.evaluate(loaded.params, "valid").metrics[run.select] == pytest.approx(best[run.select], abs=1e-6)
    plain = train(Config(**TINY), tmp_path / "plain", progress=False)
    assert plain["metrics"]["NDCG@10"] != pytest.approx(full["metrics"]["NDCG@10"], abs=1e-9)
