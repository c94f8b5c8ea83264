"""`ColumnMap` (which source columns hold what) and turning a parsed log into the standard table
of `read_log`, with the log's own feature columns under prefixed names."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from advrec.config.schema import check_listed_once
from advrec.data.readers.checks import feature_values, id_strings, labels, numeric, timestamps
from advrec.errors import AdvrecError


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns hold the user, item, rating and time (CSV, Parquet, RecBole).

    ``rating`` and ``timestamp`` are optional: set them to ``None`` to ignore them. A log without
    a column of the *default* name simply has no rating (or time); a column named explicitly
    must exist. ``sep`` is the CSV field separator.

    ``label`` names an explicit click column (0/1 or booleans only), read as the int8 ``label``
    column. ``user_features`` and ``item_features`` name columns of the log that describe the
    user (item) of the row, carried as raw side features (see :func:`log_features`); each named
    column must exist.
    """

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"
    sep: str = ","
    label: str | None = None
    user_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # pyarrow's CSV parser splits on one character, and a line break ends the row
        if len(self.sep) != 1 or self.sep in "\r\n":
            raise AdvrecError(f"--sep: the CSV field separator must be one character other than a "
                              f"line break, not {self.sep!r}")


DEFAULT_COLUMNS = ColumnMap()
# The fields of ColumnMap that name one standard column each.
_STANDARD = ("user", "item", "rating", "timestamp", "label")
ROW_ORDER = {b"advrec": b"row order"}
"""The metadata of the standard table's ``timestamp`` field when the log has no times (the
field then holds each row's position: `standardize`)."""
# How a log's feature column is named in read_log's table: "user_feature:age".
_FEATURE_PREFIX = {"user": "user_feature:", "item": "item_feature:"}


def log_features(log: pa.Table, kind: str) -> pa.Table | None:
    """The ``kind`` (``user`` or ``item``) feature columns that :func:`read_log` carried from the
    log (``ColumnMap.user_features``/``item_features``), one row per row of ``log``, under their
    source names and with their field metadata; ``None`` when the log carries none."""
    prefix = _FEATURE_PREFIX[kind]
    fields = [f for f in log.schema if f.name.startswith(prefix)]
    if not fields:
        return None
    schema = pa.schema(f.with_name(f.name[len(prefix) :]) for f in fields)
    return pa.Table.from_arrays([log[f.name] for f in fields], schema=schema)


def source_columns(present: list[str], columns: ColumnMap, where: str) -> dict[str, str]:
    """Map each standard column to the source column holding it, checking that it exists."""
    source: dict[str, str] = {}
    for f in fields(ColumnMap):
        if f.name not in _STANDARD:
            continue
        name = getattr(columns, f.name)
        if name is None:
            continue
        if name in present:
            source[f.name] = name
        elif f.name in ("user", "item") or name != getattr(DEFAULT_COLUMNS, f.name):
            raise AdvrecError(
                f"{where}: missing {f.name} column '{name}' (columns: {', '.join(present)})"
            )
    return source


def feature_sources(present: list[str], columns: ColumnMap, where: str) -> list[str]:
    """The log's user and item feature columns, checking that each is not the id column of its
    side, is listed once and exists."""
    for kind, names in (("user", columns.user_features), ("item", columns.item_features)):
        own_id = columns.user if kind == "user" else columns.item
        if own_id in names:
            raise AdvrecError(
                f"{where}: {kind} feature column '{own_id}' is the {kind} id column itself"
            )
        check_listed_once(names, f"{where}: {kind} feature column")
        for name in names:
            if name not in present:
                raise AdvrecError(
                    f"{where}: missing {kind} feature column '{name}' "
                    f"(columns: {', '.join(present)})"
                )
    return [*columns.user_features, *columns.item_features]


def standardize(table: pa.Table, columns: ColumnMap, where: str) -> pa.Table:
    """Select, check and cast the user/item/rating/timestamp/label columns of a parsed log, and
    append its feature columns under prefixed names."""
    source = source_columns(table.column_names, columns, where)
    feature_sources(table.column_names, columns, where)
    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    for key in ("user", "item"):
        out[key] = id_strings(table[source[key]], source[key], where)
    if "rating" in source:
        out["rating"] = numeric(table[source["rating"]], source["rating"], where)
    if "timestamp" in source:
        out["timestamp"] = timestamps(table[source["timestamp"]], source["timestamp"], where)
    else:
        # No time in the log: the row order is the time order.
        out["timestamp"] = pa.array(np.arange(table.num_rows, dtype=np.int64))
    if "label" in source:
        out["label"] = labels(table[source["label"]], source["label"], where)
    schema = [pa.field(name, col.type, metadata=ROW_ORDER if name == "timestamp"
                       and "timestamp" not in source else None) for name, col in out.items()]
    for kind, names in (("user", columns.user_features), ("item", columns.item_features)):
        for name in names:
            field = table.schema.field(name)
            col = feature_values(table[name], name, where)
            out[_FEATURE_PREFIX[kind] + name] = col
            # The field metadata (a RecBole .inter column's type) goes along.
            schema.append(pa.field(_FEATURE_PREFIX[kind] + name, col.type, metadata=field.metadata))
    return pa.Table.from_arrays(list(out.values()), schema=pa.schema(schema))

