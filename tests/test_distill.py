"""Distillation from trained retrieval runs (``retrieval.teachers``): the loss against closed forms,
and a run that learns from teachers."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import losses
from jaxrec.data import load_dataset
from jaxrec.errors import UserError
from jaxrec.models import build_model
from jaxrec.train import Config, train
from jaxrec.train.config import Retrieval
from jaxrec.train.teachers import teacher_view


def _dense_reference(h, table, targets, w, exclude, t_logits, a, temp):
    """The distillation loss written out on the full (B, L, V) logits: (1 - a) x the target's
    cross-entropy + a x T^2 x the cross-entropy of softmax(student / T) against softmax(teacher
    / T), both over the same classes (item 0 never; with ``exclude`` the window's items but the
    position's own target)."""
    V = table.shape[0]
    out = jnp.broadcast_to(jnp.arange(V) == 0, targets.shape + (V,))
    if exclude is not None:
        out = out | (exclude[:, None, :] & (jnp.arange(V) != targets[..., None]))
    s = jnp.where(out, -jnp.inf, jnp.einsum("bld,vd->blv", h, table))  # (B, L, V)
    logp = jax.nn.log_softmax(s, -1)
    ce = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    q = jax.nn.softmax(jnp.where(out, -jnp.inf, t_logits) / temp, -1)
    soft = -(q * jnp.where(out, 0.0, jax.nn.log_softmax(s / temp, -1))).sum(-1)
    per = (1 - a) * ce + a * temp ** 2 * soft
    return (per * w).sum() / w.sum()


@pytest.mark.parametrize("a,temp,window", [(0.5, 1.0, True), (0.3, 2.0, True), (1.0, 0.5, False), (0.0, 1.0, True)])
def test_the_chunked_distillation_loss_and_gradients_equal_the_dense_formula(a, temp, window):
    rng = np.random.default_rng(0)
    B, L, D, Dt, V = 3, 7, 5, 6, 11
    h, table = rng.normal(size=(B, L, D)).astype(np.float32), rng.normal(size=(V, D)).astype(np.float32)
    ht, table_t = rng.normal(size=(B, L, Dt)).astype(np.float32), rng.normal(size=(V, Dt)).astype(np.float32)
    targets = rng.integers(1, V, size=(B, L)).astype(np.int32)
    inputs = rng.integers(1, V, size=(B, L)).astype(np.int32)
    w = (rng.random((B, L)) < 0.8).astype(np.float32)
    exclude = losses.window_items(inputs, targets, V) if window else None
    t_logits = jnp.einsum("bld,vd->blv", ht, table_t)

    def fused(h, table):
        return 2.0 * losses.catalog_ce(h, table, targets, w, 4, exclude=exclude, teacher=(ht, table_t),
                                       distill=a, temperature=temp)

    def dense(h, table):
        return 2.0 * _dense_reference(h, table, targets, w, exclude, t_logits, a, temp)
    assert float(fused(h, table)) == pytest.approx(float(dense(h, table)), rel=1e-5)
    got, want = jax.grad(fused, (0, 1))(h, table), jax.grad(dense, (0, 1))(h, table)
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-6)
    if a == 0.0:  # no share for the teacher: the plain loss
        assert float(fused(h, table)) == pytest.approx(2.0 * float(losses.catalog_ce(h, table, targets, w, 4,
                                                                                    exclude=exclude)), rel=1e-6)


def test_the_teachers_view_is_their_mean_log_probability():
    """Two teachers side by side in one dot product give the softmax of the mean of their
    log-softmaxes; a student that is its own teacher (a = 1, T = 1) has its entropy as the loss."""
    data = load_dataset("synthetic:tiny")
    m1 = build_model("sasrec/small", data.num_items, 0, catalog=data.catalog)
    m2 = build_model("sasrec/small", data.num_items, 1, catalog=data.catalog)
    rng = np.random.default_rng(1)
    inputs = rng.integers(1, data.num_items + 1, size=(3, 50)).astype(np.int32)
    targets = rng.integers(1, data.num_items + 1, size=(3, 50)).astype(np.int32)
    ht, table_t = teacher_view([m1, m2], inputs)
    got = jax.nn.log_softmax(jnp.einsum("bld,vd->blv", ht, table_t)[..., 1:], -1)
    mean = sum(jax.nn.log_softmax(jnp.einsum("bld,vd->blv", m.hidden(inputs, None), m.output_table())[..., 1:], -1)
               for m in (m1, m2)) / 2
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.nn.log_softmax(mean, -1)), atol=1e-4)
    w = np.ones((3, 50), np.float32)
    h, table = m1.hidden(inputs, None), m1.output_table()
    self_taught = float(losses.catalog_ce(h, table, targets, w, exclude=None, teacher=teacher_view([m1], inputs),
                                          distill=1.0))
    z = np.asarray(jnp.einsum("bld,vd->blv", h, table))[..., 1:].astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    entropy = float(-(p * np.log(p)).sum(-1).mean())
    assert self_taught == pytest.approx(entropy, rel=1e-4)


def _tiny(**retrieval):
    return Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=2,
                  retrieval=dataclasses.replace(Retrieval(), **retrieval))


def test_a_run_distils_from_teachers_and_weight_zero_is_plain_training(tiny_run, tmp_path):
    plain = train(_tiny(), tmp_path / "plain", progress=False)["metrics"]
    zero = train(_tiny(teachers=[str(tiny_run)], distill=0.0), tmp_path / "zero", progress=False)["metrics"]
    assert zero["NDCG@10"] == pytest.approx(plain["NDCG@10"], abs=1e-6)  # the plumbing changes nothing
    half = train(_tiny(teachers=[str(tiny_run), str(tiny_run)], distill=0.5, distill_temperature=2.0),
                 tmp_path / "half", progress=False)
    assert np.isfinite(half["metrics"]["NDCG@10"])
    first = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()][0]
    plain_first = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()][0]
    assert first["loss"] != pytest.approx(plain_first["loss"], abs=1e-4)  # the teachers' term is in the loss
    saved = json.loads((tmp_path / "half" / "config.json").read_text())
    assert saved["train"]["retrieval"]["teachers"] == [str(tiny_run)] * 2


def test_teachers_that_cannot_teach_are_a_clear_error(tiny_run, tmp_path):
    with pytest.raises(UserError, match="needs loss ce"):
        train(dataclasses.replace(_tiny(teachers=[str(tiny_run)]), loss="bce", num_negatives=1), tmp_path / "a",
              progress=False)
    other = dataclasses.replace(_tiny(teachers=[str(tiny_run)]), data="synthetic:users=60,items=40,mean_len=8,max_len=20")
    with pytest.raises(UserError, match="another item catalog"):
        train(other, tmp_path / "b", progress=False)
    with pytest.raises(UserError, match="not a jaxrec run directory"):
        train(_tiny(teachers=[str(tmp_path)]), tmp_path / "c", progress=False)


@pytest.mark.parametrize("all_windows", [False, True])
def test_the_cached_teacher_outputs_are_the_teachers_on_each_batchs_windows(all_windows):
    """Computed once, read per batch: every row of every batch (length buckets, a last short
    batch, padding rows; with all_windows a long sequence's earlier windows too) carries exactly
    what the teachers give for that batch's inputs."""
    from jaxrec.data import make_split
    from jaxrec.data.batching import TrainBatches
    from jaxrec.train.teachers import TeacherCache
    data = load_dataset("synthetic:users=70,items=40,mean_len=12,max_len=30")
    teachers = [build_model("sasrec/small", data.num_items, s, catalog=data.catalog) for s in (0, 1)]
    max_len = 12 if all_windows else 30
    batches = TrainBatches(make_split(data), max_len, 16, length_buckets=[4, 8] if all_windows else [10, 20],
                           all_windows=all_windows)
    if all_windows:  # some sequences are several windows, their earlier ones ending before train_end
        assert len(batches.rows) > len(set(batches.rows.tolist()))
    cache = TeacherCache(teachers, batches, chunk=8, progress=False)
    batches.row_extra = cache.rows
    seen, view = 0, jax.jit(lambda inputs: teacher_view(teachers, inputs)[0])
    for batch in batches.epoch(0):
        want = np.asarray(view(batch["inputs"]))
        real = batch["weights"].sum(1) > 0  # padding rows: zeros, weight 0
        np.testing.assert_allclose(batch["teacher_h"][real].astype(np.float32), want[real], atol=2e-3, rtol=2e-3)
        assert not batch["teacher_h"][~real].any()
        seen += int(real.sum())
    assert seen == len(batches.rows) and len(batches.windows) == 3
