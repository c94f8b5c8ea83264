"""A Parquet log: one file or a directory of part files (a dataset written by Spark, Ray, ...)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from advrec.data.readers.checks import check_id_type
from advrec.data.readers.columns import ColumnMap, feature_sources, source_columns, standardize
from advrec.data.readers.files import first_line, name_in
from advrec.errors import AdvrecError
from advrec.io import filesystem


def _same_kind(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether two parts' types of a column concatenate (int32 and int64 do; int and string
    do not)."""
    kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string,
             pa.types.is_large_string, pa.types.is_boolean)
    return a == b or any(kind(a) and kind(b) for kind in kinds)


_FILES_AT_ONCE = 16  # Parquet part files held in memory, still compressed, while reading


def parquet_files(url: str) -> list[str]:
    """The Parquet files of ``url`` (paths on its filesystem, sorted): the file itself, or every
    ``*.parquet`` under the directory or prefix, less hidden and ``_``-prefixed ones and those
    under such a directory (Spark's ``_SUCCESS`` and ``_temporary/``, a writer's ``.part``
    files and ``.spark-staging-*/``: files not committed yet, which their writer may still
    change or remove). A listing is fresh: an object store's is not taken from fsspec's cache,
    which would hide files that landed since."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        raise AdvrecError(f"{url}: file not found")
    if not fs.isdir(path):
        return [path]
    root = path.rstrip("/")
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet") and not any(
        part.startswith(("_", ".")) for part in p[len(root) + 1:].split("/")))
    if not files:
        raise AdvrecError(f"{url}: no .parquet files in this directory")
    return files


def read_parquet(url: str, columns: ColumnMap, files: list[str] | None = None,
                 empty: bool = False) -> pa.Table:
    """The log of the Parquet file or directory ``url`` (its ``files`` only, when given: paths
    under it, as `parquet_files` lists them) as the standard table; one without rows is an
    error unless ``empty``."""
    fs, path = filesystem(url)
    files = parquet_files(url) if files is None else files
    parts = []
    first_source: dict[str, str] | None = None  # the first part's standard columns
    for start in range(0, len(files), _FILES_AT_ONCE):
        batch = files[start : start + _FILES_AT_ONCE]
        # whole files, fetched concurrently: on an object store one GET each instead of a
        # footer read and then a range read per column, one file after another
        blobs = fs.cat(batch, on_error="return")
        for p in batch:
            where = name_in(url, path, p)
            try:
                if isinstance(blobs[p], Exception):
                    raise blobs[p]
                pf = pq.ParquetFile(pa.BufferReader(blobs[p]))
                names = pf.schema_arrow.names
                source = source_columns(names, columns, where)
                for key in ("user", "item"):  # before reading: a nested column is not read at all
                    kind = pf.schema_arrow.field(source[key]).type
                    if pa.types.is_dictionary(kind):
                        kind = kind.value_type
                    check_id_type(kind, source[key], where)
                wanted = [*source.values(), *feature_sources(names, columns, where)]
                part = pf.read(columns=list(dict.fromkeys(wanted)))
            except (pa.ArrowInvalid, OSError) as exc:
                raise AdvrecError(f"{where}: cannot read Parquet ({first_line(exc)})") from exc
            first_source = first_source if first_source is not None else source
            for key in sorted(set(first_source) ^ set(source)):  # a part without a column
                first_name = name_in(url, path, files[0])
                lacks, has = (where, first_name) if key in first_source else (first_name, where)
                raise AdvrecError(f"{lacks}: no {key} column "
                                  f"'{(first_source | source)[key]}', which {has} has")
            if parts:  # every part as the first: the culprit is the part and column that differ
                first = parts[0].schema
                for field in part.schema:
                    if field.name in first.names and not _same_kind(first.field(field.name).type,
                                                                    field.type):
                        raise AdvrecError(
                            f"{where}: column '{field.name}' is {field.type}, but "
                            f"{first.field(field.name).type} in {name_in(url, path, files[0])}")
            parts.append(part)
    table = pa.concat_tables(parts, promote_options="permissive")
    if table.num_rows == 0 and not empty:
        raise AdvrecError(f"{url}: empty (no interactions)")
    return standardize(table, columns, url)

