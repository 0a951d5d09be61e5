"""Losses for next-item training. Every loss averages over real positions only.

``weights`` (B, L) is 1 at positions with a real target and 0 at padding, so padding never
contributes. Logit conventions: ``pos`` (B, L) is the target's logit, ``neg`` (B, L, K)
the sampled negatives' logits, ``logits`` (B, L, V) full-catalog logits (column 0 =
padding, excluded).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e9


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


def full_ce(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Softmax cross-entropy over the whole catalog (SASRec+ / "CE"); column 0 is masked."""
    logits = jnp.asarray(logits, jnp.float32).at[..., 0].set(NEG_INF)
    lse = jax.nn.logsumexp(logits, axis=-1)  # (B, L)
    tgt = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return _mean(lse - tgt, weights)


def sampled_softmax(pos: jax.Array, neg: jax.Array, weights: jax.Array, *,
                    neg_ids: jax.Array, targets: jax.Array,
                    log_q_pos: jax.Array | None = None, log_q_neg: jax.Array | None = None) -> jax.Array:
    """Softmax over [target, K negatives] with logQ correction.

    With negatives drawn from q, ``logit - log q`` makes the sampled softmax an unbiased-in-
    the-limit estimate of the full softmax (Bengio & Senecal 2008; Yi et al. 2019), so log q
    is SUBTRACTED. A negative equal to the target (an accidental hit) is masked out.
    """
    if log_q_pos is not None:
        pos = pos - log_q_pos
        neg = neg - log_q_neg
    neg = jnp.where(neg_ids == targets[..., None], NEG_INF, neg)  # (B, L, K)
    all_logits = jnp.concatenate([pos[..., None], neg], axis=-1).astype(jnp.float32)
    per = jax.nn.logsumexp(all_logits, axis=-1) - pos.astype(jnp.float32)
    return _mean(per, weights)
