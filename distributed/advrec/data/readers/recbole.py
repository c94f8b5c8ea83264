"""RecBole atomic files: the ``.inter`` log, and the ``.user``/``.item`` side features beside it."""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv

from advrec.data.readers.checks import numeric
from advrec.data.readers.columns import ColumnMap, standardize
from advrec.data.readers.files import name_in, parse_csv
from advrec.errors import AdvrecError
from advrec.io import filesystem

# RecBole atomic-file field types; only `float` is numeric, the rest are kept as strings.
_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
# Field-metadata key holding an atomic-file column's RecBole type: a token and a token_seq are
# both strings once read, and only the type tells a categorical from a multi-valued column.
RECBOLE_TYPE = b"recbole_type"


def read_recbole(url: str, columns: ColumnMap) -> pa.Table:
    """The ``.inter`` file at ``url`` (the file or its directory) as the standard table."""
    fs, path, where = _recbole_inter_path(url)
    return standardize(_read_atomic(fs, path, where), columns, where)


def read_recbole_features(url: str, kind: str) -> pa.Table | None:
    """Read the RecBole ``.user`` or ``.item`` file next to the ``.inter`` file at ``url``.

    Returns the raw columns (names without their ``:type`` suffix; ``float`` as float64, all
    other types as strings), or ``None`` when there is no such file.
    """
    if kind not in ("user", "item"):
        raise AdvrecError(f"{url}: feature kind must be 'user' or 'item', not '{kind}'")
    fs, inter, where = _recbole_inter_path(url)
    path = f"{inter.rsplit('.', 1)[0]}.{kind}"
    if not fs.exists(path):
        return None
    return _read_atomic(fs, path, f"{where.rsplit('.', 1)[0]}.{kind}")


def _recbole_inter_path(url: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """The ``.inter`` file at ``url`` (the file itself or the one in a directory): its
    filesystem, its path there, and its name for error messages."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise AdvrecError(f"{url}: file not found")
    if not fs.isdir(path):
        return fs, path, url
    inters = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".inter"))
    # RecBole names the file after its directory (ml-100k/ml-100k.inter); prefer that one.
    named = f"{path.rstrip('/')}/{posixpath.basename(path.rstrip('/'))}.inter"
    if named in inters or len(inters) == 1:
        found = named if named in inters else inters[0]
        return fs, found, name_in(url, path, found)
    if not inters:
        raise AdvrecError(f"{url}: no .inter file in this directory")
    names = ", ".join(posixpath.basename(p) for p in inters)
    raise AdvrecError(f"{url}: several .inter files ({names}); name the file to read")


def _read_atomic(fs: fsspec.AbstractFileSystem, path: str, where: str) -> pa.Table:
    """A RecBole atomic file: tab-separated with a typed header (``user_id:token ...``)."""
    try:
        with fs.open(path, "rb") as f:
            header = f.readline().decode("utf-8").rstrip("\r\n")
    except FileNotFoundError as exc:
        raise AdvrecError(f"{where}: file not found") from exc
    if not header:
        raise AdvrecError(f"{where}: empty file")
    names, types = [], []
    for field in header.split("\t"):
        name, _, ftype = field.rpartition(":")
        if not name or ftype not in _RECBOLE_TYPES:
            raise AdvrecError(
                f"{where}: header field '{field}' is not name:type "
                f"(type one of {', '.join(_RECBOLE_TYPES)})"
            )
        names.append(name)
        types.append(ftype)
    table = parse_csv(
        fs,
        path,
        where,
        pacsv.ReadOptions(column_names=names, skip_rows=1),
        pacsv.ParseOptions(delimiter="\t", quote_char=False),
        pacsv.ConvertOptions(
            column_types={n: pa.string() for n, t in zip(names, types) if t != "float"}
        ),
    )
    # Side features may be missing; the rating and time of an .inter file are checked later.
    floats = {
        n: numeric(table[n], n, where, allow_missing=True)
        for n, t in zip(names, types)
        if t == "float"
    }
    schema = pa.schema(
        pa.field(n, floats[n].type if n in floats else table[n].type, metadata={RECBOLE_TYPE: t})
        for n, t in zip(names, types)
    )
    return pa.Table.from_arrays([floats.get(n, table[n]) for n in names], schema=schema)

