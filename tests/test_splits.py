import numpy as np
import pytest

from jaxrec.data import Interactions, build_sequences, last_out, leave_one_out, make_split, temporal_split
from jaxrec.errors import DataError


def data():
    u = [1] * 5 + [2] * 2 + [3] * 3
    i = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    t = [1, 2, 3, 4, 5, 1, 9, 2, 6, 7]
    return build_sequences(Interactions(np.array(u), np.array(i), np.array(t)))


def test_leave_one_out():
    d = data()
    s = leave_one_out(d)
    assert s.test.user.tolist() == [0, 2]  # user 2 (length 2) is training-only
    assert "fewer than 3" in s.notes[0]
    # user 1: s = 1 2 3 4 5 -> test 1234->5, valid 123->4, train 123
    assert d.items[s.test.start[0]:s.test.end[0]].tolist() == [1, 2, 3, 4]
    assert s.test.target[0] == 5 and s.valid.target[0] == 4
    assert d.items[s.train_start[0]:s.train_end[0]].tolist() == [1, 2, 3]
    assert d.items[s.train_start[1]:s.train_end[1]].tolist() == [6, 7]  # short user: all train
    counts = s.train_item_counts()
    assert counts[4] == 0 and counts[5] == 0 and counts[1] == 1 and counts[7] == 1


def test_last_out():
    d = data()
    s = last_out(d)
    # every user with 2+ events is tested on its last item; training keeps everything before it
    assert s.test.user.tolist() == [0, 1, 2]
    assert s.test.target.tolist() == [5, 7, 10]
    assert d.items[s.test.start[0]:s.test.end[0]].tolist() == [1, 2, 3, 4]
    assert d.items[s.train_start[0]:s.train_end[0]].tolist() == [1, 2, 3, 4]
    assert d.items[s.train_start[1]:s.train_end[1]].tolist() == [6]
    assert s.valid is s.test and "selection on test" in s.kind  # no validation split, and it says so
    assert s.train_item_counts()[5] == 0  # test targets never train
    assert make_split(d, "last_out").test.target.tolist() == [5, 7, 10]
    assert make_split(d).kind == "leave-one-out"
    with pytest.raises(DataError, match="unknown split"):
        make_split(d, "random")


def test_temporal_split():
    d = data()
    s = temporal_split(d, test_time=5, valid_time=3)
    # the first event at or after the cut, for users with events on both sides
    assert s.test.target.tolist() == [5, 7, 9]
    assert s.valid.target.tolist() == [3, 7, 9]
    assert d.items[s.train_start[0]:s.train_end[0]].tolist() == [1, 2]  # before the valid cut
    with pytest.raises(DataError):
        temporal_split(d, test_time=1, valid_time=5)


def test_temporal_needs_time():
    d = build_sequences(Interactions(np.array([1, 1, 1]), np.array([1, 2, 3])))
    with pytest.raises(DataError, match="timestamps"):
        temporal_split(d, 5)


def test_temporal_split_is_reachable_by_name():
    d = data()
    s = make_split(d, "temporal:5,3")
    want = temporal_split(d, test_time=5, valid_time=3)
    assert s.test.target.tolist() == want.test.target.tolist() and s.kind == "temporal"
    for bad in ("temporal:", "temporal:x", "temporal:1,2,3"):
        with pytest.raises(DataError, match="temporal:TEST_TIME"):
            make_split(d, bad)
