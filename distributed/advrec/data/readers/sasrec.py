"""SASRec's text format: one ``user item`` pair a line, space-separated, in time order."""

from __future__ import annotations

import pyarrow as pa

from advrec.data.readers.columns import ColumnMap, standardize
from advrec.data.readers.files import read_text, resolve_file


def read_sasrec(url: str) -> pa.Table:
    """The file at ``url`` as the standard table; its row order is its time order."""
    fs, path = resolve_file(url)
    table = read_text(fs, path, url, " ", ["user", "item"])
    return standardize(table, ColumnMap("user", "item", None, None), url)
