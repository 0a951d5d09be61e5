"""Distillation from trained retrieval runs (``retrieval.teachers``): the loss against closed forms,
and a run that learns from teachers."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import losses
from jaxrec.data import load_dataset
from jaxrec.errors import UserError
from jaxrec.models import build_model
from jaxrec.models.layers import NEG_INF
from jaxrec.train import Config, train
from jaxrec.train.config import Retrieval
from jaxrec.train.step import distill_term


def test_soft_ce_is_the_cross_entropy_against_the_teachers_distribution():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 6)).astype(np.float32)
    teacher = rng.normal(size=(2, 3, 6)).astype(np.float32)
    logits[..., 0] = teacher[..., 0] = NEG_INF  # item 0 is no class
    w = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
    q = np.exp(teacher - teacher.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    per = -(q * np.where(q > 0, logp, 0.0)).sum(-1)
    want = (per * w).sum() / w.sum()
    assert float(losses.soft_ce(jnp.asarray(logits), jnp.asarray(teacher), jnp.asarray(w))) == pytest.approx(want, rel=1e-5)
    # a one-hot teacher: the plain cross-entropy of its class
    onehot = np.full_like(teacher, NEG_INF)
    onehot[..., 2] = 0.0
    want = (-logp[..., 2] * w).sum() / w.sum()
    assert float(losses.soft_ce(jnp.asarray(logits), jnp.asarray(onehot), jnp.asarray(w))) == pytest.approx(want, rel=1e-5)


def test_distilling_from_the_student_itself_is_its_entropy_over_the_classes():
    """Teacher = student: the term is the entropy of the student's softmax over the same classes
    (the window's items out, but for each position's target), and 1x at any temperature is T^2 x
    the softened one."""
    data = load_dataset("synthetic:tiny")
    model = build_model("sasrec/small", data.num_items, 0, catalog=data.catalog)
    rng = np.random.default_rng(1)
    inputs = rng.integers(1, data.num_items + 1, size=(3, 50)).astype(np.int32)
    targets = rng.integers(1, data.num_items + 1, size=(3, 50)).astype(np.int32)
    w = np.ones((3, 50), np.float32)
    exclude = losses.window_items(inputs, targets, data.num_items + 1)
    h, table = model.hidden(inputs, None), model.output_table()
    got = float(distill_term(h, table, inputs, targets, w, exclude, [model], 1.0))
    logits = np.asarray(jnp.einsum("bld,vd->blv", h, table), np.float64)
    ex = np.asarray(exclude)
    out = np.zeros_like(logits, bool)
    out[..., 0] = True
    out |= ex[:, None, :]
    out[np.arange(3)[:, None], np.arange(50)[None, :], targets] = False
    out[..., 0] = True
    z = np.where(out, -np.inf, logits)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    entropy = -(p * np.where(p > 0, np.log(np.where(p > 0, p, 1)), 0)).sum(-1).mean()
    assert got == pytest.approx(entropy, rel=1e-4)


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
