"""The surrogate attack: the FillerAttack contract, and that its fillers are the ones that help."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from advrec.errors import AdvrecError
from advrec.poisoning.layout import TrainLog
from advrec.poisoning.surrogate import surrogate_fillers


def planted_log() -> TrainLog:
    """60 users, 200 items. Every user has 3 of the 6 mainstream items 0-5 and 6 of the niche
    items 6-198 (each niche item is seen by about 2 users); nobody has item 199, the target."""
    rng = np.random.default_rng(7)
    user, item = [], []
    for u in range(60):
        mine = np.concatenate([rng.choice(6, 3, replace=False),
                               6 + rng.choice(193, 6, replace=False)])
        user += [u] * mine.size
        item += mine.tolist()
    return TrainLog(np.array(user, dtype=np.int64), np.array(item, dtype=np.int64), 60, 200)


TARGETS = np.array([199], dtype=np.int64)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The matrices here are tiny: a second thread only spins against the other processes on
    a shared machine (16 s instead of 0.5 s per call under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_contract() -> None:
    log = planted_log()
    targets = np.array([199, 20], dtype=np.int64)
    out = surrogate_fillers(log, targets, 6, 10, np.random.default_rng(0))
    assert out.shape == (6, 10) and out.dtype == np.int64
    assert all(np.unique(row).size == 10 for row in out)
    assert not np.isin(out, targets).any()
    assert ((out >= 0) & (out < log.num_items)).all()
    again = surrogate_fillers(log, targets, 6, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)
    other = surrogate_fillers(log, targets, 6, 10, np.random.default_rng(1))
    assert not np.array_equal(out, other)


def test_every_non_target_item_fits() -> None:
    """A budget of the whole non-target catalogue gives every row all of it."""
    out = surrogate_fillers(planted_log(), TARGETS, 3, 199, np.random.default_rng(0))
    np.testing.assert_array_equal(out, np.tile(np.arange(199), (3, 1)))


def test_degenerate_logs() -> None:
    """No fakes, no fillers, and a target every user already has (no pair for the loss to
    count: the start profiles are kept) all keep the contract."""
    log = planted_log()
    assert surrogate_fillers(log, TARGETS, 0, 4, np.random.default_rng(0)).shape == (0, 4)
    assert surrogate_fillers(log, TARGETS, 2, 0, np.random.default_rng(0)).shape == (2, 0)
    everyone = TrainLog(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 2, 0]), 3, 4)
    out = surrogate_fillers(everyone, np.array([0]), 2, 2, np.random.default_rng(0))
    assert out.shape == (2, 2) and not (out == 0).any()
    assert all(np.unique(row).size == 2 for row in out)


def test_too_many_fillers_is_an_error() -> None:
    with pytest.raises(AdvrecError, match="filler 200 is more than the 199 non-target items"):
        surrogate_fillers(planted_log(), TARGETS, 3, 200, np.random.default_rng(0))


@pytest.mark.parametrize("seed", [0, 1])
def test_fillers_are_the_mainstream_items(seed: int) -> None:
    """A target co-consumed with the mainstream items reaches every user's ranking, one
    co-consumed with niche items reaches two users'. The fakes start from real profiles, whose
    fillers are mainstream a third of the time (3 of 9 items; a random draw: 6 of 199), and the
    optimisation must move them there: with the gradient's sign flipped they stay at about 0.35.
    """
    out = surrogate_fillers(planted_log(), TARGETS, 6, 4, np.random.default_rng(seed))
    assert np.isin(out, np.arange(6)).mean() >= 0.8
