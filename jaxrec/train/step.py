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


def check_sparse_items(cfg: Config, loss: str, model) -> None:
    """``retrieval.sparse_items`` needs a step whose gradient touches only the batch's rows of one
    item table: sampled negatives, the output tied to the input table and scored as it is (dot),
    no side features, and an unsharded table."""
    why = None
    if loss not in ("bce", "gbce", "sampled_softmax"):
        why = f"loss {loss!r} reads every row (full-catalog softmax); use sampled_softmax, bce or gbce"
    elif model.kind != "retrieval" or getattr(model, "out_emb", None) is not None:
        why = "the model must be a retrieval model whose output table is its input table (tied)"
    elif getattr(model, "item_feats", None) is not None or getattr(model, "mask_token", None):
        why = "item features and extra input tokens are not supported"
    elif not getattr(model, "raw_rows", True):
        why = "similarity='cosine' or 'mol' scores transformed rows, not the table's own (use similarity='dot')"
    elif cfg.model_parallel > 1:
        why = "the item table must not be sharded (model_parallel=1)"
    if why:
        raise UserError(f"retrieval.sparse_items: {why}")


def check_mol(cfg: Config, loss: str, model) -> None:
    """``similarity="mol"`` scores pairs with a gated mixture, not a dot product: it trains with
    sampled negatives (the full-catalog softmax's fused pass is written for a dot product), on
    an unsharded table (each shard would need the gate's parameters: not built)."""
    if getattr(model, "mol", None) is None:
        return
    why = None
    if loss not in ("bce", "gbce", "sampled_softmax"):
        why = f"loss {loss!r} scores the whole catalog in a fused dot-product pass; use sampled_softmax, bce or gbce"
    elif cfg.model_parallel > 1:
        why = "the item table must not be sharded (model_parallel=1)"
    if why:
        raise UserError(f"model_args.similarity='mol': {why}")


def check_shard_negatives(cfg: Config, loss: str, model) -> None:
    """``retrieval.shard_negatives`` needs sampled negatives, a sharded table and no side features."""
    why = None
    if loss not in ("bce", "gbce", "sampled_softmax"):
        why = f"loss {loss!r} samples no negatives"
    elif cfg.model_parallel < 2:
        why = "the item table is not sharded (set model_parallel to 2 or more)"
    elif cfg.num_negatives % cfg.model_parallel:
        why = f"num_negatives={cfg.num_negatives} must be a multiple of model_parallel={cfg.model_parallel}"
    elif getattr(model, "item_feats", None) is not None:
        why = "item features are not supported"
    if why:
        raise UserError(f"retrieval.shard_negatives: {why}")


def _shard_local_logits(mesh):
    """(h (B, L, D), table (R, D) sharded by rows on ``model``, negatives (B, L|1, K) whose k-th
    block of K / shards lies in the k-th shard's rows) -> (B, L, K) logits, each shard scoring
    its own block: only (B, L, K / shards) logits per shard leave a device, no embedding rows."""
    from jax.sharding import PartitionSpec as P

    def local(h, table, negs):  # (b, L, D), (R / M, D), (b, L|1, K / M)
        start = jax.lax.axis_index("model") * table.shape[0]
        e = table[negs - start]  # (b, L|1, K / M, D): rows of this shard only
        if negs.shape[1] == 1:
            return jnp.einsum("bld,bkd->blk", h, e[:, 0])
        return jnp.einsum("bld,blkd->blk", h, e)

    return jax.shard_map(local, mesh=mesh, in_specs=(P("data", None, None), P("model", None), P("data", None, "model")),
                         out_specs=P("data", None, "model"))


# Per-position negatives are scored from the position's full row of catalog logits when the
# catalog is at most this many times the negatives per position: one (B, L, D) x (D, V) matmul
# and a gather of scalars cost less than gathering B x L x K item rows and scattering their
# gradients back into the table (gSASRec on ML-1M: 256 negatives, 3,417 rows).
DENSE_NEGATIVES_RATIO = 16
DENSE_MAX = 2 ** 27  # and the (B, L, N+1) logits stay under 512 MiB of float32


def dense_negatives(num_negatives: int, num_rows: int) -> bool:
    """Whether ``make_loss_fn`` scores per-position negatives (not a sequence's shared set) from
    full catalog logits."""
    return num_rows <= DENSE_NEGATIVES_RATIO * num_negatives


def make_loss_fn(loss: str, cfg: Config, num_items: int, sample_prob=None, mesh=None, dense: bool | None = None,
                 teacher_table=None):
    """(model, batch, key) -> scalar loss for the named objective. ``mesh``: with
    ``retrieval.shard_negatives``, where the item table's shards live (each scores its own
    negatives). ``dense``: score per-position negatives from the full (B, L, N+1) logits
    (None: when ``dense_negatives`` says it is the cheaper way; the two give the same loss).
    ``teacher_table``: distillation (``retrieval.teachers``, loss ce): the teachers' item tables
    side by side (V, sum Dt), against the batch's ``teacher_h`` (``train.teachers``)."""
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}; available: {', '.join(LOSSES)}")
    if loss == "gbce":
        beta = losses.gbce_beta(cfg.num_negatives, num_items, cfg.retrieval.gbce_t)
    log_q = None if sample_prob is None else jnp.log(jnp.maximum(jnp.asarray(sample_prob, jnp.float32), 1e-12))
    per_shard = _shard_local_logits(mesh) if mesh is not None and mesh.shape["model"] > 1 else None
    if dense is None:
        dense = dense_negatives(cfg.num_negatives, num_items + 1)

    def negatives_logits(h, rows_of, negs):
        e = rows_of(negs)  # (B, L|1, K, D)
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
        sparse = getattr(model, "compact", None)  # SparseRows: the batch's rows, not the table
        mol = getattr(model, "mol", None)
        k_items = k_gate = None
        if mol is not None and key is not None:  # MoL's item and gate dropout
            k_items, k_gate = jax.random.split(jax.random.fold_in(key, 1))
        table = None if sparse is not None else model.output_table(k_items)  # (N+1, U)
        if loss == "cloze":
            seq = jnp.concatenate([batch["inputs"][:, 1:], batch["targets"][:, -1:]], axis=1)  # (B, L)
            k1, key = jax.random.split(key)
            inputs, targets, weights = model.cloze(seq, k1)
        else:
            inputs, targets, weights = batch["inputs"], batch["targets"], batch["weights"]
        h = model.hidden(inputs, key, batch.get("times"))  # (B, L, D)
        if loss in ("ce", "cloze"):
            exclude = None  # ce with negatives_outside_sequence: the window's items are no class
            if loss == "ce" and cfg.retrieval.negatives_outside_sequence:
                exclude = losses.window_items(inputs, targets, table.shape[0], batch.get("history"))  # (B, V)
            teacher = None if teacher_table is None else (batch["teacher_h"].astype(jnp.float32), teacher_table)
            return losses.catalog_ce(h, table.astype(h.dtype), targets, weights, exclude=exclude, teacher=teacher,
                                     distill=cfg.retrieval.distill, temperature=cfg.retrieval.distill_temperature,
                                     future=cfg.retrieval.future_targets if loss == "ce" else 0,
                                     future_weight=cfg.retrieval.future_weight)

        def rows_of(idx):  # (..., D) output rows of idx
            return sparse.take(idx, h.dtype) if sparse is not None else table[idx].astype(h.dtype)
        negs = batch["negatives"]
        mi = 0.0
        if mol is not None:  # a gated mixture per pair: the model scores them (broadcast over L)
            k_pos = None if k_gate is None else jax.random.fold_in(k_gate, 1)
            pos = model.pair_scores(h, rows_of(targets)[..., None, :], k_pos)[..., 0]  # (B, L)
            neg, gates = model.pair_scores(h, rows_of(negs), k_gate, gates=True)  # (B, L, K), (B, L, K, P)
            mi = model.config.mol_mi_weight * mol.load_balancing(gates, weights)
        else:
            pos = jnp.einsum("bld,bld->bl", h, rows_of(targets))  # (B, L)
            if per_shard is not None:  # the whole (R, D) table, as sharded: each shard reads its rows
                neg = per_shard(h, model.output_rows().astype(h.dtype), negs)  # (B, L, K)
            elif dense and sparse is None and negs.shape[1] > 1 and h.shape[0] * h.shape[1] * len(table) <= DENSE_MAX:
                logits = jnp.einsum("bld,vd->blv", h, table.astype(h.dtype))  # (B, L, N+1)
                neg = jnp.take_along_axis(logits, negs, axis=-1)  # (B, L, K)
            else:
                neg = negatives_logits(h, rows_of, negs)  # (B, L, K)
        if loss in ("bce", "gbce"):  # a padding negative (id 0: none left to draw) counts nothing
            neg = jnp.where(negs == 0, losses.NEG_INF, neg)
        if loss == "bce":
            return losses.bce(pos, neg, weights) + mi
        if loss == "gbce":
            return losses.gbce(pos, neg, weights, beta) + mi
        lq_pos = lq_neg = None
        if log_q is not None:
            lq_pos, lq_neg = log_q[targets], log_q[negs]
        return losses.sampled_softmax(pos, neg, weights, neg_ids=negs, targets=targets,
                                      log_q_pos=lq_pos, log_q_neg=lq_neg) + mi

    return loss_fn


def make_schedule(cfg: Config, total_steps: int):
    """step -> learning rate (before the trainer's wall-clock factor of ``linear_time``)."""
    after_warmup = max(1, total_steps - cfg.warmup_steps)
    decay_steps = max(1, round(after_warmup * cfg.decay_fraction))
    if cfg.schedule in ("constant", "linear_time"):  # linear_time: decayed by the trainer's clock
        sched = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        sched = optax.cosine_decay_schedule(cfg.lr, decay_steps)
    elif cfg.schedule == "linear":
        sched = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
    else:
        raise UserError(f"unknown schedule {cfg.schedule!r}; use constant, cosine, linear or linear_time")
    if cfg.schedule in ("cosine", "linear") and decay_steps < after_warmup:  # hold lr, then decay
        sched = optax.join_schedules([optax.constant_schedule(cfg.lr), sched], [after_warmup - decay_steps])
    if cfg.schedule == "constant" and cfg.decay_fraction < 1.0:
        raise UserError(f"decay_fraction={cfg.decay_fraction} sets where a decay starts, and schedule=constant "
                        "has none: use schedule=linear, cosine or linear_time")
    if cfg.schedule == "linear_time" and not cfg.max_minutes:
        raise UserError("schedule=linear_time decays the learning rate to 0 at max_minutes: set max_minutes")
    if cfg.warmup_steps:
        sched = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), sched],
                                     [cfg.warmup_steps])
    return sched


def time_decay_factor(left_share: float, decay_fraction: float) -> float:
    """``schedule=linear_time``'s factor on lr for ``left_share`` of the time budget left: 1 until
    ``decay_fraction`` of it is left, then linearly to 0 at the deadline (``make_schedule``'s
    linear schedule on the clock instead of the step count)."""
    return min(1.0, max(0.0, left_share) / decay_fraction)


B1, EPS = 0.9, 1e-8  # Adam's first moment and epsilon (the second: Config.adam_b2)


def make_optimizer(cfg: Config, total_steps: int):
    """Adam(W) with global-norm clipping; with ``retrieval.sparse_items`` a ``SparseItemAdam``."""
    sched = make_schedule(cfg, total_steps)
    if cfg.retrieval.sparse_items:
        return SparseItemAdam(sched, cfg.weight_decay, cfg.clip_norm, cfg.adam_b2)
    opt = optax.adamw(sched, b1=B1, b2=cfg.adam_b2, eps=EPS, weight_decay=cfg.weight_decay) if cfg.weight_decay else \
        optax.adam(sched, b1=B1, b2=cfg.adam_b2, eps=EPS)
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    return optax.chain(*chain, opt)


def _is_item_table(path) -> bool:
    key = jax.tree_util.keystr(path)
    return "['item_emb']" in key and "['embedding']" in key


class SparseRows:
    """The rows of the item table a batch touches, standing in for the table in the model's
    lookups (``ItemModel.item_rows`` reads ``model.compact``) and the loss's output rows.
    ``ids`` (M,) sorted, every looked-up index among them (padded with an index past the table)."""

    def __init__(self, ids: jax.Array, rows: jax.Array):
        self.ids, self.rows = ids, rows  # (M,), (M, D)

    def take(self, idx, dtype=jnp.float32) -> jax.Array:
        return self.rows[jnp.searchsorted(self.ids, idx)].astype(dtype)  # (..., D)


class SparseItemAdam:
    """Adam(W) whose item-table rows move only when a batch touches them ("lazy" Adam, as in
    TensorFlow's LazyAdamOptimizer): the other parameters take optax's Adam; the table's moments
    and rows are read and written at the batch's rows alone, so a step's optimizer cost does
    not grow with the catalog. Gradients are clipped by their global norm, table rows included.

    Why: a dense Adam step over a 1M x 64 table reads and writes ~1.5 GB (the parameters, two
    moments, the gradient and the update), more than the model's own work with sampled
    negatives. The difference from dense Adam: an untouched row's moments do not decay (a
    dense step would also move it by its momentum); with every row in every batch the two are
    the same (``tests/test_train.py``)."""

    def __init__(self, schedule, weight_decay: float = 0.0, clip_norm: float = 0.0, b2: float = 0.98):
        self.schedule, self.wd, self.clip, self.b2 = schedule, float(weight_decay), float(clip_norm), float(b2)
        self.rest = optax.adamw(schedule, b1=B1, b2=b2, eps=EPS, weight_decay=weight_decay) if weight_decay \
            else optax.adam(schedule, b1=B1, b2=b2, eps=EPS)

    @staticmethod
    def split(params):
        """(the item table (R, D), the parameters with a (1, D) stand-in for it: the model reads
        rows through ``SparseRows``; one row, not none, because Orbax saves no empty arrays and
        optax keeps moments of the stand-in)."""
        found = []

        def pick(path, x):
            if _is_item_table(path):
                found.append(x)
                return jnp.zeros((1,) + tuple(x.shape[1:]), x.dtype)
            return x
        rest = jax.tree_util.tree_map_with_path(pick, params)
        if len(found) != 1:
            raise UserError("retrieval.sparse_items: the model has no single item table (item_emb)")
        return found[0], rest

    @staticmethod
    def join(rest, table):
        return jax.tree_util.tree_map_with_path(lambda p, x: table if _is_item_table(p) else x, rest)

    def init(self, params):
        table, rest = self.split(params)
        return {"rest": self.rest.init(rest), "m": jnp.zeros_like(table), "v": jnp.zeros_like(table)}

    def step(self, graphdef, loss_fn, state, batch, key, lr_scale, compute_dtype=None):
        table, rest = self.split(state["params"])
        R = table.shape[0]
        looked_up = [batch[k].reshape(-1) for k in ("inputs", "targets", "negatives") if k in batch]
        flat = jnp.concatenate(looked_up)
        ids = jnp.unique(flat, size=min(R, flat.shape[0]), fill_value=R)  # (M,) sorted; R = none
        rows = table.at[ids].get(mode="fill", fill_value=0)  # (M, D)

        def f(rest, rows):
            model = merge(graphdef, rest, compute_dtype)
            model.compact = SparseRows(ids, rows.astype(compute_dtype or rows.dtype))
            return loss_fn(model, batch, key)

        loss, (g_rest, g_rows) = jax.value_and_grad(f, argnums=(0, 1))(rest, rows)
        norm = optax.global_norm((g_rest, g_rows))
        if self.clip:  # as optax.clip_by_global_norm: scale down to the norm when over it
            scale = jnp.where(norm > self.clip, self.clip / jnp.maximum(norm, 1e-30), 1.0)
            g_rest, g_rows = jax.tree.map(lambda g: g * scale, (g_rest, g_rows))
        opt = state["opt"]
        updates, opt_rest = self.rest.update(g_rest, opt["rest"], rest)
        updates = jax.tree.map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates)
        rest = optax.apply_updates(rest, updates)
        t = (state["step"] + 1).astype(jnp.float32)
        lr = self.schedule(state["step"]) * lr_scale
        live = ((ids > 0) & (ids < R))[:, None]  # padding row 0 and the fill never move
        m = B1 * opt["m"].at[ids].get(mode="fill", fill_value=0) + (1 - B1) * g_rows
        B2 = self.b2
        v = B2 * opt["v"].at[ids].get(mode="fill", fill_value=0) + (1 - B2) * g_rows * g_rows
        step = (m / (1 - B1 ** t)) / (jnp.sqrt(v / (1 - B2 ** t)) + EPS) + self.wd * rows
        new_rows = jnp.where(live, rows - lr * step, rows)
        table = table.at[ids].set(new_rows, mode="drop")
        opt = {"rest": opt_rest, "m": opt["m"].at[ids].set(jnp.where(live, m, 0), mode="drop"),
               "v": opt["v"].at[ids].set(jnp.where(live, v, 0), mode="drop")}
        return loss, norm, self.join(rest, table), opt


def ema_update(ema, params, step, decay: float):
    """The moving average after step ``step`` (0-based) has produced ``params``
    (``Config.ema_decay``): the decay ramps up as (1 + t) / (10 + t) until it reaches ``decay``."""
    t = step.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


def make_train_step(graphdef, loss_fn, tx, compute_dtype=None, shardings=None, ema_decay: float = 0.0):
    """The jitted step; ``shardings`` (a tree of the state's NamedShardings, ``jaxrec.sharding``)
    keeps the new state where the old one lives (a sharded item table stays sharded). With
    ``ema_decay`` the state also holds ``"ema"``, the parameters' moving average."""
    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, batch, key, lr_scale=1.0):
        """``lr_scale`` multiplies the step's updates, i.e. the learning rate (Adam's update is
        linear in it): the host's wall-clock factor of ``schedule="linear_time"``."""
        if isinstance(tx, SparseItemAdam):
            loss, grad_norm, params, opt = tx.step(graphdef, loss_fn, state, batch, key, lr_scale, compute_dtype)
        else:
            def f(params):
                return loss_fn(merge(graphdef, params, compute_dtype), batch, key)

            loss, grads = jax.value_and_grad(f)(state["params"])
            updates, opt = tx.update(grads, state["opt"], state["params"])
            updates = jax.tree.map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates)
            params = optax.apply_updates(state["params"], updates)
            grad_norm = optax.global_norm(grads)
        metrics = {"loss": loss, "grad_norm": grad_norm, "param_norm": optax.global_norm(params)}
        new = {"params": params, "opt": opt, "step": state["step"] + 1}
        if ema_decay:
            new["ema"] = ema_update(state["ema"], params, state["step"], ema_decay)
        if shardings is not None:
            new = jax.lax.with_sharding_constraint(new, shardings)
        return new, metrics

    return train_step
