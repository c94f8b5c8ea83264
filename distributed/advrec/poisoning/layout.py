"""What a poisoned dataset looks like, and the signature every filler attack has.

A poisoned dataset is a prepared dataset (``meta.json``, the three splits, the vocabularies)
with fake users appended after the genuine ones: user indices ``0 .. G-1`` are the genuine
users of the clean dataset, unchanged, and ``G .. num_users-1`` the fakes, whose raw ids in
``users.parquet`` start with :data:`FAKE_PREFIX`. Fakes have rows in ``train.parquet`` only, so
no metric ever counts one. ``meta.json`` keeps every key of the clean dataset's (``num_users``
and ``counts`` updated) and adds ``poison``::

    {"attack": "bandwagon", "fake_users": F, "genuine_users": G, "filler": N,
     "targets": [item indices], "seed": 0, "source": "<the clean dataset's URL>", ...}

``targets.json`` beside it names the target items (``items``: raw ids as in ``items.parquet``;
``indices``: their item indices) with the attack spec (``attack``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from advrec.errors import AdvrecError, shown

FAKE_PREFIX = "__fake__"
"""Raw user ids of fake users are ``__fake__0``, ``__fake__1``, ..."""
TARGETS_FILE = "targets.json"


def genuine_users(meta: dict[str, Any], where: str = "meta.json") -> int:
    """How many users of a dataset are genuine: indices below this are, the rest are fakes.

    A ``poison`` section that breaks the layout (a hand-edited ``meta.json``: ``genuine_users``
    not a whole number from 1 to ``num_users`` - 1, or ``fake_users`` not the rest) is a
    one-line error naming ``where`` the meta came from: read as it is, it would count fakes as
    genuine users (or the reverse) in every metric and detection report, silently."""
    poison = meta.get("poison")
    if poison is None:
        return int(meta["num_users"])
    users = meta.get("num_users")
    genuine = poison.get("genuine_users") if isinstance(poison, dict) else None
    fakes = poison.get("fake_users") if isinstance(poison, dict) else None
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (users, genuine, fakes))
    if not (whole and 0 < genuine < users and fakes == users - genuine):
        raise AdvrecError(f"{where}: poison section {shown(poison)} does not match num_users "
                          f"{shown(users)} (expected genuine_users from 1 to num_users - 1 and "
                          "fake_users the rest); poison the clean dataset again")
    return genuine


def fake_users(meta: dict[str, Any], where: str = "meta.json") -> np.ndarray:
    """(F,) int64 indices of a dataset's fake users (empty for a clean dataset)."""
    return np.arange(genuine_users(meta, where), int(meta["num_users"]), dtype=np.int64)


@dataclass(frozen=True)
class TrainLog:
    """The genuine training interactions an attacker is assumed to see.

    Attributes:
        user: (N,) int64 user indices.
        item: (N,) int64 item indices.
        num_users: genuine users (indices ``0 .. num_users-1``).
        num_items: items (indices ``0 .. num_items-1``).
        item_features: the dataset's ``item_features.parquet`` (one row per item), or ``None``.
    """

    user: np.ndarray
    item: np.ndarray
    num_users: int
    num_items: int
    item_features: pa.Table | None = None


FillerAttack = Callable[[TrainLog, np.ndarray, int, int, np.random.Generator], np.ndarray]
"""``attack(log, targets, fakes, filler, rng)``: the filler items of every fake profile.

``targets`` is (T,) int64 item indices. Returns (fakes, filler) int64 item indices: distinct
within a row and never a target (the profile is the targets plus these). All randomness comes
from ``rng``, so a seed repeats the profiles exactly.
"""
