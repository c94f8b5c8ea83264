"""A CSV log: a header, any one-character separator, columns named by `ColumnMap`."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv

from advrec.data.readers.columns import ColumnMap, standardize
from advrec.data.readers.files import parse_csv, resolve_file


def read_csv_log(url: str, columns: ColumnMap) -> pa.Table:
    """The CSV file at ``url`` as the standard table."""
    fs, path = resolve_file(url)
    return read_csv_file(fs, path, url, columns)


def read_csv_file(
    fs: fsspec.AbstractFileSystem, path: str, where: str, columns: ColumnMap
) -> pa.Table:
    """The CSV file at ``path`` on ``fs`` (named ``where`` in messages) as the standard table."""
    table = parse_csv(
        fs,
        path,
        where,
        pacsv.ReadOptions(),
        pacsv.ParseOptions(delimiter=columns.sep),
        # Ids stay strings even when they look numeric, so '007' and '7' remain distinct.
        pacsv.ConvertOptions(column_types={columns.user: pa.string(), columns.item: pa.string()}),
    )
    return standardize(table, columns, where)

