"""Where a reader's bytes come from: a file, a directory's file or a ``.zip`` archive's, through
fsspec; how a file is named in messages; and pyarrow's CSV parser with its errors as one line."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv

from advrec.errors import AdvrecError
from advrec.io import filesystem


def resolve_file(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise AdvrecError(f"{url}: file not found")
    if fs.isdir(path):
        raise AdvrecError(f"{url}: is a directory, expected a file")
    return fs, path


def name_in(url: str, resolved: str, path: str) -> str:
    """Name ``path``, found under ``url`` (resolved to ``resolved``), for error messages."""
    if path == resolved:
        return url
    return f"{url.rstrip('/')}/{path[len(resolved.rstrip('/')) + 1 :]}"


@contextlib.contextmanager
def open_zip(url: str) -> Iterator[fsspec.AbstractFileSystem]:
    """The archive at ``url`` (any fsspec URL) as a read-only filesystem, open for the block."""
    fs, path = filesystem(url)
    if not fs.isfile(path):
        raise AdvrecError(f"{url}: file not found")
    with fs.open(path, "rb") as raw:
        try:
            zfs = fsspec.filesystem("zip", fo=raw)
        except zipfile.BadZipFile as exc:
            raise AdvrecError(f"{url}: not a zip archive ({exc})") from exc
        except (OSError, ValueError) as exc:  # e.g. an HTTP server without range requests
            raise AdvrecError(f"{url}: cannot read this zip archive ({first_line(exc)})") from exc
        try:
            yield zfs
        finally:
            zfs.close()


def parse_csv(
    fs: fsspec.AbstractFileSystem,
    path: str,
    where: str,
    read: pacsv.ReadOptions,
    parse: pacsv.ParseOptions,
    convert: pacsv.ConvertOptions,
    rows: str = "interactions",
) -> pa.Table:
    """``pyarrow.csv.read_csv`` on an fsspec file, with its errors turned into one-line ones;
    ``rows`` names what an empty file lacks."""
    try:
        with fs.open(path, "rb") as f:
            table = pacsv.read_csv(
                f, read_options=read, parse_options=parse, convert_options=convert
            )
    except FileNotFoundError as exc:
        raise AdvrecError(f"{where}: file not found") from exc
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise AdvrecError(f"{where}: empty file") from exc
        raise AdvrecError(f"{where}: cannot parse ({first_line(exc)})") from exc
    if table.num_rows == 0:
        raise AdvrecError(f"{where}: empty file (no {rows})")
    return table


def read_text(
    fs: fsspec.AbstractFileSystem, path: str, where: str, sep: str, names: list[str]
) -> pa.Table:
    """A headerless delimited file; ids are read as strings, numbers are inferred."""
    return parse_csv(
        fs,
        path,
        where,
        pacsv.ReadOptions(column_names=names),
        pacsv.ParseOptions(delimiter=sep, quote_char=False),
        pacsv.ConvertOptions(column_types={n: pa.string() for n in ("user", "item")}),
    )


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
