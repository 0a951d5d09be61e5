"""The pure, jitted train step and the loss wiring for each training objective.

``train_step(state, batch, key, lr_scale) -> (state, metrics)`` with ``state = {"params",
"opt", "step"}`` (a plain dict, big_vision style). The model graph is split once before the loop
(``nnx.split``) and merged inside the jitted function, so the step is a pure function of
arrays, compiled once for the fixed batch shapes; ``donate_argnums=0`` lets XLA update the
parameters and optimizer state in place.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxrec import losses
from jaxrec.errors import UserError
from jaxrec.scoring import merge
from jaxrec.train.config import Config

RETRIEVAL_LOSSES = ("bce", "ce", "gbce", "sampled_softmax", "cloze")
RANKING_LOSSES = ("listwise", "pointwise")  # over a candidate list whose column 0 is the positive
LOSSES = RETRIEVAL_LOSSES + RANKING_LOSSES


def needs_negatives(loss: str) -> bool:
    return loss in ("bce", "gbce", "sampled_softmax") + RANKING_LOSSES


def check_loss(loss: str, kind: str) -> None:
    allowed = RANKING_LOSSES if kind == "ranking" else RETRIEVAL_LOSSES
    if loss not in allowed:
        raise UserError(f"loss {loss!r} does not apply to a {kind} model; use one of {', '.join(allowed)}")


def make_loss_fn(loss: str, cfg: Config, num_items: int, sample_prob=None):
    """(model, batch, key) -> scalar loss for the named objective."""
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}; available: {', '.join(LOSSES)}")
    if loss == "gbce":
        beta = losses.gbce_beta(cfg.num_negatives, num_items, cfg.retrieval.gbce_t)
    log_q = None if sample_prob is None else jnp.log(jnp.maximum(jnp.asarray(sample_prob, jnp.float32), 1e-12))

    def negatives_logits(h, table, negs):
        e = table[negs]  # (B, L|1, K, D)
        if negs.shape[1] == 1:  # shared per sequence
            return jnp.einsum("bld,bkd->blk", h, e[:, 0])
        return jnp.einsum("bld,blkd->blk", h, e)

    def loss_fn(model, batch, key):
        if loss in RANKING_LOSSES:
            logits = model.score(batch["history"], batch["candidates"], key)  # (B, C), padding NEG_INF
            if "prior" in batch:  # a residual ranker: the retriever's score is part of the logit
                logits = logits + cfg.ranking.residual * batch["prior"]
            pos, neg, w = logits[:, 0], logits[:, 1:], batch["weights"]
            if loss == "pointwise":
                return losses.bce(pos, neg, w)
            return losses.sampled_softmax(pos, neg, w, neg_ids=batch["candidates"][:, 1:],
                                          targets=batch["candidates"][:, 0])
        table = model.output_table()  # (N+1, D)
        if loss == "cloze":
            seq = jnp.concatenate([batch["inputs"][:, 1:], batch["targets"][:, -1:]], axis=1)  # (B, L)
            k1, key = jax.random.split(key)
            inputs, targets, weights = model.cloze(seq, k1)
        else:
            inputs, targets, weights = batch["inputs"], batch["targets"], batch["weights"]
        h = model.hidden(inputs, key, batch.get("times"))  # (B, L, D)
        table = table.astype(h.dtype)
        if loss in ("ce", "cloze"):
            return losses.catalog_ce(h, table, targets, weights)
        negs = batch["negatives"]
        pos = jnp.einsum("bld,bld->bl", h, table[targets])  # (B, L)
        neg = negatives_logits(h, table, negs)  # (B, L, K)
        if loss == "bce":
            return losses.bce(pos, neg, weights)
        if loss == "gbce":
            return losses.gbce(pos, neg, weights, beta)
        lq_pos = lq_neg = None
        if log_q is not None:
            lq_pos, lq_neg = log_q[targets], log_q[negs]
        return losses.sampled_softmax(pos, neg, weights, neg_ids=negs, targets=targets,
                                      log_q_pos=lq_pos, log_q_neg=lq_neg)

    return loss_fn


def make_optimizer(cfg: Config, total_steps: int) -> optax.GradientTransformation:
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    if cfg.schedule in ("constant", "linear_time"):  # linear_time: decayed by the trainer's clock
        sched = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        sched = optax.cosine_decay_schedule(cfg.lr, decay_steps)
    elif cfg.schedule == "linear":
        sched = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
    else:
        raise UserError(f"unknown schedule {cfg.schedule!r}; use constant, cosine, linear or linear_time")
    if cfg.schedule == "linear_time" and not cfg.max_minutes:
        raise UserError("schedule=linear_time decays the learning rate to 0 at max_minutes: set max_minutes")
    if cfg.warmup_steps:
        sched = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), sched],
                                     [cfg.warmup_steps])
    opt = optax.adamw(sched, b2=0.98, weight_decay=cfg.weight_decay) if cfg.weight_decay else \
        optax.adam(sched, b2=0.98)
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    return optax.chain(*chain, opt)


def make_train_step(graphdef, loss_fn, tx, compute_dtype=None, shardings=None):
    """The jitted step; ``shardings`` (a tree of the state's NamedShardings, ``jaxrec.sharding``)
    keeps the new state where the old one lives (a sharded item table stays sharded)."""
    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, batch, key, lr_scale=1.0):
        """``lr_scale`` multiplies the step's updates, i.e. the learning rate (Adam's update is
        linear in it): the host's wall-clock factor of ``schedule="linear_time"``."""
        def f(params):
            return loss_fn(merge(graphdef, params, compute_dtype), batch, key)

        loss, grads = jax.value_and_grad(f)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        updates = jax.tree.map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates)
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
                   "param_norm": optax.global_norm(params)}
        new = {"params": params, "opt": opt, "step": state["step"] + 1}
        if shardings is not None:
            new = jax.lax.with_sharding_constraint(new, shardings)
        return new, metrics

    return train_step
