"""Split specs, RecBole's counting rule, and exact split assignments on hand-made logs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from advrec.data import SplitSpec, parse_split
from advrec.data.splits import DROPPED, TEST, TRAIN, VALID, assign_split, split_counts
from advrec.errors import AdvrecError


def test_parse_split():
    assert parse_split("random:0.8,0.1,0.1") == SplitSpec(
        "random", (0.8, 0.1, 0.1), "random:0.8,0.1,0.1"
    )
    assert parse_split("loo") == SplitSpec("loo", None, "loo")
    # One share leaves exactly 0.1 each, not 0.09999999999999998.
    assert parse_split("time:0.8").ratios == (0.8, 0.1, 0.1)
    assert parse_split("random:0.9,0.1").ratios == (0.9, 0.0, 0.1)
    assert parse_split("time:0.8").to_dict() == {
        "kind": "time",
        "ratios": [0.8, 0.1, 0.1],
        "spec": "time:0.8",
    }


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "shuffle:0.8",
        "random",
        "random:a,b",
        "random:0.8,0.1,0.05,0.05",
        "random:0.8,-0.1,0.3",
        "random:0,0.5,0.5",
        "random:1,0.1,0",
        "time:1.0",
        "loo:2",
        "random:nan,0.1,0.1",
    ],
)
def test_bad_split_spec_names_the_option(spec):
    with pytest.raises(AdvrecError, match=r"--split/data\.split: bad split"):
        parse_split(spec)


# (n, counts) for 8:1:1, users of 1..12 interactions: 1 cannot be split (train keeps it), 2 gets
# a test item but no valid item, and 10 has exact 1.0 shares that need no bump.
EIGHT_ONE_ONE = [
    (1, (1, 0, 0)),
    (2, (1, 0, 1)),
    (3, (1, 1, 1)),
    (4, (2, 1, 1)),
    (5, (3, 1, 1)),
    (6, (4, 1, 1)),
    (7, (5, 1, 1)),
    (8, (6, 1, 1)),
    (9, (7, 1, 1)),
    (10, (8, 1, 1)),
    (11, (9, 1, 1)),
    (12, (10, 1, 1)),
]


@pytest.mark.parametrize(("n", "counts"), EIGHT_ONE_ONE)
def test_split_counts_8_1_1_by_hand(n, counts):
    assert split_counts(n, (0.8, 0.1, 0.1)) == counts


# RecBole 1.2.1's own counts: its ``Dataset.split_by_ratio`` (ratios normalised, then
# ``_calcu_split_ids``) run on each (n, ratios), taken from the recbole-1.2.1 wheel, not rewritten
# here. Float rounding shows (0.1 * 30 is 3.0000000000000004, 0.1 * 20 exactly 2.0).
RECBOLE_COUNTS = {
    (0.8, 0.1, 0.1): {
        1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 4: (2, 1, 1), 5: (3, 1, 1), 6: (4, 1, 1),
        7: (5, 1, 1), 9: (7, 1, 1), 10: (8, 1, 1), 11: (9, 1, 1), 13: (11, 1, 1), 19: (17, 1, 1),
        20: (16, 2, 2), 21: (17, 2, 2), 29: (25, 2, 2), 30: (24, 3, 3), 31: (25, 3, 3),
        49: (41, 4, 4), 99: (81, 9, 9), 101: (81, 10, 10), 199: (161, 19, 19), 333: (267, 33, 33),
        399: (321, 39, 39),
    },
    (0.7, 0.2, 0.1): {
        1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 4: (2, 1, 1), 5: (3, 1, 1), 6: (4, 1, 1),
        7: (5, 1, 1), 9: (7, 1, 1), 10: (7, 2, 1), 11: (8, 2, 1), 13: (10, 2, 1), 19: (15, 3, 1),
        20: (14, 4, 2), 21: (15, 4, 2), 29: (22, 5, 2), 30: (21, 6, 3), 31: (22, 6, 3),
        49: (36, 9, 4), 99: (71, 19, 9), 101: (71, 20, 10), 199: (141, 39, 19), 333: (234, 66, 33),
        399: (281, 79, 39),
    },
    (0.6, 0.2, 0.2): {
        1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 4: (2, 1, 1), 5: (3, 1, 1), 6: (4, 1, 1),
        7: (5, 1, 1), 9: (7, 1, 1), 10: (6, 2, 2), 11: (7, 2, 2), 13: (9, 2, 2), 19: (13, 3, 3),
        20: (12, 4, 4), 21: (13, 4, 4), 29: (19, 5, 5), 30: (18, 6, 6), 31: (19, 6, 6),
        49: (31, 9, 9), 99: (61, 19, 19), 101: (61, 20, 20), 199: (121, 39, 39),
        333: (201, 66, 66), 399: (241, 79, 79),
    },
    (8, 1, 1): {
        1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 4: (2, 1, 1), 5: (3, 1, 1), 6: (4, 1, 1),
        7: (5, 1, 1), 9: (7, 1, 1), 10: (8, 1, 1), 11: (9, 1, 1), 13: (11, 1, 1), 19: (17, 1, 1),
        20: (16, 2, 2), 21: (17, 2, 2), 29: (25, 2, 2), 30: (24, 3, 3), 31: (25, 3, 3),
        49: (41, 4, 4), 99: (81, 9, 9), 101: (81, 10, 10), 199: (161, 19, 19), 333: (267, 33, 33),
        399: (321, 39, 39),
    },
    (0.9, 0.0, 0.1): {
        1: (1, 0, 0), 2: (1, 0, 1), 3: (2, 0, 1), 4: (3, 0, 1), 5: (4, 0, 1), 6: (5, 0, 1),
        7: (6, 0, 1), 9: (8, 0, 1), 10: (9, 0, 1), 11: (10, 0, 1), 13: (12, 0, 1), 19: (18, 0, 1),
        20: (18, 0, 2), 21: (19, 0, 2), 29: (27, 0, 2), 30: (27, 0, 3), 31: (28, 0, 3),
        49: (45, 0, 4), 99: (90, 0, 9), 101: (91, 0, 10), 199: (180, 0, 19), 333: (300, 0, 33),
        399: (360, 0, 39),
    },
    (0.5, 0.3, 0.2): {
        1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 4: (2, 1, 1), 5: (3, 1, 1), 6: (4, 1, 1),
        7: (4, 2, 1), 9: (6, 2, 1), 10: (5, 3, 2), 11: (6, 3, 2), 13: (8, 3, 2), 19: (11, 5, 3),
        20: (10, 6, 4), 21: (11, 6, 4), 29: (16, 8, 5), 30: (15, 9, 6), 31: (16, 9, 6),
        49: (26, 14, 9), 99: (51, 29, 19), 101: (51, 30, 20), 199: (101, 59, 39),
        333: (168, 99, 66), 399: (201, 119, 79),
    },
}


@pytest.mark.parametrize("ratios", list(RECBOLE_COUNTS))
def test_split_counts_match_recbole(ratios):
    for n, counts in RECBOLE_COUNTS[ratios].items():
        assert split_counts(n, ratios) == counts, n


def test_min_interactions():
    assert parse_split("random:0.8,0.1,0.1").min_interactions() == 3
    assert parse_split("random:0.9,0.1").min_interactions() == 2
    assert parse_split("loo").min_interactions() == 3


def _log(sizes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """Users 0.. with the given numbers of interactions, interleaved so file order != user order."""
    user = np.concatenate([np.full(n, u) for u, n in enumerate(sizes)])
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(user))
    user = user[perm]
    item = np.arange(len(user)) % 7
    timestamp = rng.integers(0, 50, len(user))
    names = pa.array([f"u{u}" for u in range(len(sizes))])
    return user, item, timestamp, names


def _per_user(parts: np.ndarray, user: np.ndarray) -> list[tuple[int, int, int]]:
    return [
        tuple(int(((user == u) & (parts == p)).sum()) for p in (TRAIN, VALID, TEST))
        for u in range(user.max() + 1)
    ]


def test_random_split_exact_per_user_counts():
    sizes = list(range(2, 13))
    user, item, timestamp, names = _log(sizes)
    spec = parse_split("random:0.8,0.1,0.1")
    parts = assign_split(spec, user, item, timestamp, 0, names)
    assert _per_user(parts, user) == [c for n, c in EIGHT_ONE_ONE if n >= 2]
    # The seed picks which interactions: the same seed gives the same split, another a new one.
    assert np.array_equal(parts, assign_split(spec, user, item, timestamp, 0, names))
    assert not np.array_equal(parts, assign_split(spec, user, item, timestamp, 1, names))


def test_random_split_user_without_test_item_is_named():
    user, item, timestamp, names = _log([5, 1, 1])
    with pytest.raises(
        AdvrecError,
        match=r"user 'u1' has 1 interaction: split 'random:0.8,0.1,0.1' leaves it no test item "
        r"\(and 1 more users\); filter with --kcore 3",
    ):
        assign_split(parse_split("random:0.8,0.1,0.1"), user, item, timestamp, 0, names)


def test_loo_by_time_ties_by_file_order():
    user = np.array([0, 0, 0, 0, 1, 1, 1, 0, 2, 2])
    timestamp = np.array([5, 9, 9, 1, 3, 2, 7, 3, 4, 4])
    parts = assign_split(
        parse_split("loo"), user, np.arange(10), timestamp, 0, pa.array(list("abc"))
    )
    # User 0 in time order: rows 3 (t1), 7 (t3), 0 (t5), 1 (t9), 2 (t9, later in the file).
    # User 2 has two interactions at the same time: the later row is the test item, no valid.
    assert parts.tolist() == [TRAIN, VALID, TEST, TRAIN, VALID, TRAIN, TEST, TRAIN, TRAIN, TEST]


def test_loo_user_with_one_interaction_is_named():
    user = np.array([0, 0, 0, 1])
    with pytest.raises(
        AdvrecError,
        match=r"user 'b' has 1 interaction: split 'loo' leaves it no test item; filter with --kcore 3",
    ):
        assign_split(parse_split("loo"), user, np.arange(4), np.arange(4), 0, pa.array(["a", "b"]))


def test_time_split_global_cut_drops_unseen():
    # Ten interactions in time order t=0..9 (file order shuffled): 8 train, 1 valid, 1 test.
    timestamp = np.array([9, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    user = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    item = np.array([0, 0, 1, 1, 2, 2, 3, 3, 0, 1])
    parts = assign_split(parse_split("time:0.8"), user, item, timestamp, 0, pa.array(list("abcd")))
    # t=8 (row 9, user 3 unseen in train) is dropped from valid; t=9 (row 0, user 0) is test.
    assert parts.tolist() == [TEST, TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, DROPPED]


def test_time_split_with_empty_test_set_fails():
    user = np.array([0, 0, 0, 0, 1])  # the last interaction belongs to a user unseen in train
    with pytest.raises(AdvrecError, match=r"split 'time:0.8,0.0,0.2' leaves the test set empty"):
        assign_split(
            parse_split("time:0.8,0.0,0.2"),
            user,
            np.zeros(5, int),
            np.arange(5),
            0,
            pa.array(["a", "b"]),
        )


def test_loo_keep_short_is_sasrecs_rule_on_a_hand_made_log():
    """SASRec's data_partition: a user with fewer than 3 interactions trains on them all and
    has no validation or test item; the others give their last two, by time, as loo does."""
    # user a: 1 row, b: 2 rows, c: 3 rows, d: 4 rows (timestamps out of file order)
    user = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    timestamp = np.array([1, 8, 2, 3, 1, 2, 9, 5, 7, 6])
    spec = parse_split("loo:keep-short")
    assert spec == SplitSpec("loo", None, "loo:keep-short", keep_short=True)
    parts = assign_split(spec, user, np.arange(10), timestamp, 0, pa.array(list("abcd")))
    assert parts.tolist() == [TRAIN, TRAIN, TRAIN, TEST, TRAIN, VALID,
                              TEST, TRAIN, VALID, TRAIN]
    # plain loo refuses user a, and gives b a test item
    with pytest.raises(AdvrecError, match=r"user 'a' has 1 interaction: split 'loo'"):
        assign_split(parse_split("loo"), user, np.arange(10), timestamp, 0, pa.array(list("abcd")))
    with pytest.raises(AdvrecError, match=r"every user has fewer than 3 interactions"):
        assign_split(spec, user[:3], np.arange(3), timestamp[:3], 0, pa.array(list("ab")))
    with pytest.raises(AdvrecError, match=r"'loo' takes no arguments but 'keep-short'"):
        parse_split("loo:keep_short")
