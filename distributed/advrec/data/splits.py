"""Train/valid/test splits of an interaction log, vectorised with numpy.

Three strategies, named by a spec string (``--split`` on the command line, ``data.split`` in a
run config):

* ``random:0.8,0.1,0.1``: per user, a random share of the interactions, with RecBole 1.2.1's
  counting rule so results are comparable with RecBole's ``RS`` split.
* ``loo``: leave-one-out by time; per user the last interaction is the test item, the second
  last the validation item (RecBole's ``LS: valid_and_test``). A user with 2 interactions gets
  a test item and no validation item, one with a single interaction is an error.
  ``loo:keep-short`` is SASRec's own rule (``data_partition`` in kang205/SASRec): a user with
  fewer than 3 interactions keeps them all in train, with neither a validation nor a test item.
* ``time:0.8``: one global time cut; valid/test rows whose user or item is unseen in train
  are dropped, since no model can score them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from advrec.errors import AdvrecError

TRAIN, VALID, TEST, DROPPED = 0, 1, 2, -1

_KINDS = ("random", "loo", "time")


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split spec.

    Attributes:
        kind: ``random``, ``loo`` or ``time``.
        ratios: (train, valid, test) shares for ``random`` and ``time``, as written (RecBole
            normalises them by their sum when counting); ``None`` for ``loo``.
        spec: the original string.
        keep_short: ``loo:keep-short``: users too short for a validation and a test item stay
            in train only.
    """

    kind: str
    ratios: tuple[float, float, float] | None
    spec: str
    keep_short: bool = False

    def to_dict(self) -> dict[str, Any]:
        ratios = list(self.ratios) if self.ratios else None
        return {"kind": self.kind, "ratios": ratios, "spec": self.spec}

    @property
    def per_user(self) -> bool:
        return self.kind in ("random", "loo")

    def counts(self, n: int) -> tuple[int, int, int]:
        """How many of a user's ``n`` interactions go to (train, valid, test)."""
        if self.kind == "loo" and self.keep_short:
            return (n, 0, 0) if n < 3 else (n - 2, 1, 1)
        if self.kind == "loo":
            # RecBole's leave-one-out: always keep at least one interaction for training.
            held_out = min(2, n - 1)
            return n - held_out, int(held_out == 2), int(held_out >= 1)
        assert self.ratios is not None
        return split_counts(n, self.ratios)

    def min_interactions(self) -> int:
        """The fewest interactions a user needs to get an item in every non-empty part."""
        assert self.per_user
        wanted = [r > 0 for r in self.ratios] if self.ratios else [True, True, True]
        n = 1
        while not all(c > 0 or not w for c, w in zip(self.counts(n), wanted)):
            n += 1
        return n


def parse_split(spec: str, name: str | None = "--split/data.split") -> SplitSpec:
    """Parse ``random:TRAIN[,VALID],TEST``, ``loo[:keep-short]`` or ``time:TRAIN[,VALID,TEST]``.

    One share F means (F, (1-F)/2, (1-F)/2); two mean (train, test) with no validation set.
    A bad one is an error naming ``name`` and ``spec`` (None: neither, for a caller that does).
    """
    kind, _, args = spec.strip().partition(":")

    def bad(why: str) -> AdvrecError:
        return AdvrecError(f"bad split: {why}" if name is None
                           else f"{name}: bad split '{spec}': {why}")

    if kind not in _KINDS:
        raise bad(f"unknown kind '{kind}' (expected random:..., loo, loo:keep-short or time:...)")
    if kind == "loo":
        if args not in ("", "keep-short"):
            raise bad("'loo' takes no arguments but 'keep-short' (loo:keep-short)")
        return SplitSpec("loo", None, spec, keep_short=bool(args))
    try:
        shares = [float(a) for a in args.split(",")] if args else []
    except ValueError:
        raise bad("shares must be numbers, e.g. random:0.8,0.1,0.1") from None
    if not 1 <= len(shares) <= 3:
        raise bad("give 1 to 3 shares, e.g. random:0.8,0.1,0.1")
    if any(not np.isfinite(s) or s < 0 for s in shares):
        raise bad("shares must be finite and non-negative")
    if len(shares) == 1:
        if not 0 < shares[0] < 1:
            raise bad("a single train share must be between 0 and 1")
        # Rounded so that 0.8 leaves exactly 0.1 each, not 0.09999999999999998 (which would
        # floor one interaction too few for 20 of them).
        rest = round(1.0 - shares[0], 12) / 2
        ratios = (shares[0], rest, rest)
    elif len(shares) == 2:
        ratios = (shares[0], 0.0, shares[1])
    else:
        ratios = (shares[0], shares[1], shares[2])
    if ratios[0] <= 0 or ratios[2] <= 0:
        raise bad("the train and test shares must be positive")
    return SplitSpec(kind, ratios, spec)


def split_counts(n: int, ratios: tuple[float, ...]) -> tuple[int, ...]:
    """RecBole 1.2.1's ``Dataset._calcu_split_ids`` rule, as per-part counts of ``n`` rows.

    Every part but the first is rounded down; then, from the last part backwards, a part whose
    exact share is strictly between 0 and 1 row takes one row from the first part, as long as
    the first part still has more than one.
    """
    total = sum(ratios)
    ratios = [r / total for r in ratios]
    cnt = [int(r * n) for r in ratios]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * n < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return tuple(cnt)


def assign_split(
    spec: SplitSpec,
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray,
    seed: int,
    user_names: pa.Array,
) -> np.ndarray:
    """Assign each interaction to a part.

    Args:
        user, item: (N,) int codes, in file order (row order breaks timestamp ties).
        timestamp: (N,) int64.
        seed: seeds the per-user permutation of ``random``.
        user_names: raw user id of each code, for error messages.

    Returns:
        (N,) int8: ``TRAIN``, ``VALID``, ``TEST`` or ``DROPPED`` (``time``: unseen in train).

    Raises:
        AdvrecError: a per-user split leaves a user without a test item (naming the user; not
            ``loo:keep-short``, whose short users train only), or the test set is empty.
    """
    n = len(user)
    row = np.arange(n)
    if spec.kind == "time":
        return _time_split(spec, user, item, timestamp)
    if spec.kind == "random":
        # One random key per row, then sorting by (user, key): a per-user random permutation
        # without a Python loop over users.
        key = np.random.default_rng(seed).random(n)
        order = np.lexsort((key, user))
    else:
        order = np.lexsort((row, timestamp, user))
    sizes = np.bincount(user)
    start = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    sorted_user = user[order]
    rank = row - start[sorted_user]
    # Per-part counts for each distinct user size (few distinct sizes, so the exact scalar
    # rule is cheap), then a row's part follows from its rank within its user.
    lengths = np.unique(sizes[sizes > 0])
    per_size = np.zeros((sizes.max() + 1, 3), dtype=np.int64)
    per_size[lengths] = [spec.counts(int(m)) for m in lengths]
    counts = per_size[sizes[sorted_user]]
    # The first counts[0] ranks are TRAIN (0), the next counts[1] VALID (1), the rest TEST (2).
    parts = np.empty(n, dtype=np.int8)
    parts[order] = (rank >= counts[:, 0]).astype(np.int8) + (rank >= counts[:, 0] + counts[:, 1])
    no_test = np.flatnonzero((sizes > 0) & (per_size[sizes, 2] == 0))
    if spec.keep_short and no_test.size == np.count_nonzero(sizes):
        raise AdvrecError(f"split '{spec.spec}': every user has fewer than 3 interactions, so "
                          "the test set is empty")
    if no_test.size and not spec.keep_short:
        u = int(no_test[0])
        more = f" (and {no_test.size - 1} more users)" if no_test.size > 1 else ""
        raise AdvrecError(
            f"user '{user_names[u].as_py()}' has {sizes[u]} interaction"
            f"{'s' if sizes[u] != 1 else ''}: split '{spec.spec}' leaves it no test item{more}; "
            f"filter with --kcore {spec.min_interactions()}"
        )
    return parts


def _time_split(
    spec: SplitSpec, user: np.ndarray, item: np.ndarray, timestamp: np.ndarray
) -> np.ndarray:
    n = len(user)
    order = np.lexsort((np.arange(n), timestamp))
    assert spec.ratios is not None
    n_train, n_valid, _ = split_counts(n, spec.ratios)
    sorted_parts = np.full(n, TEST, dtype=np.int8)
    sorted_parts[:n_train] = TRAIN
    sorted_parts[n_train : n_train + n_valid] = VALID
    parts = np.empty(n, dtype=np.int8)
    parts[order] = sorted_parts
    train = parts == TRAIN
    seen_user = np.zeros(user.max() + 1, dtype=bool)
    seen_item = np.zeros(item.max() + 1, dtype=bool)
    seen_user[user[train]] = True
    seen_item[item[train]] = True
    parts[~train & ~(seen_user[user] & seen_item[item])] = DROPPED
    if not (parts == TEST).any():
        raise AdvrecError(
            f"split '{spec.spec}' leaves the test set empty ({n} interactions; test rows whose "
            f"user or item is unseen in train are dropped)"
        )
    return parts
