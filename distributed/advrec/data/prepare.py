"""``advrec prepare``: a raw log in, a training dataset out.

    read_log -> min_rating -> drop duplicate (user, item) pairs -> k-core -> split -> vocab -> write

The output directory holds ``train/valid/test.parquet`` (``user`` int32, ``item`` int32,
``rating`` float32 when the log has ratings, ``timestamp`` int64, and for a CTR dataset
``label`` int8; sorted by user, time, item), the vocabularies ``users.parquet``/``items.parquet``
(``index`` int32, ``raw_id`` string), side features when present
(``user_features.parquet``/``item_features.parquet``: ``index`` int32 plus the raw columns, each
tagged with its RecBole type in the field metadata under ``recbole_type``; encoded by
:func:`advrec.data.features.load_features`), and ``meta.json``, written last. Side features come
from a RecBole log's ``.user``/``.item`` files, from a MovieLens log's user and movie files
(``u.user``/``u.item``/``u.genre``, ``users.dat``/``movies.dat``, ``movies.csv``: see
:func:`~advrec.data.readers.read_movielens_features`) beside its ratings, and from columns of a
CSV, Parquet or RecBole log named by ``ColumnMap.user_features``/``item_features`` (each user's
or item's value from its first row, in file order, that survives the filters and the split: a
user whose rows disagree gets the first row's value, without error). All of it is computed
before anything is written and then written through :func:`advrec.io.atomic_dir`, so a failure
leaves nothing behind, and the same input and options give byte-identical files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from advrec.config.schema import check_label_column, check_non_negative
from advrec.data.readers import (
    MOVIELENS_ID,
    ColumnMap,
    log_features,
    read_log,
    read_movielens_features,
    read_recbole_features,
)
from advrec.data.splits import DROPPED, TEST, TRAIN, VALID, assign_split, parse_split
from advrec.errors import AdvrecError
from advrec.io import Marker, atomic_dir, check_output, join, write_json, write_parquet

FORMAT_VERSION = 1
DATASET = Marker("meta.json", "format_version", "a prepared dataset")
"""What marks a directory as a dataset `prepare` wrote, which a new one may replace."""
SPLITS = {"train": TRAIN, "valid": VALID, "test": TEST}


def prepare(
    input: str,
    fmt: str,
    output: str,
    split: str = "random:0.8,0.1,0.1",
    min_rating: float | None = None,
    kcore: int = 0,
    seed: int = 0,
    columns: ColumnMap | None = None,
    label_threshold: float | None = None,
    buckets: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Prepare the raw log at ``input`` (format ``fmt``) into a dataset at ``output``.

    Args:
        input: path or fsspec URL of the raw log (see :func:`~advrec.data.readers.read_log`).
        fmt: the log's format, one of :data:`~advrec.data.readers.FORMATS`.
        output: the dataset directory to write, a path or fsspec URL: new, empty, or a
            dataset prepared before (which is replaced); apart from ``input``.
        split: a split spec, see :func:`~advrec.data.splits.parse_split`.
        min_rating: keep only interactions rated at least this (implicit positives).
        kcore: keep the largest subset where every user and item has >= ``kcore`` interactions
            (0 or 1: no filtering).
        seed: seeds the ``random`` split.
        columns: source column names for ``csv``, ``parquet`` and ``recbole`` logs.
        label_threshold: make a CTR dataset: keep every rated interaction and add a ``label``
            column, 1 where ``rating >= label_threshold`` else 0. Excludes ``min_rating``, which
            would drop the negatives.
        buckets: ``{"user": N, "item": M}``: hash that side's raw ids into a table of N rows
            (`hash_ids`) instead of one row per id, for id spaces too large to give each its
            own row; ``meta.json`` reports the collision rate under ``hashing``.

    ``columns.label`` makes a CTR dataset from the log's own 0/1 column instead (the log needs
    no rating then); it excludes ``label_threshold`` and ``min_rating``. ``columns.user_features``
    and ``columns.item_features`` carry columns of the log as side features (``csv``,
    ``parquet`` and ``recbole``; beside a RecBole ``.user``/``.item`` file's own columns).

    Returns:
        The dataset's metadata, as written to ``meta.json``.
    """
    spec = parse_split(split)  # a bad spec fails before a large log is read
    check_output(output, DATASET, inputs=(input,))  # and a bad output
    buckets = buckets or {}
    columns = columns or ColumnMap()
    _check_options(fmt, columns, min_rating, kcore, seed, label_threshold, buckets)
    log = _read(input, fmt, columns, min_rating, label_threshold)
    kept = keep_pairs(log, input, kcore, columns.label, label_threshold)
    parts = assign_split(spec, kept.codes["user"], kept.codes["item"], kept.timestamp, seed,
                         kept.names["user"])
    in_dataset = parts != DROPPED
    ids, hashing = _number_ids(kept, in_dataset, buckets)
    tables = _split_tables(kept, parts, ids)
    features = _side_features(input, fmt, columns, log, kept, in_dataset, ids, hashing)
    meta = {
        "format_version": FORMAT_VERSION,
        "num_users": buckets.get("user", len(ids["user"][1])),
        "num_items": buckets.get("item", len(ids["item"][1])),
        "counts": {name: t.num_rows for name, t in tables.items()},
        "schema": {f.name: str(f.type) for f in tables["train"].schema},
        "split": spec.to_dict(),
        "filters": {"min_rating": min_rating, "kcore": kcore},
        "task": "ranking" if kept.label is None else "ctr",
        "label_threshold": label_threshold,
        # Only when set, so that datasets prepared without one keep their bytes.
        **({"label_column": columns.label} if columns.label is not None else {}),
        "features": sorted(features),
        "seed": seed,
        "source": input,
        "input_format": fmt,
        # Only when set, as label_column
        **({"hashing": hashing} if hashing else {}),
    }
    write_dataset(output, tables, ids, features, meta)
    return meta


def _check_options(
    fmt: str,
    columns: ColumnMap,
    min_rating: float | None,
    kcore: int,
    seed: int,
    label_threshold: float | None,
    buckets: dict[str, int],
) -> None:
    """Refuse bad or clashing options before a large log is read."""
    for kind, n in buckets.items():
        if n < 1:
            raise AdvrecError(f"--{kind}-buckets/data.{kind}_buckets must be >= 0 (0: a row "
                              f"per {kind}), not {n}")
    check_non_negative("kcore", kcore, _option)
    check_non_negative("seed", seed, _option)
    if label_threshold is not None and min_rating is not None:
        raise AdvrecError(
            "--label-threshold/data.label_threshold and --min-rating/data.min_rating exclude "
            "each other: a CTR dataset keeps the low ratings as negatives"
        )
    for key, value in (("label_threshold", label_threshold), ("min_rating", min_rating)):
        if value is not None and not np.isfinite(value):
            raise AdvrecError(f"{_option(key)} must be a finite number, not {value}")
    _check_fixed_layout(columns, fmt)
    check_label_column(columns.label, label_threshold, min_rating, _option)


# The command-line flag of each option whose rules prepare shares with DataConfig.
_FLAGS = {"kcore": "--kcore", "seed": "--seed", "label_column": "--label-col",
          "label_threshold": "--label-threshold", "min_rating": "--min-rating"}


def _option(key: str) -> str:
    """A data option as prepare's messages name it, by flag and config key:
    ``--kcore/data.kcore``."""
    return f"{_FLAGS[key]}/data.{key}"


def _read(
    input: str,
    fmt: str,
    columns: ColumnMap,
    min_rating: float | None,
    label_threshold: float | None,
) -> pa.Table:
    """The log (see `read_log`), less the interactions rated below ``min_rating``; a log without
    ratings is an error when either option needs them."""
    log = read_log(input, fmt, columns)
    if label_threshold is not None and "rating" not in log.column_names:
        raise AdvrecError(
            f"{input}: --label-threshold/data.label_threshold needs a 'rating' column, "
            f"but this {fmt} log has none"
        )
    if min_rating is not None:
        if "rating" not in log.column_names:
            raise AdvrecError(
                f"{input}: --min-rating needs a 'rating' column, but this {fmt} log has none"
            )
        log = log.filter(pc.greater_equal(log["rating"], min_rating))
        if log.num_rows == 0:
            raise AdvrecError(f"{input}: --min-rating {min_rating} removed every interaction")
    return log


@dataclass(frozen=True)
class Kept:
    """The interactions of a log that the dataset keeps: the first of each (user, item) pair,
    within the k-core. Every array is (N,), one entry per kept row, in file order."""

    rows: np.ndarray  # their rows in the log, ascending
    codes: dict[str, np.ndarray]  # "user"/"item": integer codes, in order of first appearance
    names: dict[str, pa.Array]  # "user"/"item": the raw id of each code
    timestamp: np.ndarray
    rating: np.ndarray | None
    label: np.ndarray | None  # int8, for a CTR dataset


def keep_pairs(
    log: pa.Table, input: str, kcore: int, label_column: str | None,
    label_threshold: float | None, by_row: bool = False,
) -> Kept:
    """Drop repeated (user, item) pairs (keeping the earliest; with ``by_row``, the first row:
    the log is in the order to keep by, as a followed stream's is, by window then time) and
    what falls outside the k-core, and label the rest for a CTR dataset (the log's own labels,
    or rating >= ``label_threshold``)."""
    # Integer codes in order of first appearance; the final vocabulary is built at the end,
    # over the interactions that survive filtering and splitting.
    users = log["user"].combine_chunks().dictionary_encode()
    items = log["item"].combine_chunks().dictionary_encode()
    user = users.indices.to_numpy()
    item = items.indices.to_numpy()
    timestamp = log["timestamp"].to_numpy()

    rows = _first_of_each_pair(user, item, np.arange(len(user)) if by_row else timestamp)
    if kcore > 1:
        rows = rows[_kcore(user[rows], item[rows], kcore)]
        if rows.size == 0:
            raise AdvrecError(f"{input}: --kcore {kcore} removed every interaction")
    rating = log["rating"].to_numpy()[rows] if "rating" in log.column_names else None
    if label_column is not None:
        label = log["label"].to_numpy()[rows]
    else:
        label = None if label_threshold is None else (rating >= label_threshold).astype(np.int8)
    if label is not None and np.unique(label).size < 2:
        # AUC and log-loss need both classes: refused now, not after the first epoch's training
        only = "click (1)" if label[0] else "non-click (0)"
        source = (f"its label column '{label_column}'" if label_column is not None
                  else f"--label-threshold/data.label_threshold {label_threshold:g}")
        raise AdvrecError(f"{input}: every kept interaction is a {only} by {source}; a CTR "
                          "dataset needs clicks and non-clicks")
    return Kept(rows, {"user": user[rows], "item": item[rows]},
                 {"user": users.dictionary, "item": items.dictionary}, timestamp[rows], rating,
                 label)


_Ids = dict[str, tuple[np.ndarray, pa.Table]]
"""Per side ("user", "item"): the map from code to dataset index, and the vocabulary table (as
`vocabulary` returns them)."""


def _number_ids(
    kept: Kept, in_dataset: np.ndarray, buckets: dict[str, int]
) -> tuple[_Ids, dict[str, dict[str, Any]]]:
    """Number the users and items of the rows ``in_dataset`` ((N,) bool): 0..V-1 (`vocabulary`), or
    hashed into ``buckets[side]`` rows (`hash_ids`). Returns the ids and, per hashed side, its
    report."""
    hashing: dict[str, dict[str, Any]] = {}
    ids: _Ids = {}
    for kind in ("user", "item"):
        names, codes = kept.names[kind], kept.codes[kind][in_dataset]
        if kind in buckets:
            index, vocab, hashing[kind] = hash_ids(names, codes, buckets[kind])
            ids[kind] = index, vocab
        else:
            ids[kind] = vocabulary(names, codes)
    return ids, hashing


def _split_tables(kept: Kept, parts: np.ndarray, ids: _Ids) -> dict[str, pa.Table]:
    """The train, valid and test tables: the rows of each part of ``parts`` ((N,) split codes)."""
    (user_index, _), (item_index, _) = ids["user"], ids["item"]
    tables = {}
    for name, part in SPLITS.items():
        mask = parts == part
        tables[name] = interactions_table(
            user_index[kept.codes["user"][mask]],
            item_index[kept.codes["item"][mask]],
            kept.timestamp[mask],
            None if kept.rating is None else kept.rating[mask],
            None if kept.label is None else kept.label[mask],
        )
    return tables


def _side_features(
    input: str,
    fmt: str,
    columns: ColumnMap,
    log: pa.Table,
    kept: Kept,
    in_dataset: np.ndarray,
    ids: _Ids,
    hashing: dict[str, dict[str, Any]],
) -> dict[str, pa.Table]:
    """Each side's features, one row per dataset index: from the files beside a RecBole or
    MovieLens log, and from the log's own feature columns (each id's first row in the dataset)."""
    features = {}
    # The rows that made it into the dataset, in file order (`kept.rows` is ascending).
    kept_rows = kept.rows[in_dataset]
    for kind in ("user", "item"):
        vocab, codes, names = ids[kind][1], kept.codes[kind][in_dataset], kept.names[kind]
        from_log = log_features(log, kind)
        if from_log is not None:
            log_id = columns.user if kind == "user" else columns.item
            from_log = _first_values(from_log, kept_rows, codes, names, log_id)
            flag = f"--{kind}-features/data.{kind}_features"
            from_log = _features(from_log, vocab, log_id, f"{input} ({flag})")
        if fmt == "recbole":
            raw = read_recbole_features(input, kind)
            id_column = columns.user if kind == "user" else columns.item
            where = f"{input} (.{kind} file)"
        elif fmt == "movielens":
            raw = read_movielens_features(input, kind)
            id_column, where = MOVIELENS_ID[kind], f"{input} (MovieLens {kind} file)"
        else:
            raw = None
        if raw is not None:
            features[kind] = _features(raw, vocab, id_column, where)
        if from_log is not None:
            features[kind] = _join_features(features.get(kind), from_log, kind, input)
        if kind in features and kind in hashing:
            raise AdvrecError(f"{input}: {kind} side features need a row per {kind}; they do "
                              f"not go with --{kind}-buckets/data.{kind}_buckets")
    return features


def write_dataset(
    output: str,
    tables: dict[str, pa.Table],
    ids: _Ids,
    features: dict[str, pa.Table],
    meta: dict[str, Any],
) -> None:
    """Write the dataset through `atomic_dir`: all of it, or nothing."""
    with atomic_dir(output, DATASET) as (fs, tmp):
        for name, table in tables.items():
            write_parquet(fs, join(tmp, f"{name}.parquet"), table)
        write_parquet(fs, join(tmp, "users.parquet"), ids["user"][1])
        write_parquet(fs, join(tmp, "items.parquet"), ids["item"][1])
        for kind, table in features.items():
            write_parquet(fs, join(tmp, f"{kind}_features.parquet"), table)
        write_json(fs, join(tmp, "meta.json"), meta)  # last: its presence marks a complete dataset


def _check_fixed_layout(columns: ColumnMap, fmt: str) -> None:
    """The label and feature columns name columns of a csv, parquet or recbole log: a movielens
    or sasrec log has none to name."""
    if fmt in ("movielens", "sasrec"):
        for flag, value in (
            ("--label-col/data.label_column", columns.label),
            ("--user-features/data.user_features", columns.user_features),
            ("--item-features/data.item_features", columns.item_features),
        ):
            if value:
                raise AdvrecError(
                    f"{flag} names a column of a csv, parquet or recbole log; "
                    f"a {fmt} log has a fixed layout"
                )


def _first_values(
    raw: pa.Table, kept_rows: np.ndarray, codes: np.ndarray, names: pa.Array, id_column: str
) -> pa.Table:
    """One row per user (item) of ``codes``: its raw id (column ``id_column``, which no feature
    column of the log may be named) and the feature values of its first row among
    ``kept_rows`` (log rows in file order)."""
    present, first = np.unique(codes, return_index=True)
    values = raw.take(pa.array(kept_rows[first]))
    return pa.Table.from_arrays(
        [names.take(pa.array(present)), *values.columns],
        schema=pa.schema([pa.field(id_column, pa.string()), *values.schema]),
    )


def _join_features(
    own: pa.Table | None, from_log: pa.Table, kind: str, input: str
) -> pa.Table:
    """A RecBole ``.user``/``.item`` file's features and the log's, side by side (both are one
    row per vocabulary index, in order)."""
    if own is None:
        return from_log
    for name in from_log.column_names[1:]:
        if name in own.column_names:
            raise AdvrecError(
                f"{input}: {kind} feature column '{name}' is in both the log "
                f"(--{kind}-features/data.{kind}_features) and the .{kind} file"
            )
    extra = from_log.drop_columns(["index"])
    return pa.Table.from_arrays(
        [*own.columns, *extra.columns], schema=pa.schema([*own.schema, *extra.schema])
    )


def _first_of_each_pair(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Row indices (ascending) that keep each (user, item) pair's earliest interaction.

    Ties in time go to the earlier row.
    """
    by_time = np.lexsort((np.arange(len(user)), timestamp))
    pair = user.astype(np.int64) * (int(item.max(initial=0)) + 1) + item
    _, first = np.unique(pair[by_time], return_index=True)
    return np.sort(by_time[first])


def _kcore(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool mask of the k-core: drop users and items with < k interactions until none is left.

    Dropping a user can push an item below k and vice versa, hence the fixed-point loop.
    """
    keep = np.ones(len(user), dtype=bool)
    while True:
        user_count = np.bincount(user[keep], minlength=int(user.max()) + 1)
        item_count = np.bincount(item[keep], minlength=int(item.max()) + 1)
        core = keep & (user_count[user] >= k) & (item_count[item] >= k)
        if core.sum() == keep.sum():
            return keep
        keep = core


def vocabulary(names: pa.Array, codes: np.ndarray) -> tuple[np.ndarray, pa.Table]:
    """Number the raw ids behind ``codes`` 0..V-1.

    Ids are sorted numerically when they all parse as integers (so MovieLens user 2 comes
    before user 10), else lexicographically.

    Returns:
        ``index``: (len(names),) int32 array from code to new index (-1 for unused codes), and
        the vocabulary table (``index`` int32, ``raw_id`` string), sorted by index.
    """
    used = np.unique(codes)
    raw = names.take(pa.array(used))
    try:
        as_int = pc.cast(raw, pa.int64())
    except pa.ArrowInvalid:
        order = pc.sort_indices(raw).to_numpy()
    else:
        # '7' and '007' are the same integer: break such ties by the string.
        by = pa.table({"int": as_int, "raw": raw})
        order = pc.sort_indices(
            by, sort_keys=[("int", "ascending"), ("raw", "ascending")]
        ).to_numpy()
    index = np.full(len(names), -1, dtype=np.int32)
    index[used[order]] = np.arange(len(used), dtype=np.int32)
    vocab = pa.table(
        {
            "index": pa.array(np.arange(len(used), dtype=np.int32)),
            "raw_id": raw.take(pa.array(order)),
        }
    )
    return index, vocab


def hash_ids(names: pa.Array, codes: np.ndarray,
             buckets: int) -> tuple[np.ndarray, pa.Table, dict[str, Any]]:
    """Hash the raw ids behind ``codes`` into ``buckets`` rows: row = the first 8 bytes of the
    id's BLAKE2b digest (little-endian) mod ``buckets``, the same for an id in any run or
    process, so new logs hash as the training log did.

    Returns ``index`` (as `vocabulary`'s, rows instead of indices), the vocabulary table (``index``,
    ``raw_id``: every id with its row, several ids per row where they collide, sorted by row),
    and the hashing's report: ``buckets``, ``ids``, ``rows_used`` and ``collision_rate``, the
    share of ids that share their row with another, earlier id (1 - rows used / ids).
    """
    used = np.unique(codes)
    raw = names.take(pa.array(used)).cast(pa.string()).to_pylist()
    rows = np.fromiter((int.from_bytes(hashlib.blake2b(r.encode(), digest_size=8).digest(),
                                       "little") % buckets for r in raw),
                       dtype=np.int64, count=len(raw))
    index = np.full(len(names), -1, dtype=np.int32)
    index[used] = rows
    order = np.lexsort((np.array(raw, dtype=object), rows))
    vocab = pa.table({"index": pa.array(rows[order].astype(np.int32)),
                      "raw_id": pa.array(raw, pa.string()).take(pa.array(order))})
    distinct = int(np.unique(rows).size)
    report = {"buckets": buckets, "ids": len(raw), "rows_used": distinct,
              "collision_rate": 1.0 - distinct / max(len(raw), 1)}
    return index, vocab, report


def interactions_table(
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray,
    rating: np.ndarray | None,
    label: np.ndarray | None = None,
) -> pa.Table:
    """One split's table, sorted by (user, timestamp, item)."""
    order = np.lexsort((item, timestamp, user))
    columns = {"user": user[order].astype(np.int32), "item": item[order].astype(np.int32)}
    if rating is not None:
        columns["rating"] = rating[order].astype(np.float32)
    columns["timestamp"] = timestamp[order].astype(np.int64)
    if label is not None:
        columns["label"] = label[order].astype(np.int8)
    return pa.table(columns)


def _features(raw: pa.Table, vocab: pa.Table, id_column: str, where: str) -> pa.Table:
    """Side features aligned with ``vocab``: one row per index, nulls for ids the file lacks."""
    if id_column not in raw.column_names:
        raise AdvrecError(
            f"{where}: missing id column '{id_column}' (columns: {', '.join(raw.column_names)})"
        )
    ids = raw[id_column].combine_chunks()
    if pc.count_distinct(ids).as_py() < len(ids):
        counts = pc.value_counts(ids)
        dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[0]
        raise AdvrecError(f"{where}: column '{id_column}' lists id '{dup.as_py()}' more than once")
    rows = pc.index_in(vocab["raw_id"], value_set=ids)
    values = raw.drop_columns([id_column]).take(rows)
    # from_arrays with the raw schema keeps each field's metadata (its RecBole type)
    return pa.Table.from_arrays([vocab["index"], *values.columns],
                                schema=pa.schema([vocab.schema.field("index"), *values.schema]))
