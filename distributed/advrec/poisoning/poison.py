"""``advrec poison``: a prepared dataset in, a poisoned copy of it out.

    load -> (strip an earlier attack) -> targets -> fillers (an attack of `ATTACKS`) -> fake rows
         -> write (train, users and user features rewritten; the rest copied byte for byte)

The layout is :mod:`advrec.poisoning.layout`'s: F fake users appended after the G genuine ones
(raw ids ``__fake__0`` ..), each with one training row per target and per filler item, and no
row in valid or test. A fake's rows look like the log's own:

- time: its fillers first, one second apart, its targets last, ending at a time drawn from the
  training log's (a sequence model sees "fake sequences that lead to the target"; the log's
  time span is never left);
- a rating, where the log has them: the highest rating of the training log;
- a label, on a CTR dataset: 1 (a click) on every row;
- user features, where the dataset has them: those of a genuine user drawn from the seed.

Every draw comes from ``seed``, in separate streams for the targets, the fillers, the features
and the times, so a seed repeats the same bytes and ``--target-items`` leaves the fillers' draw
as ``--targets`` would have it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from advrec.data.dataset import Dataset, item_indices, load_dataset, read_part
from advrec.data.prepare import DATASET, interactions_table
from advrec.errors import AdvrecError, shown
from advrec.io import (
    atomic_dir,
    check_output,
    copy_files,
    join,
    write_json,
    write_parquet,
)
from advrec.poisoning.attacks import ATTACKS
from advrec.poisoning.layout import FAKE_PREFIX, TARGETS_FILE, TrainLog, genuine_users

COPIED = ("valid.parquet", "test.parquet", "items.parquet", "item_features.parquet")
"""The files of the clean dataset a poisoned one holds unchanged (those present)."""
"""Bytes per read when copying a file: a large split is streamed, not held twice in memory."""
STREAMS = {"targets": 0, "fillers": 1, "features": 2, "times": 3}
"""The seed's independent random streams, by what they draw."""


@dataclass(frozen=True)
class _Clean:
    """The genuine part of a dataset (an earlier attack stripped): G users, their training rows
    as numpy arrays ((N,) each, sorted by user, time, item; ``None`` for a missing column), the
    vocabularies and user features, and the clean dataset's meta."""

    meta: dict[str, Any]
    source: str  # the clean dataset's URL: ``data``, or an earlier attack's source
    train: dict[str, np.ndarray | None]
    users: pa.Table
    items: pa.Table
    user_features: pa.Table | None
    item_features: pa.Table | None


def poison(data: str, output: str, attack: str, fake_users: float = 0.01,
           filler: int | None = None, targets: int | None = 5,
           target_items: list[str] | None = None, seed: int = 0,
           force: bool = False) -> dict[str, Any]:
    """Write a poisoned copy of the prepared dataset ``data`` to ``output``.

    Args:
        data: the clean dataset (path or fsspec URL).
        output: the poisoned dataset's directory: new, empty, or a dataset advrec wrote; apart
            from ``data``.
        attack: a name of `ATTACKS`.
        fake_users: a float in (0, 1): that share of the genuine users, rounded (at least one);
            an int >= 1: that many.
        filler: fillers per fake profile; default the genuine users' mean training profile size,
            rounded. At most the catalogue less the targets.
        targets: pick this many targets among the unpopular items (`unpopular`), if
            ``target_items`` is ``None``.
        target_items: the targets' raw item ids, as in ``items.parquet``.
        seed: seeds every draw.
        force: poison a dataset that is already poisoned: its fakes are dropped first, so the
            result is that of poisoning its clean part (the earlier attack is replaced).

    Returns:
        The poisoned dataset's meta, as written to ``meta.json``.
    """
    if attack not in ATTACKS:
        raise AdvrecError(f"--attack: unknown attack {shown(attack)} (choose "
                          f"{', '.join(ATTACKS)})")
    fake_users = _check_fake_users(fake_users)
    if seed < 0:
        raise AdvrecError(f"--seed: expected an integer >= 0, got {seed}")
    check_output(output, DATASET, inputs=(data,))
    clean = _clean(data, force)
    meta = clean.meta
    log = TrainLog(clean.train["user"], clean.train["item"], meta["num_users"],
                   meta["num_items"], clean.item_features)
    target = (_named_targets(target_items, data) if target_items is not None
              else pick_targets(log, targets or 0, _rng(seed, "targets")))
    fakes = fake_users if isinstance(fake_users, int) else max(
        1, round(fake_users * log.num_users))
    if fakes > log.num_users:  # as a share >= 1 is refused: and 10^9 fakes would fill memory
        raise AdvrecError(f"--fake-users {fakes}: at most as many fake users as genuine ones, "
                          f"{log.num_users}")
    size = _filler_size(log, filler, target.size)
    fillers = ATTACKS[attack](log, target, fakes, size, _rng(seed, "fillers"))
    _check_fillers(fillers, target, fakes, size, attack)
    report = {"attack": attack, "fake_users": fakes, "genuine_users": log.num_users,
              "filler": size, "targets": target.tolist(), "seed": seed,
              "source": clean.source}
    poisoned = _poisoned_meta(meta, report, fakes, fillers.size + fakes * target.size)
    train = _train_table(clean.train, fillers, target, log.num_users, _rng(seed, "times"))
    users = _users(clean.users, fakes)
    features = (None if clean.user_features is None
                else _fake_features(clean.user_features, fakes, _rng(seed, "features")))
    _write(data, output, train, users, features, poisoned,
           _targets_file(report, target, clean.items))
    return poisoned


def _filler_size(log: TrainLog, filler: int | None, targets: int) -> int:
    """``filler``, or by default the genuine users' mean training profile size (rounded), if a
    profile of it and ``targets`` items fits the catalogue; else a one-line error."""
    size = round(log.user.size / log.num_users) if filler is None else filler
    if size < 0:
        raise AdvrecError(f"--filler {size}: expected a whole number >= 0")
    if size > log.num_items - targets:
        named = f"{size} (the default, the mean profile size)" if filler is None else size
        raise AdvrecError(f"--filler {named}: a profile holds at most the catalogue less the "
                          f"targets, {log.num_items - targets} items")
    return size


def _check_fake_users(value: float) -> float:
    """``value`` if it is a share in (0, 1) or a count >= 1 (an int), else a one-line error."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return value
    elif 0 < value < 1:
        return value
    raise AdvrecError(f"--fake-users {value}: expected a share of the genuine users in (0, 1) "
                      "(0.01) or a whole number of fake users >= 1 (50)")


def parse_fake_users(text: str) -> float:
    """``--fake-users``' text: a whole number is a count, another number a share (checked by
    `poison`), anything else a one-line error."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise AdvrecError(f"--fake-users: expected a share in (0, 1) or a count >= 1, got "
                          f"{shown(text)}") from None


def _rng(seed: int, stream: str) -> np.random.Generator:
    """The generator of one of the seed's `STREAMS`."""
    return np.random.default_rng([seed, STREAMS[stream]])


def unpopular(log: TrainLog) -> np.ndarray:
    """(K,) the unpopular items, ascending: the less popular half (rounded up) of the items with
    at least one training interaction, by training count (ties to the lower index). An item
    nobody has seen is left out: a model learns nothing of it, so promoting it says little.
    Target items are drawn from such a pool in the poisoning literature (VAT, PamaCF)."""
    counts = np.bincount(log.item, minlength=log.num_items)
    seen = np.flatnonzero(counts)
    by_count = seen[np.argsort(counts[seen], kind="stable")]
    return np.sort(by_count[: -(-seen.size // 2)])


def pick_targets(log: TrainLog, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k,) target items, ascending, drawn uniformly without replacement from `unpopular`."""
    pool = unpopular(log)
    if not 1 <= k <= pool.size:
        raise AdvrecError(f"--targets {k}: expected 1 to {pool.size} (the unpopular items: the "
                          "less popular half of the items seen in training)")
    return np.sort(rng.choice(pool, k, replace=False)).astype(np.int64)


def _named_targets(raw_ids: list[str], data: str) -> np.ndarray:
    """(T,) the item indices of ``raw_ids``, ascending; an id not in ``items.parquet`` is an
    error naming it."""
    if not raw_ids:
        raise AdvrecError("--target-items: name at least one raw item id")
    return np.unique(item_indices(data, raw_ids, "--target-items")).astype(np.int64)

def _clean(data: str, force: bool) -> _Clean:
    """The dataset at ``data`` less any earlier attack (refused without ``force``)."""
    dataset = load_dataset(data)
    meta = dict(dataset.meta)
    if "user" in meta.get("hashing", {}):
        raise AdvrecError(f"{data}: its user ids are hashed (--user-buckets); fake users need a "
                          "row each: prepare it without --user-buckets")
    genuine = genuine_users(meta, f"{data}/meta.json")
    if "poison" in meta and not force:
        raise AdvrecError(f"{data}: already poisoned ({meta['poison'].get('attack')} attack); "
                          "pass --force to replace that attack with this one")
    source = meta.pop("poison").get("source", data) if "poison" in meta else data
    keep = dataset.train.user < genuine
    if not keep.any():  # fakes imitate the log (targets, default filler, times): none to imitate
        raise AdvrecError(f"{data}/train.parquet: no training rows of genuine users; nothing to "
                          "poison")
    train = {name: None if column is None else column[keep].numpy()
             for name, column in _columns(dataset).items()}
    meta["num_users"] = genuine
    meta["counts"] = {**meta["counts"], "train": int(keep.sum())}
    users = read_part(data, "users.parquet").slice(0, genuine)
    named = pc.starts_with(users["raw_id"].cast(pa.string()), FAKE_PREFIX)
    if pc.any(named).as_py():
        raw = users["raw_id"].filter(named)[0].as_py()
        raise AdvrecError(f"{data}/users.parquet: genuine user {shown(raw)} has a raw id "
                          f"starting with {FAKE_PREFIX}, which marks fake users")
    user_features = read_part(data, "user_features.parquet", required=False)
    return _Clean(meta, source, train, users, read_part(data, "items.parquet"),
                  None if user_features is None else user_features.slice(0, genuine),
                  read_part(data, "item_features.parquet", required=False))


def _columns(dataset: Dataset) -> dict[str, Any]:
    """The train split's columns as `prepare.interactions_table` takes them."""
    train = dataset.train
    return {"user": train.user, "item": train.item, "timestamp": train.timestamp,
            "rating": train.rating, "label": train.label}


def _check_fillers(fillers: np.ndarray, targets: np.ndarray, fakes: int, size: int,
                   attack: str) -> None:
    """The attack kept `FillerAttack`'s contract (an attack is code; a bad profile written
    would poison every later measurement silently)."""
    sorted_rows = np.sort(fillers, axis=1)
    ok = (fillers.shape == (fakes, size) and not np.isin(fillers, targets).any()
          and not (sorted_rows[:, 1:] == sorted_rows[:, :-1]).any())
    if not ok:
        raise AdvrecError(f"--attack {attack}: returned fillers of shape {fillers.shape} that "
                          f"are not ({fakes}, {size}) distinct non-target items per fake")


def _train_table(train: dict[str, np.ndarray | None], fillers: np.ndarray, targets: np.ndarray,
                 genuine: int, rng: np.random.Generator) -> pa.Table:
    """The genuine training rows and the fakes' (fake k is user ``genuine + k``: its fillers,
    then its targets), sorted as `prepare` writes a split."""
    fakes, size = fillers.shape
    items = np.concatenate([fillers, np.tile(targets, (fakes, 1))], axis=1).reshape(-1)
    users = np.repeat(np.arange(genuine, genuine + fakes), size + targets.size)
    times = _profile_times(train["timestamp"], size, targets.size, fakes, rng).reshape(-1)
    rating, label = train["rating"], train["label"]
    if rating is not None:  # the log's highest
        rating = np.concatenate([rating, np.full(users.size, rating.max() if rating.size else 1)])
    if label is not None:  # a click
        label = np.concatenate([label, np.ones(users.size)])
    return interactions_table(np.concatenate([train["user"], users]),
                         np.concatenate([train["item"], items]),
                         np.concatenate([train["timestamp"], times]), rating, label)


def _profile_times(times: np.ndarray, fillers: int, targets: int, fakes: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(fakes, fillers + targets) int64 times of the fake profiles: each ends with its targets
    at a time drawn from the training rows' ``times`` ((N,) int64), its fillers one second
    apart before, never before the log's first time (in a short span they share times). So
    sorted by time a profile's targets come last, whenever the log spans more than one time."""
    first = int(times.min())
    end = rng.choice(times, fakes).astype(np.int64)[:, None]
    end = np.maximum(end, first + 1) if int(times.max()) > first else end
    filler_times = np.maximum(end - np.arange(fillers, 0, -1), first)
    return np.concatenate([filler_times, np.repeat(end, targets, axis=1)], axis=1)


def _users(users: pa.Table, fakes: int) -> pa.Table:
    """The user vocabulary with the fakes appended (raw ids ``__fake__0`` ..)."""
    start = users.num_rows
    fake = pa.table({"index": np.arange(start, start + fakes),
                     "raw_id": [f"{FAKE_PREFIX}{k}" for k in range(fakes)]})
    return pa.concat_tables([users, fake.cast(users.schema)])


def _fake_features(features: pa.Table, fakes: int, rng: np.random.Generator) -> pa.Table:
    """The user features with a row per fake appended: a genuine user's, drawn uniformly, under
    the fake's index (a fake that looks like an ordinary member of the audience)."""
    genuine = features.num_rows
    rows = features.take(pa.array(rng.integers(0, genuine, fakes)))
    index = features.schema.get_field_index("index")
    rows = rows.set_column(index, features.schema.field(index), pa.array(
        np.arange(genuine, genuine + fakes), features.schema.field(index).type))
    return pa.concat_tables([features, rows])


def _poisoned_meta(meta: dict[str, Any], report: dict[str, Any], fakes: int,
                   rows: int) -> dict[str, Any]:
    """The clean ``meta`` with the fakes counted and the attack recorded under ``poison``."""
    counts = {**meta["counts"], "train": meta["counts"]["train"] + rows}
    return {**meta, "num_users": meta["num_users"] + fakes, "counts": counts, "poison": report}


def _targets_file(report: dict[str, Any], targets: np.ndarray, items: pa.Table) -> dict[str, Any]:
    """``targets.json``: the targets' raw ids (the first of an index's, for hashed ids) and
    indices, with the attack spec."""
    index = items["index"].to_numpy()
    raw = items["raw_id"].cast(pa.string())
    return {"attack": report, "indices": targets.tolist(),
            "items": [raw[int(np.flatnonzero(index == t)[0])].as_py() for t in targets]}


def _write(data: str, output: str, train: pa.Table, users: pa.Table,
           user_features: pa.Table | None, meta: dict[str, Any],
           targets: dict[str, Any]) -> None:
    """Write the poisoned dataset through `atomic_dir`: all of it, or nothing; ``meta.json``
    last, as `prepare` does."""
    with atomic_dir(output, DATASET) as (fs, tmp):
        copy_files(data, COPIED, fs, tmp)
        write_parquet(fs, join(tmp, "train.parquet"), train)
        write_parquet(fs, join(tmp, "users.parquet"), users)
        if user_features is not None:
            write_parquet(fs, join(tmp, "user_features.parquet"), user_features)
        write_json(fs, join(tmp, TARGETS_FILE), targets)
        write_json(fs, join(tmp, "meta.json"), meta)
