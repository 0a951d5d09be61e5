"""A sharded item table (jaxrec.sharding): a (data 2 x model 4) mesh of fake CPU devices gives
the loss, gradients, training steps and top-k of one device, for catalog CE, sampled softmax
and sampled softmax with negatives drawn and scored per shard (retrieval.shard_negatives).
Runs in a subprocess: the device count is fixed when JAX starts."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxrec.errors import UserError

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.data.splits import pad_histories
    from jaxrec.scoring import Scorer, Stage, merge
    from jaxrec.sharding import make_mesh, place, shard_batch, state_shardings
    from jaxrec.train import Config, build_run
    from jaxrec.train.step import make_loss_fn, make_train_step
    assert jax.device_count() == 8
    report = {}
    from jaxrec.train.config import Retrieval
    for case in CASES:
        loss = "ce" if case == "ce" else "sampled_softmax"
        cfg = Config(model="sasrec/small", data="synthetic:tiny", loss=loss, batch_size=32, seed=0,
                     num_negatives=16, model_parallel=4,
                     retrieval=Retrieval(shard_negatives=case == "shard_negatives"))
        run = build_run(cfg, leave_one_out(load_dataset(cfg.data)))
        batches = list(run.batches.epoch(0))[:3]
        if case == "shard_negatives":  # the k-th block of 4 negatives lies in the k-th shard's 26 rows
            negs = np.concatenate([b["negatives"].reshape(-1, 16) for b in batches])
            report["blocks"] = bool(all(((negs[:, 4 * m: 4 * m + 4] // 26) == m).all() for m in range(4)))
            report["prob_sum"] = float(run.batches.neg.prob.sum())
        es = run.split.test
        hist = pad_histories(run.split.data.items, es.start[:16], es.end[:16], 50)
        out = {}
        for name, mesh in (("one", make_mesh(1)), ("mesh", make_mesh(8, model_parallel=4))):
            # per-shard scoring of the negatives on the mesh; one device gathers the same ids
            loss_fn = make_loss_fn(run.loss, cfg, run.split.data.num_items, run.batches.neg.prob,
                                   mesh=mesh if case == "shard_negatives" else None)
            state = place(jax.tree.map(np.asarray, run.state), mesh)  # a copy: the step donates it
            table = state["params"]["item_emb"]["embedding"].value
            rows = {tuple(s.data.shape) for s in table.addressable_shards}
            grad = jax.jit(jax.value_and_grad(lambda p, b, k: loss_fn(merge(run.graphdef, p), b, k)))
            l0, g0 = grad(state["params"], shard_batch(batches[0], mesh), jax.random.PRNGKey(7))
            step = make_train_step(run.graphdef, loss_fn, run.tx, None, state_shardings(state, mesh))
            losses = []
            for i, b in enumerate(batches):
                state, m = step(state, shard_batch(b, mesh), jax.random.PRNGKey(i))
                losses.append(float(m["loss"]))
            after = state["params"]["item_emb"]["embedding"].value
            sc = Scorer(Stage(run.graphdef, state["params"], 50), chunk=32)
            top = sc.top_k(hist, 10, exclude=hist)
            if name == "mesh":  # each shard ranks its own rows: no all-gather of the (104, 32) table
                h = jnp.asarray(hist)
                hlo = sc._top_k.lower(*sc._params(), h, h, None, None, None, k=10, explain=False).compile().as_text()
                report.setdefault("gathered", []).extend(
                    line.split("=", 1)[1].split("{")[0].strip() for line in hlo.splitlines() if " all-gather" in line)
            ranks = sc.rank_targets(hist, es.target[:16], hist, 10)[0]
            out[name] = dict(loss=float(l0), grads=[np.asarray(x) for x in jax.tree.leaves(g0)],
                             losses=losses, rows=sorted(rows), kept=str(after.sharding.spec),
                             items=np.asarray(top.items), ranks=np.asarray(ranks))
        one, mesh = out["one"], out["mesh"]
        report[case] = dict(
            loss=abs(one["loss"] - mesh["loss"]),
            grads=max(float(np.max(np.abs(a - b))) for a, b in zip(one["grads"], mesh["grads"])),
            steps=max(abs(a - b) for a, b in zip(one["losses"], mesh["losses"])),
            rows_one=one["rows"], rows_mesh=mesh["rows"], kept=mesh["kept"],
            items=bool((one["items"] == mesh["items"]).mean() > 0.97),
            ranks=float(np.mean(one["ranks"] == mesh["ranks"])))
    print(json.dumps(report))
""")


# The per-shard negatives exercise every piece (sharded table, sharded loss, per-shard top-k) and
# stay in the default run; the other two losses repeat the comparison and run with -m slow.
@pytest.mark.parametrize("case", ["shard_negatives", pytest.param("ce", marks=pytest.mark.slow),
                                  pytest.param("sampled_softmax", marks=pytest.mark.slow)])
def test_item_table_sharded_over_a_2d_mesh_equals_one_device(case):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", f"CASES = ({case!r},)\n" + SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    report = json.loads(r.stdout.strip().splitlines()[-1])
    if case == "shard_negatives":
        assert report.pop("blocks") and abs(report.pop("prob_sum") - 1) < 1e-9
    gathered = report.pop("gathered")
    assert gathered and not any("[104,32]" in g or "[26,32]" in g for g in gathered), gathered
    assert set(report) == {case}
    for loss, rep in report.items():
        assert rep["loss"] < 1e-5 and rep["grads"] < 1e-5, (loss, rep)
        assert rep["steps"] < 1e-4, (loss, rep)
        # synthetic:tiny has 100 items: 101 rows rounded up to 104, split 4 ways
        assert rep["rows_one"] == [[104, 32]] and rep["rows_mesh"] == [[26, 32]], rep
        assert "model" in rep["kept"], rep  # still sharded after the optimizer steps
        assert rep["items"] and rep["ranks"] > 0.9, rep


def test_sharding_rules_name_the_item_tables_and_check_divisibility():
    import jax
    from jaxrec.sharding import make_mesh, param_spec, state_shardings
    from jax.sharding import PartitionSpec as P

    tree = {"params": {"item_emb": {"embedding": np.zeros((10, 4))}, "pos_emb": {"embedding": np.zeros((5, 4))}}}
    specs = jax.tree_util.tree_map_with_path(param_spec, tree)
    assert specs["params"]["item_emb"]["embedding"] == P("model", None)
    assert specs["params"]["pos_emb"]["embedding"] == P()
    mesh = make_mesh(1)
    state_shardings(tree, mesh)  # 1 device: anything divides
    with pytest.raises(UserError, match="model_parallel=3 must divide"):
        make_mesh(1, model_parallel=3)
