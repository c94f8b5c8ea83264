"""Readers for raw interaction logs: MovieLens, RecBole atomic files, SASRec text, CSV, Parquet.

Every reader returns the same table, one row per interaction, in file order:

    user       string
    item       string
    rating     float64   only when the format has one
    timestamp  int64     the 0-based row order when the format has no time
    label      int8      only with ``ColumnMap.label``: an explicit 0/1 click column

followed, when ``ColumnMap.user_features``/``item_features`` name columns of the log, by those raw
columns under prefixed names (taken apart again by :func:`log_features`).

Side features come from :func:`read_recbole_features` (a RecBole ``.user``/``.item`` file) and
:func:`read_movielens_features` (MovieLens' own user and movie files beside the ratings), both
as raw columns tagged with their RecBole type (:data:`RECBOLE_TYPE`).

All parsing is done by pyarrow (no Python loops over rows), and all file access goes through
fsspec, so a local path, an ``s3://`` URL and a file inside a ``.zip`` take the same code path.
"""

from __future__ import annotations

import pyarrow as pa

from advrec.data.readers.columns import ColumnMap, log_features
from advrec.data.readers.csv_log import read_csv_log
from advrec.data.readers.movielens import MOVIELENS_ID, read_movielens, read_movielens_features
from advrec.data.readers.parquet_log import read_parquet
from advrec.data.readers.recbole import RECBOLE_TYPE, read_recbole, read_recbole_features
from advrec.data.readers.sasrec import read_sasrec
from advrec.errors import AdvrecError

__all__ = [
    "FORMATS",
    "MOVIELENS_ID",
    "RECBOLE_TYPE",
    "ColumnMap",
    "log_features",
    "read_log",
    "read_movielens_features",
    "read_recbole_features",
]

FORMATS = ("movielens", "recbole", "sasrec", "csv", "parquet")


def read_log(url: str, fmt: str, columns: ColumnMap | None = None) -> pa.Table:
    """Read an interaction log into the standard ``user, item, [rating], timestamp`` table.

    Args:
        url: a file, a directory or (MovieLens) a ``.zip`` archive; a path or any fsspec URL.
        fmt: one of :data:`FORMATS`.
        columns: source column names for ``csv``, ``parquet`` and ``recbole``; ignored by the
            fixed-layout ``movielens`` and ``sasrec`` formats.

    Raises:
        AdvrecError: naming the file and column for a missing file or column, a non-numeric,
            missing or NaN rating/timestamp, a label other than 0/1, a feature column of a type
            no feature encoding takes, an empty log, or an unknown format.
    """
    columns = columns or ColumnMap()
    if fmt == "movielens":
        return read_movielens(url)
    if fmt == "recbole":
        return read_recbole(url, columns)
    if fmt == "sasrec":
        return read_sasrec(url)
    if fmt == "csv":
        return read_csv_log(url, columns)
    if fmt == "parquet":
        return read_parquet(url, columns)
    raise AdvrecError(f"{url}: unknown format '{fmt}' (expected one of: {', '.join(FORMATS)})")
