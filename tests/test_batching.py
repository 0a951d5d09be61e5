import numpy as np
import pytest

from jaxrec.data import Interactions, build_sequences, leave_one_out, load_dataset
from jaxrec.data.batching import NegativeSampler, RankBatches, TrainBatches, outside_draws, outside_negatives, prefetch
from jaxrec.errors import UserError


def test_batches_fixed_shape_aligned_and_weighted():
    d = build_sequences(Interactions(np.repeat([1, 2, 3], [6, 4, 9]), np.arange(1, 20)))
    split = leave_one_out(d)
    tb = TrainBatches(split, max_len=5, batch_size=2, num_negatives=3, seed=0)
    batches = list(tb.epoch(0))
    assert len(batches) == 2 == tb.batches_per_epoch
    for b in batches:
        assert b["inputs"].shape == b["targets"].shape == b["weights"].shape == (2, 5)
        assert b["negatives"].shape == (2, 5, 3)
        assert not (b["negatives"] == b["targets"][..., None]).any()
    rows = np.concatenate([b["inputs"] for b in batches])
    tg = np.concatenate([b["targets"] for b in batches])
    w = np.concatenate([b["weights"] for b in batches])
    # user 1 trains on 1..4 (6 items minus 2 held out): inputs 1 2 3, targets 2 3 4
    i = [k for k in range(len(rows)) if 1 in rows[k]][0]
    assert rows[i].tolist() == [0, 0, 1, 2, 3] and tg[i].tolist() == [0, 0, 2, 3, 4]
    assert w[i].tolist() == [0, 0, 1, 1, 1]
    # user 3 trains on 11..17 (7 items): the most recent 5 inputs
    j = [k for k in range(len(rows)) if 16 in rows[k]][0]
    assert rows[j].tolist() == [12, 13, 14, 15, 16] and tg[j].tolist() == [13, 14, 15, 16, 17]
    assert w.sum() == 3 + 1 + 5 + 0  # padded row has weight 0
    assert tb.targets_per_epoch == 3 + 1 + 5


def test_epoch_order_is_deterministic_and_resumable():
    split = leave_one_out(load_dataset("synthetic:tiny"))
    tb = TrainBatches(split, max_len=8, batch_size=16, num_negatives=2, seed=5)
    full = list(tb.epoch(3))
    resumed = list(tb.epoch(3, start_batch=4))
    for a, b in zip(full[4:], resumed):
        for k in a:
            assert np.array_equal(a[k], b[k])
    other = next(tb.epoch(4))
    assert not np.array_equal(full[0]["inputs"], other["inputs"])


def test_popularity_sampler_follows_counts():
    counts = np.array([0, 100, 1, 0, 899])
    s = NegativeSampler(4, "popularity", counts)
    x = s.sample(np.random.default_rng(0), np.full(20000, 2), 1).ravel()
    assert set(np.unique(x).tolist()) <= {1, 4}  # never the positive 2, never count-0 item 3
    assert abs((x == 4).mean() - 899 / 999) < 0.02


def test_prefetch_preserves_order_and_errors():
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def bad():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(bad()))


def test_rank_batches_shapes_positive_first_and_hard_negatives():
    split = leave_one_out(load_dataset("synthetic:tiny"))
    pool = np.arange(1, 11)

    def hard(items, start, end):  # a fixed "top-N" and scores = item id / 100
        return np.tile(pool, (len(start), 1)), np.tile(np.arange(split.data.num_items + 1) / 100, (len(start), 1))

    rb = RankBatches(split, 20, 16, 8, "popularity", seed=1, cuts_per_user=2, retriever=hard, hard_fraction=0.5,
                     prior=True)
    batches = list(rb.epoch(0))
    assert len(batches) == rb.batches_per_epoch
    s = split  # every (history window, next item) pair of the training sequences
    cuts = set()
    for u in range(len(s.train_start)):
        seq = s.data.items[s.train_start[u]:s.train_end[u]]
        cuts |= {(tuple(seq[max(0, t - 20):t].tolist()), int(seq[t])) for t in range(1, len(seq))}
    for b in batches:
        assert b["history"].shape == (16, 20) and b["candidates"].shape == (16, 9)
        real = b["weights"] > 0
        c = b["candidates"][real]
        np.testing.assert_allclose(b["prior"][real], c / 100, rtol=1e-6)  # the retriever's score per candidate
        assert (c[:, 1:] != c[:, :1]).all()  # no negative equals its positive
        # the 4 hard negatives come from the pool; one is a sampled stand-in only where the
        # positive itself is in the pool (a hard negative equal to it is replaced)
        hard_part = c[:, 1:5]
        outside = (~np.isin(hard_part, pool)).sum(1)
        assert (outside <= np.isin(c[:, 0], pool)).all()
        # the positive is the item right after the history, in some user's training sequence
        for row, cand in zip(b["history"][real], c):
            assert (tuple(row[row > 0].tolist()), int(cand[0])) in cuts
    again = list(RankBatches(split, 20, 16, 8, "popularity", seed=1, cuts_per_user=2, retriever=hard).epoch(0))
    assert "prior" not in again[0]
    np.testing.assert_array_equal(batches[3]["candidates"], again[3]["candidates"])


def test_rank_batches_length_buckets_keep_every_example_once_and_the_batch_count():
    split = leave_one_out(load_dataset("synthetic:small"))
    flat = RankBatches(split, 200, 64, 4, "popularity", seed=3, cuts_per_user=2, length_buckets=[])
    bucketed = RankBatches(split, 200, 64, 4, "popularity", seed=3, cuts_per_user=2, length_buckets=None)
    assert bucketed.windows == [20, 50, 100, 200] and flat.windows == [200]  # data_windows of synthetic:small

    def examples(rb):  # (history without padding, positive) of every real example of an epoch
        out, widths = [], set()
        for b in rb.epoch(0):
            widths.add(b["history"].shape[1])
            real = b["weights"] > 0
            out += [(tuple(h[h > 0].tolist()), int(c[0])) for h, c in zip(b["history"][real], b["candidates"][real])]
        return sorted(out), widths

    a, wa = examples(flat)
    b, wb = examples(bucketed)
    assert a == b  # the same cuts, none shortened: only grouped differently
    assert wa == {200} and wb <= {20, 50, 100, 200} and len(wb) > 1
    assert sum(1 for _ in bucketed.epoch(0)) == bucketed.batches_per_epoch == flat.batches_per_epoch


def test_data_windows_minimise_the_positions_computed():
    from jaxrec.data.batching import data_windows
    # 6 sequences of 5 positions, 2 of 40, 1 of 50; max_len 50: divisors 10, 25, 50
    pos = np.array([5] * 6 + [40, 40, 50])
    assert data_windows(pos, 50, buckets=2) == [10, 50]  # 6 x 10 + 3 x 50 = 210 (25, 50: 300)
    assert data_windows(pos, 50, buckets=4) == [10, 50]  # 25 would hold nothing: not a window
    assert data_windows(np.array([50, 50]), 50) == [50]  # one window when shorter ones save nothing
    assert data_windows(np.array([3, 300]), 200, buckets=3) == [8, 200]  # capped at max_len
    # a brute force over every choice of windows agrees
    import itertools
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.integers(1, 201, size=rng.integers(1, 40))
        cands = [w for w in range(8, 200) if 200 % w == 0]

        def cost(ws):
            ws = np.array(sorted(ws) + [200])
            return int(ws[np.searchsorted(ws, pos)].sum())
        best = min(cost(list(c)) for r in range(4) for c in itertools.combinations(cands, r))
        assert cost([w for w in data_windows(pos, 200) if w < 200]) == best


def test_outside_negatives_are_distinct_unseen_and_uniform():
    """SASRec+ 3000's draw: k distinct items from outside the row's window, each unseen item
    equally likely (a chi-square-free check: every unseen item's count within 5 sigma of the
    mean over many rows); a row with fewer than k unseen items gets them all, then padding."""
    n, k = 12, 5
    seq = np.array([[0, 0, 3, 5, 3, 7]] * 4000)  # seen: 3, 5, 7 -> 9 unseen items
    negs = outside_negatives(seq, n, k, row_seed=[1, 2])
    assert negs.shape == (4000, k) and negs.dtype == np.int32
    assert all(len(set(r)) == k for r in negs.tolist())
    assert not np.isin(negs, [0, 3, 5, 7]).any()
    counts = np.bincount(negs.ravel(), minlength=n + 1)[[i for i in range(1, n + 1) if i not in (3, 5, 7)]]
    mean = 4000 * k / 9
    assert np.abs(counts - mean).max() < 5 * np.sqrt(mean)
    short = outside_negatives(np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9]]), n, k, row_seed=0)
    assert sorted(short[0].tolist()) == [0, 0, 10, 11, 12]  # three unseen items, then padding
    # the same row of a batch draws the same negatives whatever block of rows it is built in
    np.testing.assert_array_equal(outside_negatives(seq[2:4], n, k, [1, 2], first_row=2), negs[2:4])


@pytest.mark.parametrize("seen", [[3, 5, 7], [1, 2, 3, 4, 5, 6, 7, 8]], ids=["redraw", "complement"])
def test_outside_draws_are_unseen_and_uniform_at_every_position(seen):
    """SASRec BCE's draw: at every position, independent uniform draws from outside the row's
    window (both ways: redrawing the few that hit the window, or, when most items are in it,
    drawing from the rest), every unseen item equally likely (within 5 sigma over many rows);
    a window that holds every item gets padding."""
    n, k = 12, 3
    seq = np.tile([0] * max(0, 5 - len(seen)) + seen, (3000, 1))  # (3000, L + 1), left-padded
    L = seq.shape[1] - 1
    negs = outside_draws(seq, n, k, row_seed=[4, 5])
    assert negs.shape == (3000, L, k) and negs.dtype == np.int32
    assert not np.isin(negs, [0, *seen]).any()
    unseen = [i for i in range(1, n + 1) if i not in seen]
    counts = np.bincount(negs.ravel(), minlength=n + 1)[unseen]
    mean = negs.size / len(unseen)
    assert np.abs(counts - mean).max() < 5 * np.sqrt(mean)
    assert len(np.unique(negs[:, 0, 0])) == len(unseen)  # draws differ between rows
    np.testing.assert_array_equal(outside_draws(seq[5:9], n, k, [4, 5], first_row=5), negs[5:9])
    full = outside_draws(np.array([[1, 2, 3], [3, 2, 0]]), 3, 2, row_seed=0)
    assert (full[0] == 0).all() and (full[1] == 1).all()  # nothing left: padding; one left: it


def test_train_batches_outside_negatives_avoid_the_window():
    split = leave_one_out(load_dataset("synthetic:small"))
    tb = TrainBatches(split, 50, 16, num_negatives=40, seed=3, shared_negatives=True,
                      negatives_outside=True, length_buckets=None)
    for b in list(tb.epoch(0))[:5]:
        negs = b["negatives"]  # (B, 1, K)
        assert negs.shape[1:] == (1, 40)
        for row_in, row_t, row_n in zip(b["inputs"], b["targets"], negs[:, 0]):
            window = np.concatenate([row_in, row_t])
            assert not np.isin(row_n, window[window > 0]).any()
    tb = TrainBatches(split, 50, 16, num_negatives=2, seed=3, negatives_outside=True, length_buckets=None)
    for b in list(tb.epoch(0))[:5]:  # per position: (B, L, K)
        assert b["negatives"].shape == b["inputs"].shape + (2,)
        for row_in, row_t, row_n in zip(b["inputs"], b["targets"], b["negatives"]):
            window = np.concatenate([row_in, row_t])
            assert not np.isin(row_n, window[window > 0]).any()
    with pytest.raises(UserError, match="needs sampler=uniform"):
        TrainBatches(split, 50, 16, num_negatives=40, negatives_outside=True, sampler="popularity")


def test_a_batch_built_in_row_blocks_equals_the_whole_batch():
    """Multi-host training: each process builds only its devices' rows of every batch; the
    blocks, put together, are exactly the batch one process builds (negatives and their
    redraws included), for every window."""
    split = leave_one_out(load_dataset("synthetic:small"))
    for shared, outside in ((False, False), (True, False), (True, True)):
        tb = TrainBatches(split, 50, 16, num_negatives=64, seed=3, shared_negatives=shared,
                          negatives_outside=outside, length_buckets=None)
        whole = list(tb.epoch(1))
        parts = [list(tb.epoch(1, part=(lo, hi, 4))) for lo, hi in ((0, 1), (1, 3), (3, 4))]
        assert len({b["inputs"].shape[1] for b in whole}) > 1  # several windows
        for i, b in enumerate(whole):
            for k in b:
                np.testing.assert_array_equal(np.concatenate([p[i][k] for p in parts]), b[k], err_msg=k)


def test_all_windows_train_every_target_once_and_history_holds_the_whole_sequence():
    """``all_windows``: a training sequence longer than max_len is cut into windows of max_len
    targets from its end, so every (input, target) pair of every sequence is trained exactly
    once an epoch (the default keeps the last max_len); ``with_history``: each row carries its
    user's whole training sequence, whichever window it is."""
    d = build_sequences(Interactions(np.repeat([1, 2, 3], [6, 4, 14]), np.arange(1, 25)))
    split = leave_one_out(d)  # training parts: 1..4, 7..8, 11..22 (12 items: 11 targets)
    pairs = {(a, a + 1) for a in list(range(1, 4)) + [7] + list(range(11, 22))}
    for length_buckets in ((), None):
        tb = TrainBatches(split, max_len=4, batch_size=2, seed=0, all_windows=True, with_history=True,
                          length_buckets=length_buckets)
        got, hist = [], {}
        for b in tb.epoch(0):
            for inp, tg, w, h in zip(b["inputs"], b["targets"], b["weights"], b["history"]):
                got += [(int(i), int(t)) for i, t, x in zip(inp, tg, w) if x]
                if w.any():
                    hist[int(tg[w > 0][0])] = [int(x) for x in h if x]
        assert sorted(got) == sorted(pairs)  # every pair, once
        assert tb.targets_per_epoch == len(pairs) == 3 + 1 + 11
        # user 3's windows (targets 19..22, 15..18, 12..14) all carry 11..22
        assert hist[19] == hist[15] == hist[12] == list(range(11, 23))
    last = TrainBatches(split, max_len=4, batch_size=2, seed=0)
    assert last.targets_per_epoch == 3 + 1 + 4


def test_excluded_history_widens_the_window():
    from jaxrec import losses
    inputs, targets = np.array([[0, 3, 4]]), np.array([[3, 4, 5]])
    history = np.array([[0, 1, 2, 3, 4, 5, 6]])
    assert np.flatnonzero(np.asarray(losses.window_items(inputs, targets, 8))[0]).tolist() == [3, 4, 5]
    got = np.asarray(losses.window_items(inputs, targets, 8, history))[0]
    assert np.flatnonzero(got).tolist() == [1, 2, 3, 4, 5, 6]
