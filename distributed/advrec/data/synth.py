"""A deterministic synthetic implicit-feedback log with structure a model can learn.

Users and items get latent factors; an item's popularity follows a Zipf law. Each user picks
their items one after another without replacement from

    p(i | u) ∝ exp(u·v_i / τ + log popularity_i)

which the Gumbel-top-k trick samples in one vectorised pass: the k largest of
``logits + Gumbel noise`` are a draw without replacement, and their descending order is the
order of the sequential draws, which we use as the time order.

Scoring every item for every user costs users x items, which a large catalogue makes
prohibitive (10^5 users x 10^6 items). So a user with k interactions scores only
``CANDIDATES_PER_PICK * k`` candidates drawn by popularity (the proposal then carries the
popularity term, and a repeated candidate counts once); only when that is the whole catalogue
are all items scored. Users are generated in blocks of bounded size and written part by part,
so time grows with the log and memory with the block, never with the log: 10^8 rows stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from advrec.errors import AdvrecError
from advrec.io import Marker, atomic_dir, join, write_json, write_parquet

DIM = 16
TEMPERATURE = 0.5
ZIPF_EXPONENT = 1.0
_SCALE = np.float32(DIM**-0.25)  # factors' scale: u·v has unit variance whatever the dimension
MIN_PER_USER = 5
_BLOCK_SCORES = 1 << 20  # candidate scores held at once per block (with their factors, 64 MiB)
CANDIDATES_PER_PICK = 8
_EPOCH = 1_577_836_800  # 2020-01-01 UTC: users start within the following year
_MEAN_GAP_S = 3600.0  # mean seconds between a user's consecutive interactions
SYNTH_LOG = Marker("_synth.json", "written_by", "a synthetic log")
"""What marks a directory as a log `synth` wrote, which a new one may replace (readers of the
log skip it: a Parquet directory's files named ``_*`` are not data)."""


def synth(
    users: int,
    items: int,
    interactions: int,
    output: str,
    seed: int = 0,
    rows_per_file: int = 1_000_000,
) -> dict[str, Any]:
    """Write a synthetic log as Parquet part files to ``output`` (a directory path or URL).

    Columns: ``user_id`` int64, ``item_id`` int64, ``rating`` float32 (always 1.0),
    ``timestamp`` int64 (increasing per user), rows grouped by user. Every user has at least
    5 interactions and the total is exactly ``interactions``. Same arguments, same bytes.
    ``prepare(output, "parquet")`` reads it with the default column map.

    Returns:
        A summary (also written to ``output/_synth.json``, without ``output``), which marks
        the directory as advrec's: a later `synth` may replace it, and nothing else.
    """
    _check_sizes(users, items, interactions, rows_per_file)
    rng = np.random.default_rng(seed)
    user_vec, item_vec, log_pop = _factors(rng, users, items)
    counts = _activity(rng, users, items, interactions)
    popularity_cdf = np.cumsum(np.exp(log_pop, dtype=np.float64))

    files: list[str] = []
    with atomic_dir(output, SYNTH_LOG) as (fs, tmp):
        pending: list[pa.Table] = []
        pending_rows = 0
        for start, stop in _blocks(counts, items):
            user, item = _block(rng, np.arange(start, stop), user_vec[start:stop], item_vec,
                                log_pop, popularity_cdf, counts[start:stop])
            table = _rows(user, item, _clock(rng, counts[start:stop]))
            pending.append(table)
            pending_rows += table.num_rows
            # Cut exactly rows_per_file rows per part; only the remainder stays buffered.
            while pending_rows >= rows_per_file:
                buffered = pa.concat_tables(pending)
                files.append(_write_part(fs, tmp, len(files), buffered.slice(0, rows_per_file)))
                pending = [buffered.slice(rows_per_file)]
                pending_rows -= rows_per_file
        if pending_rows:
            files.append(_write_part(fs, tmp, len(files), pa.concat_tables(pending)))
        summary = {
            "written_by": "advrec synth",
            "users": users,
            "items": items,
            "interactions": interactions,
            "seed": seed,
            "rows_per_file": rows_per_file,
            "dim": DIM,
            "temperature": TEMPERATURE,
            "zipf_exponent": ZIPF_EXPONENT,
            "files": files,
        }
        write_json(fs, join(tmp, "_synth.json"), summary)
    return {**summary, "output": output}


def synth_days(
    users: int,
    items: int,
    interactions: int,
    output: str,
    days: int,
    drift: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a synthetic log that unfolds over ``days`` days, partitioned by day: Parquet part
    files under ``output/dt=YYYY-MM-DD/`` (from 2020-01-01), each day's rows in time order.
    The columns are `synth`'s.

    - **Arrivals.** Ids are numbered by arrival: the first `FIRST_DAY_SHARE` of the users and
      of the items are there on day 0, the others arrive evenly over the later days. An item is
      drawn only from its arrival day on; a user takes `MIN_PER_USER` items on their arrival
      day, then a share of each day's interactions by their (log-normal) activity.
    - **Drift.** Each day every user's factors move: ``u ← sqrt(1 - drift²)·u + drift·noise``,
      the variance kept, so ``drift`` 0 is a fixed taste and 1 a new one every day.
    - Each day's interactions are proportional to the users there; the total is exactly
      ``interactions``. Same arguments, same bytes.

    Returns:
        The summary (also in ``output/_synth.json``), with per day its ``date``, the number of
        ``users`` and ``items`` there by then and its ``interactions``.
    """
    _check_sizes(users, items, interactions, 1)
    if not 1 <= days <= interactions:  # bounded by the log: no year of empty days
        raise AdvrecError(f"synth: days must be in 1..interactions ({interactions}), not {days}")
    if not 0.0 <= drift <= 1.0:  # nan fails too
        raise AdvrecError(f"synth: drift must be in [0, 1], not {drift}")
    rng = np.random.default_rng(seed)
    user_vec, item_vec, log_pop = _factors(rng, users, items)
    user_day, item_day = _arrivals(users, days), _arrivals(items, days)
    there = np.searchsorted(user_day, np.arange(days), side="right")  # (days,) users by then
    stocked = np.searchsorted(item_day, np.arange(days), side="right")
    # the interactions beyond onboarding, dealt to the days by the users there
    extra = rng.multinomial(interactions - MIN_PER_USER * users, there / there.sum())
    activity = rng.lognormal(0.0, 1.0, users)
    summary_days = []
    keep = np.float32(np.sqrt(1.0 - drift**2))
    with atomic_dir(output, SYNTH_LOG) as (fs, tmp):
        for day in range(days):
            if day:
                noise = rng.standard_normal((users, DIM), dtype=np.float32) * _SCALE
                user_vec = keep * user_vec + np.float32(drift) * noise
            n, cap = int(there[day]), int(stocked[day])
            counts = np.where(user_day[:n] == day, MIN_PER_USER, 0)
            counts = counts + _deal(rng, int(extra[day]), activity[:n], cap - counts)
            table = _day(rng, day, counts, user_vec[:n], item_vec[:cap], log_pop[:cap])
            date = np.datetime64(_EPOCH + day * 86400, "s").astype("datetime64[D]")
            fs.makedirs(join(tmp, f"dt={date}"), exist_ok=True)  # an object store has no dirs
            write_parquet(fs, join(tmp, f"dt={date}", "part-00000.parquet"), table)
            summary_days.append({"date": str(date), "users": n, "items": cap,
                                 "interactions": table.num_rows})
        summary = {"written_by": "advrec synth", "users": users, "items": items,
                   "interactions": interactions, "seed": seed, "days": days, "drift": drift,
                   "first_day_share": FIRST_DAY_SHARE, "dim": DIM, "temperature": TEMPERATURE,
                   "zipf_exponent": ZIPF_EXPONENT, "per_day": summary_days}
        write_json(fs, join(tmp, "_synth.json"), summary)
    return {**summary, "output": output}


def _factors(rng: np.random.Generator, users: int,
             items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The users' (U, DIM) and items' (I, DIM) latent factors and the items' (I,) log
    popularity (Zipf over a random ranking, so item ids carry no popularity signal)."""
    user_vec = rng.standard_normal((users, DIM), dtype=np.float32) * _SCALE
    item_vec = rng.standard_normal((items, DIM), dtype=np.float32) * _SCALE
    log_pop = (-ZIPF_EXPONENT * np.log1p(rng.permutation(items))).astype(np.float32)
    return user_vec, item_vec, log_pop


FIRST_DAY_SHARE = 0.5
"""`synth_days`: the share of the users (and of the items) there from day 0."""


def _arrivals(count: int, days: int) -> np.ndarray:
    """(count,) non-decreasing arrival days: `FIRST_DAY_SHARE` on day 0, the rest evenly over
    days 1 .. days-1 (all on day 0 when there is one day)."""
    first = count if days == 1 else max(1, round(FIRST_DAY_SHARE * count))
    later = np.arange(count - first)
    return np.concatenate([np.zeros(first, dtype=np.int64),
                           1 + later * (days - 1) // max(len(later), 1)])


def _day(rng: np.random.Generator, day: int, counts: np.ndarray, user_vec: np.ndarray,
         item_vec: np.ndarray, log_pop: np.ndarray) -> pa.Table:
    """One day's rows of the users with ``counts`` (U,) > 0, in time order: each user's draws
    at times spread uniformly over the day, in draw order (none on a quiet day)."""
    popularity_cdf = np.cumsum(np.exp(log_pop, dtype=np.float64))
    active = np.flatnonzero(counts)
    users, items = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for start, stop in _blocks(counts[active], len(item_vec)):
        block = active[start:stop]
        user, item = _block(rng, block, user_vec[block], item_vec, log_pop, popularity_cdf,
                            counts[block])
        users.append(user)
        items.append(item)
    user, item = np.concatenate(users), np.concatenate(items)
    # times spread uniformly over the day, ascending within each user's run of draws
    run = np.repeat(np.arange(len(active)), counts[active]) * 86400
    offsets = np.sort(run + rng.integers(0, 86400, len(user))) - run
    timestamp = _EPOCH + day * 86400 + offsets
    order = np.argsort(timestamp, kind="stable")
    return _rows(user[order], item[order], timestamp[order])


def _check_sizes(users: int, items: int, interactions: int, rows_per_file: int) -> None:
    """`synth`'s bounds on its sizes, one line naming the first that is out of them."""
    for name, value in (("users", users), ("items", items), ("rows_per_file", rows_per_file)):
        if value < 1:
            raise AdvrecError(f"synth: {name} must be >= 1, not {value}")
    if interactions < MIN_PER_USER * users:
        raise AdvrecError(
            f"synth: interactions={interactions} is below {MIN_PER_USER} per user "
            f"(users={users} needs >= {MIN_PER_USER * users})"
        )
    if interactions > users * items / 2:
        raise AdvrecError(
            f"synth: interactions={interactions} is more than half of users x items "
            f"({users} x {items} / 2 = {users * items // 2})"
        )


def _activity(rng: np.random.Generator, users: int, items: int, total: int) -> np.ndarray:
    """(users,) interaction counts: >= 5 each, <= items each, summing to exactly ``total``.

    The counts above the minimum follow heavy-tailed (log-normal) user activity (`_deal`).
    """
    activity = rng.lognormal(0.0, 1.0, users)
    return MIN_PER_USER + _deal(rng, total - MIN_PER_USER * users, activity,
                                np.full(users, items - MIN_PER_USER))


def _deal(rng: np.random.Generator, total: int, weights: np.ndarray,
          caps: np.ndarray) -> np.ndarray:
    """(U,) counts summing to exactly ``total``, drawn by ``weights`` (U,), each at most its
    ``caps`` (U,): whatever a full user cannot take is dealt again among the others."""
    counts = np.zeros(len(weights), dtype=np.int64)
    left = total
    while left > 0:
        room = weights * (counts < caps)
        if not room.any():
            raise AdvrecError(f"synth: {total} interactions do not fit the items the users "
                              "can still take; ask for fewer interactions or more items")
        counts = np.minimum(counts + rng.multinomial(left, room / room.sum()), caps)
        left = total - int(counts.sum())
    return counts


def _blocks(counts: np.ndarray, items: int) -> Iterator[tuple[int, int]]:
    """Consecutive user ranges ``[start, stop)`` whose candidate scores fit `_BLOCK_SCORES`."""
    start = 0
    while start < len(counts):
        window = counts[start : start + _BLOCK_SCORES]
        width = np.minimum(items, CANDIDATES_PER_PICK * np.maximum.accumulate(window))
        fits = int(np.count_nonzero(np.arange(1, len(window) + 1) * width <= _BLOCK_SCORES))
        stop = start + max(1, fits)  # width only grows, so the users that fit come first
        yield start, stop
        start = stop


def _candidates(
    rng: np.random.Generator, counts: np.ndarray, width: int, popularity_cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(B, width) candidate items per user drawn by popularity, sorted, and a mask of the
    repeats after their first; the width doubles until every user has as many distinct
    candidates as interactions. ``None`` once that width would be the whole catalogue."""
    while width < len(popularity_cdf):
        # sorted draws make sorted candidates, and searchsorted fast (cache-friendly)
        draws = np.sort(rng.random((len(counts), width)), axis=1) * popularity_cdf[-1]
        picks = np.searchsorted(popularity_cdf, draws, side="right")
        candidates = np.minimum(picks, len(popularity_cdf) - 1)  # (float rounding at the end)
        repeat = np.zeros(candidates.shape, dtype=bool)
        repeat[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
        if np.all(width - repeat.sum(axis=1) >= counts):
            return candidates, repeat
        width *= 2
    return None


def _block(
    rng: np.random.Generator,
    user_ids: np.ndarray,
    user_vec: np.ndarray,
    item_vec: np.ndarray,
    log_pop: np.ndarray,
    popularity_cdf: np.ndarray,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The draws of users ``user_ids`` (B,) given their (B, DIM) factors and (B,) counts:
    (user, item) id arrays, each user's ``counts[u]`` rows in draw order, from the items of
    ``item_vec`` (I, DIM) with their popularity (``log_pop``, its cumulative ``popularity_cdf``)."""
    k = int(counts.max())
    items = len(item_vec)
    drawn = _candidates(rng, counts, CANDIDATES_PER_PICK * k, popularity_cdf)
    if drawn is None:  # score the whole catalogue, popularity in the logits
        candidates = np.broadcast_to(np.arange(items), (len(counts), items))
        logits = user_vec @ item_vec.T / np.float32(TEMPERATURE) + log_pop  # (B, items)
    else:
        candidates, repeat = drawn
        logits = np.einsum("bd,bcd->bc", user_vec, item_vec[candidates]) / np.float32(TEMPERATURE)
        logits[repeat] = -np.inf  # a repeated candidate is drawn once
    # -log(Exp(1)) is Gumbel(0, 1) noise; standard_exponential has a fast float32 path, whose
    # draws can round to 0, so clip them to keep every key finite.
    noise = rng.standard_exponential(logits.shape, dtype=np.float32)
    keys = logits - np.log(np.maximum(noise, np.finfo(np.float32).tiny))
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]  # (B, k), unordered
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)  # best first: the sequential draw order
    top = np.take_along_axis(candidates, top, axis=1)  # candidate positions to item ids
    picked = np.arange(k) < counts[:, None]  # each user keeps their first counts[u] draws
    return np.repeat(user_ids.astype(np.int64), counts), top[picked].astype(np.int64)


def _clock(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """(sum(counts),) timestamps of users' consecutive interactions (``counts`` (B,) each):
    a user starts within the year after `_EPOCH`, then exponential gaps."""
    n = int(counts.sum())
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    gaps = 1 + np.floor(rng.exponential(_MEAN_GAP_S, n)).astype(np.int64)
    gaps[first] = _EPOCH + rng.integers(0, 365 * 86400, len(counts))
    clock = np.cumsum(gaps)
    return clock - np.repeat(clock[first] - gaps[first], counts)


def _rows(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> pa.Table:
    """The log's columns (`synth`)."""
    return pa.table({"user_id": user, "item_id": item,
                     "rating": np.ones(len(user), dtype=np.float32), "timestamp": timestamp})


def _write_part(fs: fsspec.AbstractFileSystem, tmp: str, index: int, table: pa.Table) -> str:
    name = f"part-{index:05d}.parquet"
    write_parquet(fs, join(tmp, name), table.combine_chunks())
    return name
