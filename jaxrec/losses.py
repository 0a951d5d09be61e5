"""Losses for next-item training. Every loss averages over real positions only.

``weights`` (B, L) is 1 at positions with a real target and 0 at padding, so padding never
contributes. Logit conventions: ``pos`` (B, L) is the target's logit, ``neg`` (B, L, K)
the sampled negatives' logits, ``logits`` (B, L, V) full-catalog logits (column 0 =
padding, excluded).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrec.models.layers import NEG_INF  # finite: a fully masked softmax row stays NaN-free


def _mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    return (x * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def bce(pos: jax.Array, neg: jax.Array, weights: jax.Array) -> jax.Array:
    """SASRec's loss: -log s(pos) - sum_k log(1 - s(neg_k)), with s the sigmoid."""
    per = -jax.nn.log_sigmoid(pos) - jax.nn.log_sigmoid(-neg).sum(-1)
    return _mean(per, weights)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's beta = alpha * (t * (1 - 1/alpha) + 1/alpha), alpha = K / (N - 1).

    t = 0 gives beta = 1 (plain BCE); t = 1 gives beta = alpha, which makes the predicted
    probabilities calibrated under uniform negative sampling.
    """
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(pos: jax.Array, neg: jax.Array, weights: jax.Array, beta: float) -> jax.Array:
    """Generalised BCE (Petrov & Macdonald 2023): -log(s(pos)^beta) - sum_k log(1 - s(neg_k))."""
    per = -beta * jax.nn.log_sigmoid(pos) - jax.nn.log_sigmoid(-neg).sum(-1)
    return _mean(per, weights)


def catalog_ce(h: jax.Array, table: jax.Array, targets: jax.Array, weights: jax.Array,
               chunk: int = 256, exclude: jax.Array | None = None, teacher: tuple | None = None,
               distill: float = 0.0, temperature: float = 1.0, future: int = 0,
               future_weight: float = 0.0) -> jax.Array:
    """Softmax cross-entropy over the whole catalog (SASRec+ / "CE"); item 0 is not a class.

    ``h`` (B, L, D) hidden states, ``table`` (V, D) item embeddings (row 0 = padding),
    ``targets``/``weights`` (B, L). ``exclude`` (B, V) bool, optional: items that are not a
    class at any position of that row except where they are the target (the sequence's own
    items: ``window_items``), so the loss never pushes down an item the user chose elsewhere
    in the window. Never materialises the (B, L, V) logits: the weighted positions are
    processed ``chunk`` at a time (the others, padding or a cloze step's unmasked positions, are
    sorted past them and never scored), and since the loss is a terminal node its gradient is
    computed in the same pass (softmax - one-hot, times the position's weight) and returned
    by the VJP scaled by the incoming cotangent. Each chunk's (chunk, V) block stays in cache,
    so the step is three catalog matmuls and little else: ~20% faster than logits + logsumexp
    + take_along_axis on a 2-core CPU at ml-1m size (whose backward scatters into and
    transposes the full logits), and memory no longer grows with B * L * V.

    ``teacher`` = (``ht`` (B, L, Dt), ``table_t`` (V, Dt)), optional: distillation (Hinton et
    al. 2015). The teacher's logits at a position are ``ht . table_t``, over the same classes;
    the loss becomes (1 - ``distill``) x the cross-entropy above + ``distill`` x T^2 x the
    cross-entropy of softmax(student / T) against softmax(teacher / T), T = ``temperature``
    (T^2 keeps the gradient's scale independent of T). In the same chunked pass: neither
    side's (B, L, V) logits are ever held whole. The teacher gets no gradient.

    ``future`` = K > 0: each position also predicts the K items after its target in the window
    (PinnerFormer's dense all-action loss, Pancha et al. 2022, over a window of K), each at weight
    ``future_weight`` / K, with the same logits, so it costs a gather and a scatter per chunk,
    not another catalog matmul. Why: on ML-1M many ratings share a timestamp and their order is
    arbitrary, so "one of the next few" is the signal the next item's position carries. With
    ``exclude`` each future target y gets its own classes, y and the items outside the window
    (the row's other window items, the position's own target included, are no class for it), the
    same rule the target has; without, all K share the position's softmax.
    """
    h, table, targets, weights = map(jnp.asarray, (h, table, targets, weights))
    B, L, D = h.shape
    n = B * L
    pad = (-n) % chunk
    scale = (weights.astype(jnp.float32) / jnp.maximum(weights.sum(), 1.0)).reshape(n)  # (n,)
    # The weighted positions first (a stable sort keeps their order): the chunks past them are
    # skipped (_ce_chunks), so padding and unmasked cloze positions cost no catalog matmul.
    order = jnp.argsort(scale == 0, stable=True)  # (n,)

    def chunked(x):  # (n, ...) -> (C, c, ...) in ``order``, zero-padded to whole chunks
        x = x[order]
        return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(-1, chunk, *x.shape[1:])

    hs = chunked(h.reshape(n, D))  # (C, c, D)
    ts = chunked(targets.reshape(n))  # (C, c)
    ss = chunked(scale)  # (C, c)
    rs = None  # (C, c) the row of each position, when rows exclude items
    if exclude is not None:
        rs = chunked(jnp.repeat(jnp.arange(B), L))
        exclude = jnp.asarray(exclude, bool)
    hts = table_t = None
    if teacher is not None:
        ht, table_t = (jax.lax.stop_gradient(jnp.asarray(x)) for x in teacher)
        hts = chunked(ht.reshape(n, -1))  # (C, c, Dt)
    a = float(distill) if teacher is not None else 0.0
    fs = fws = None  # (C, c, K) the future targets and their weights
    if future:
        ids, valid = future_targets(targets, weights, future)  # (B, L, K)
        fws = chunked((valid * (float(future_weight) / future)).reshape(n, future))
        fs = chunked(ids.reshape(n, future))
    return _catalog_ce(hs, table, ts, ss, rs, exclude, hts, table_t, fs, fws, a, float(temperature))


def future_targets(targets: jax.Array, weights: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(B, L, k) ids and (B, L, k) float validity: at position t, the targets of positions t+1..t+k
    of the same window (0 / invalid past its end or where the position itself has no target).
    Windows are left-padded, so a window's last positions simply run out of future."""
    targets = jnp.asarray(targets)
    real = jnp.asarray(weights) > 0  # (B, L)
    ids, valid = [], []
    for j in range(1, k + 1):
        ids.append(jnp.pad(targets[:, j:], ((0, 0), (0, j))))
        valid.append(jnp.pad(real[:, j:], ((0, 0), (0, j))) & real)
    return jnp.stack(ids, -1), jnp.stack(valid, -1).astype(jnp.float32)


def window_items(inputs: jax.Array, targets: jax.Array, num_rows: int,
                 history: jax.Array | None = None) -> jax.Array:
    """(B, V) bool: the items in each row's training window (inputs and targets; never the
    padding column, which ``catalog_ce`` leaves out anyway), and with ``history`` (B, M) the
    row's other training items too (before and after the window)."""
    b = jnp.arange(inputs.shape[0])[:, None]
    seen = jnp.zeros((inputs.shape[0], num_rows), bool).at[b, inputs].set(True).at[b, targets].set(True)
    if history is not None:
        seen = seen.at[b, history].set(True)
    return seen.at[:, 0].set(False)


def _softmax_parts(logits):
    """(max, exp(logits - max), their sum) along the last axis of (c, V) logits."""
    top = logits.max(-1, keepdims=True)
    ex = jnp.exp(logits - top)
    return top, ex, ex.sum(-1, keepdims=True)


def _ce_chunks(hs, table, ts, ss, rs, exclude, hts, table_t, fs, fws, a, temp):
    """-> (weighted loss sum, dloss/dh (C, c, D), dloss/dtable (V, D)), one chunk at a time.
    With a teacher (``hts`` (C, c, Dt), ``table_t``): the gradient of the loss in the logits is
    (1 - a)(p - onehot) + a T (p_T - q_T), p_T and q_T the student's and teacher's softmax at
    temperature T. With future targets (``fs``, ``fws`` (C, c, K)): + (1 - a) sum_y w_y (p_y -
    onehot(y)), p_y the softmax over y's own classes."""
    cols = jnp.arange(table.shape[0])
    not_class = (cols == 0)[None, :]  # (1, V)
    ce_w = 1.0 - a  # the hard target's share

    def chunk_step(d_table, xs):
        hc, tc, sc, rc, htc, fc, fwc = xs  # (c, D), (c,), (c,), (c,), (c, Dt), (c, K), (c, K)
        out = not_class
        if exclude is not None:  # the row's window items, but for this position's own target
            out = out | (exclude[rc] & (cols[None, :] != tc[:, None]))  # (c, V)
        raw = (hc @ table.T).astype(jnp.float32)  # (c, V)
        logits = jnp.where(out, NEG_INF, raw)
        top, ex, total = _softmax_parts(logits)
        et = table[tc]  # (c, D)
        target_logit = (hc * et).sum(-1).astype(jnp.float32)
        per = ce_w * (jnp.log(total[:, 0]) + top[:, 0] - target_logit)  # (c,)
        g = ex * (ce_w / total)  # (c, V) dloss/dlogits but the one-hot
        if htc is not None:
            lt = jnp.where(out, NEG_INF, (htc @ table_t.T).astype(jnp.float32)) / temp  # (c, V)
            _, eq, tq = _softmax_parts(lt)
            q = eq / tq  # the teacher's softmax (0 at non-classes)
            st = logits / temp
            topt, ext, totalt = (top / temp, ex, total) if temp == 1.0 else _softmax_parts(st)
            per = per + a * temp ** 2 * (jnp.log(totalt[:, 0]) + topt[:, 0] - (q * st).sum(-1))
            g = g + (a * temp) * (ext / totalt - q)
        if fc is not None:
            wf = ce_w * fwc  # (c, K)
            lf = jnp.take_along_axis(raw, fc, axis=1)  # (c, K) the future targets' logits
            if exclude is not None:  # y's classes: y and the items outside the window
                ex_out = jnp.where(cols[None, :] == tc[:, None], 0.0, ex)  # (c, V) without the target
                ey = jnp.exp(lf - top)  # (c, K)
                denom = jnp.maximum(ex_out.sum(-1, keepdims=True) + ey, 1e-30)  # (c, K)
                g = g + ex_out * (wf / denom).sum(-1, keepdims=True)
                g = g.at[jnp.arange(g.shape[0])[:, None], fc].add(wf * ey / denom)
            else:  # the position's own softmax
                denom = total  # (c, 1)
                g = g + ex * (wf.sum(-1, keepdims=True) / total)
            per = per + (wf * (jnp.log(denom) + top - lf)).sum(-1)
        loss = (per * sc).sum()
        p = (g * sc[:, None]).astype(table.dtype)  # weighted (c, V)
        dh = p @ table - ((ce_w * sc)[:, None] * et).astype(table.dtype)  # (c, D)
        d_table = d_table + (p.T @ hc).astype(jnp.float32)
        d_table = d_table.at[tc].add(-((ce_w * sc)[:, None] * hc).astype(jnp.float32))
        if fc is not None:  # the future targets' one-hots
            wfs = (wf * sc[:, None]).astype(table.dtype)  # (c, K)
            dh = dh - jnp.einsum("ck,ckd->cd", wfs, table[fc])
            d_table = d_table.at[fc].add(-(wfs[..., None] * hc[:, None, :]).astype(jnp.float32))
        return d_table, (loss, dh.astype(hc.dtype))

    # Only the chunks up to the last one holding a weighted position: a chunk of zero weights adds
    # nothing to the loss or to either gradient. A loop with a data-dependent trip count has no
    # reverse-mode derivative, and needs none: the gradient is computed here, in the forward.
    has_weight = (ss != 0).any(-1)  # (C,)
    live = jnp.max(jnp.where(has_weight, jnp.arange(1, ss.shape[0] + 1), 0))

    def body(i, carry):
        d_table, loss, dh = carry
        xs = jax.tree.map(lambda x: x[i], (hs, ts, ss, rs, hts, fs, fws))  # None stays None
        d_table, (lc, dhc) = chunk_step(d_table, xs)
        return d_table, loss + lc, jax.lax.dynamic_update_index_in_dim(dh, dhc, i, 0)

    d_table, loss, dh = jax.lax.fori_loop(
        0, live, body, (jnp.zeros(table.shape, jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros_like(hs)))
    return loss, dh, d_table.astype(table.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(10, 11))
def _catalog_ce(hs, table, ts, ss, rs, exclude, hts, table_t, fs, fws, a, temp):
    return _ce_chunks(hs, table, ts, ss, rs, exclude, hts, table_t, fs, fws, a, temp)[0]


def _catalog_ce_fwd(hs, table, ts, ss, rs, exclude, hts, table_t, fs, fws, a, temp):
    loss, dh, d_table = _ce_chunks(hs, table, ts, ss, rs, exclude, hts, table_t, fs, fws, a, temp)
    return loss, (dh, d_table)


def _catalog_ce_bwd(a, temp, res, g):  # the loss is a scalar: its gradient was computed in the forward
    dh, d_table = res
    return (dh * g.astype(dh.dtype), d_table * g.astype(d_table.dtype)) + (None,) * 8


_catalog_ce.defvjp(_catalog_ce_fwd, _catalog_ce_bwd)


def sampled_softmax(pos: jax.Array, neg: jax.Array, weights: jax.Array, *,
                    neg_ids: jax.Array, targets: jax.Array,
                    log_q_pos: jax.Array | None = None, log_q_neg: jax.Array | None = None) -> jax.Array:
    """Softmax over [target, K negatives] with logQ correction.

    With negatives drawn from q, ``logit - log q`` makes the sampled softmax an unbiased-in-
    the-limit estimate of the full softmax (Bengio & Senecal 2008; Yi et al. 2019), so log q
    is SUBTRACTED. A negative equal to the target (an accidental hit) is masked out, and so is
    a padding negative (id 0: a draw that ran out of items).
    """
    if log_q_pos is not None:
        pos = pos - log_q_pos
        neg = neg - log_q_neg
    neg = jnp.where((neg_ids == targets[..., None]) | (neg_ids == 0), NEG_INF, neg)  # (B, L, K)
    all_logits = jnp.concatenate([pos[..., None], neg], axis=-1).astype(jnp.float32)
    per = jax.nn.logsumexp(all_logits, axis=-1) - pos.astype(jnp.float32)
    return _mean(per, weights)
