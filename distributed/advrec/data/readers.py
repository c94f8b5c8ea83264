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

import contextlib
import posixpath
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from advrec.errors import AdvrecError
from advrec.io import filesystem

FORMATS = ("movielens", "recbole", "sasrec", "csv", "parquet")

# MovieLens releases, in the order they are looked for inside a directory or archive:
# ml-100k (tab), ml-1m/ml-10m (`::`), ml-latest/ml-20m/ml-25m (CSV with a header).
_MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")

# MovieLens side-feature files, by the ratings file they sit beside: (users file, movies file).
# ml-latest has no users file.
_MOVIELENS_FEATURE_FILES = {
    "u.data": ("u.user", "u.item"),
    "ratings.dat": ("users.dat", "movies.dat"),
    "ratings.csv": (None, "movies.csv"),
}
# The id column of a MovieLens features table (named as in RecBole's atomic files).
MOVIELENS_ID = {"user": "user_id", "item": "item_id"}

# RecBole atomic-file field types; only `float` is numeric, the rest are kept as strings.
_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
# Field-metadata key holding an atomic-file column's RecBole type: a token and a token_seq are
# both strings once read, and only the type tells a categorical from a multi-valued column.
RECBOLE_TYPE = b"recbole_type"


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


_DEFAULT_COLUMNS = ColumnMap()
# The fields of ColumnMap that name one standard column each.
_STANDARD = ("user", "item", "rating", "timestamp", "label")
# How a log's feature column is named in read_log's table: "user_feature:age".
_FEATURE_PREFIX = {"user": "user_feature:", "item": "item_feature:"}


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
    columns = columns or _DEFAULT_COLUMNS
    if fmt == "movielens":
        return _read_movielens(url)
    if fmt == "recbole":
        fs, path, where = _recbole_inter_path(url)
        return _standardize(_read_atomic(fs, path, where), columns, where)
    if fmt == "sasrec":
        fs, path = _resolve_file(url)
        table = _read_text(fs, path, url, " ", ["user", "item"])
        return _standardize(table, ColumnMap("user", "item", None, None), url)
    if fmt == "csv":
        fs, path = _resolve_file(url)
        return _read_csv(fs, path, url, columns)
    if fmt == "parquet":
        return _read_parquet(url, columns)
    raise AdvrecError(f"{url}: unknown format '{fmt}' (expected one of: {', '.join(FORMATS)})")


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


def read_movielens_features(url: str, kind: str) -> pa.Table | None:
    """Read the MovieLens user or movie file beside the ratings file that ``url`` leads to.

    ``url`` is what :func:`read_log` takes for the ``movielens`` format (a ratings file, a
    directory or a ``.zip`` archive); the features file must sit in the same directory (or
    archive folder) as the ratings. Columns are named as in RecBole's ml-100k atomic files, all
    strings, each field tagged with its RecBole type under :data:`RECBOLE_TYPE`:

    - ``user``: ``user_id``, ``age``, ``gender``, ``occupation``, ``zip_code`` (all ``token``),
      from ``u.user`` (ml-100k) or ``users.dat`` (ml-1m, where age and occupation are codes);
    - ``item``: ``item_id``, ``movie_title`` (the title without its trailing ``(year)``, as
      RecBole has it), ``release_year`` (four digits, '' when unknown; both ``token``) and
      ``class`` (``token_seq``: the genre names, space-separated, '' for none), from ``u.item``
      (year of the release date; genre names from ``u.genre``, or the genre's 0-based flag
      position when there is no ``u.genre``), ``movies.dat`` (ml-1m) or ``movies.csv``
      (ml-latest; year from the title, ``(no genres listed)`` becomes '').

    Returns ``None`` when there is no such file. ``u.*`` and ``.dat`` files are read as UTF-8,
    or as Latin-1 (the encoding of ml-100k and ml-1m) when they are no valid UTF-8.

    Raises:
        AdvrecError: naming the file and line for a line with the wrong number of fields, an id
            that is no positive integer or is listed twice, a genre flag other than 0/1, a
            release date without a year, or a bad ``u.genre``.
    """
    if kind not in MOVIELENS_ID:
        raise AdvrecError(f"{url}: feature kind must be 'user' or 'item', not '{kind}'")
    with _movielens_files(url) as (fs, ratings, where):
        directory, name = posixpath.split(ratings)
        # a ratings file under another name has no feature files we know of
        found = _MOVIELENS_FEATURE_FILES.get(name, (None, None))[0 if kind == "user" else 1]
        path = posixpath.join(directory, found) if found else None
        if path is None or not fs.isfile(path):
            return None
        if found == "u.user":
            return _read_u_user(fs, path, where(path))
        if found == "u.item":
            genres = posixpath.join(directory, "u.genre")
            names = _read_u_genre(fs, genres, where(genres)) if fs.isfile(genres) else None
            return _read_u_item(fs, path, where(path), names)
        if found == "users.dat":
            return _read_users_dat(fs, path, where(path))
        if found == "movies.dat":
            return _read_movies_dat(fs, path, where(path))
        return _read_movies_csv(fs, path, where(path))


# ---------------------------------------------------------------------------------------------
# Locating files


def _resolve_file(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise AdvrecError(f"{url}: file not found")
    if fs.isdir(path):
        raise AdvrecError(f"{url}: is a directory, expected a file")
    return fs, path


def _where(url: str, resolved: str, path: str) -> str:
    """Name ``path``, found under ``url`` (resolved to ``resolved``), for error messages."""
    if path == resolved:
        return url
    return f"{url.rstrip('/')}/{path[len(resolved.rstrip('/')) + 1 :]}"


@contextlib.contextmanager
def _open_zip(url: str) -> Iterator[fsspec.AbstractFileSystem]:
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
            raise AdvrecError(f"{url}: cannot read this zip archive ({_first_line(exc)})") from exc
        try:
            yield zfs
        finally:
            zfs.close()


@contextlib.contextmanager
def _movielens_files(
    url: str,
) -> Iterator[tuple[fsspec.AbstractFileSystem, str, Callable[[str], str]]]:
    """The MovieLens ratings file that ``url`` leads to, for the block: its filesystem (an open
    archive for a ``.zip``), its path there, and how to name a file there in messages."""
    if url.rstrip("/").endswith(".zip"):
        with _open_zip(url) as zfs:
            yield zfs, _find_movielens(zfs, "", url), lambda p: f"zip://{p}::{url}"
        return
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise AdvrecError(f"{url}: file not found")
    if fs.isdir(path):
        yield fs, _find_movielens(fs, path, url), lambda p: _where(url, path, p)
        return
    base = posixpath.basename(path)
    prefix = url[: len(url) - len(base)] if url.endswith(base) else ""
    yield fs, path, lambda p: url if p == path else prefix + posixpath.basename(p)


def _find_movielens(fs: fsspec.AbstractFileSystem, root: str, url: str) -> str:
    """Find a MovieLens ratings file in ``root`` or one directory below it."""
    dirs = [root] + sorted(e["name"] for e in fs.ls(root, detail=True) if e["type"] == "directory")
    for d in dirs:
        for name in _MOVIELENS_FILES:
            path = f"{d.rstrip('/')}/{name}" if d else name
            if fs.isfile(path):
                return path
    raise AdvrecError(
        f"{url}: no MovieLens ratings file ({', '.join(_MOVIELENS_FILES)}) here or one level down"
    )


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
        return fs, found, _where(url, path, found)
    if not inters:
        raise AdvrecError(f"{url}: no .inter file in this directory")
    names = ", ".join(posixpath.basename(p) for p in inters)
    raise AdvrecError(f"{url}: several .inter files ({names}); name the file to read")


# ---------------------------------------------------------------------------------------------
# Parsing


def _read_movielens(url: str) -> pa.Table:
    with _movielens_files(url) as (fs, path, where):
        return _read_movielens_file(fs, path, where(path))


def _read_movielens_file(fs: fsspec.AbstractFileSystem, path: str, where: str) -> pa.Table:
    names = ["user", "item", "rating", "timestamp"]
    std = ColumnMap("user", "item", "rating", "timestamp")
    if path.endswith(".csv"):
        return _read_csv(fs, path, where, ColumnMap("userId", "movieId", "rating", "timestamp"))
    if path.endswith(".dat"):
        # pyarrow's CSV parser takes a one-character delimiter only: splitting `1::2::5::9` on
        # ':' gives the four fields with an empty column between each pair.
        raw = _read_text(
            fs, path, where, ":", ["user", "_1", "item", "_2", "rating", "_3", "timestamp"]
        )
        return _positive_ids(_standardize(raw.select(names), std, where), where)
    return _positive_ids(_standardize(_read_text(fs, path, where, "\t", names), std, where), where)


def _csv(
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
        raise AdvrecError(f"{where}: cannot parse ({_first_line(exc)})") from exc
    if table.num_rows == 0:
        raise AdvrecError(f"{where}: empty file (no {rows})")
    return table


def _read_text(
    fs: fsspec.AbstractFileSystem, path: str, where: str, sep: str, names: list[str]
) -> pa.Table:
    """A headerless delimited file; ids are read as strings, numbers are inferred."""
    return _csv(
        fs,
        path,
        where,
        pacsv.ReadOptions(column_names=names),
        pacsv.ParseOptions(delimiter=sep, quote_char=False),
        pacsv.ConvertOptions(column_types={n: pa.string() for n in ("user", "item")}),
    )


def _read_csv(fs: fsspec.AbstractFileSystem, path: str, where: str, columns: ColumnMap) -> pa.Table:
    table = _csv(
        fs,
        path,
        where,
        pacsv.ReadOptions(),
        pacsv.ParseOptions(delimiter=columns.sep),
        # Ids stay strings even when they look numeric, so '007' and '7' remain distinct.
        pacsv.ConvertOptions(column_types={columns.user: pa.string(), columns.item: pa.string()}),
    )
    return _standardize(table, columns, where)


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
    table = _csv(
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
        n: _numeric(table[n], n, where, allow_missing=True)
        for n, t in zip(names, types)
        if t == "float"
    }
    schema = pa.schema(
        pa.field(n, floats[n].type if n in floats else table[n].type, metadata={RECBOLE_TYPE: t})
        for n, t in zip(names, types)
    )
    return pa.Table.from_arrays([floats.get(n, table[n]) for n in names], schema=schema)


def _same_kind(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether two parts' types of a column concatenate (int32 and int64 do; int and string
    do not)."""
    kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string,
             pa.types.is_large_string, pa.types.is_boolean)
    return a == b or any(kind(a) and kind(b) for kind in kinds)


_FILES_AT_ONCE = 16  # Parquet part files held in memory, still compressed, while reading


def _read_parquet(url: str, columns: ColumnMap) -> pa.Table:
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise AdvrecError(f"{url}: file not found")
    if fs.isdir(path):
        files = sorted(
            p
            for p in fs.find(path)
            if p.endswith(".parquet") and not posixpath.basename(p).startswith(("_", "."))
        )
        if not files:
            raise AdvrecError(f"{url}: no .parquet files in this directory")
    else:
        files = [path]
    parts = []
    for start in range(0, len(files), _FILES_AT_ONCE):
        batch = files[start : start + _FILES_AT_ONCE]
        # whole files, fetched concurrently: on an object store one GET each instead of a
        # footer read and then a range read per column, one file after another
        blobs = fs.cat(batch, on_error="return")
        for p in batch:
            where = _where(url, path, p)
            try:
                if isinstance(blobs[p], Exception):
                    raise blobs[p]
                pf = pq.ParquetFile(pa.BufferReader(blobs[p]))
                names = pf.schema_arrow.names
                source = _source_columns(names, columns, where)
                for key in ("user", "item"):  # before reading: a nested column is not read at all
                    kind = pf.schema_arrow.field(source[key]).type
                    if pa.types.is_dictionary(kind):
                        kind = kind.value_type
                    _check_id_type(kind, source[key], where)
                wanted = [*source.values(), *_feature_sources(names, columns, where)]
                part = pf.read(columns=list(dict.fromkeys(wanted)))
            except (pa.ArrowInvalid, OSError) as exc:
                raise AdvrecError(f"{where}: cannot read Parquet ({_first_line(exc)})") from exc
            if parts:  # every part as the first: the culprit is the part and column that differ
                first = parts[0].schema
                for field in part.schema:
                    if field.name in first.names and not _same_kind(first.field(field.name).type,
                                                                    field.type):
                        raise AdvrecError(
                            f"{where}: column '{field.name}' is {field.type}, but "
                            f"{first.field(field.name).type} in {_where(url, path, files[0])}")
            parts.append(part)
    table = pa.concat_tables(parts, promote_options="permissive")
    if table.num_rows == 0:
        raise AdvrecError(f"{url}: empty (no interactions)")
    return _standardize(table, columns, url)


# ---------------------------------------------------------------------------------------------
# MovieLens side features

_U_ITEM_LAYOUT = "movie id|title|release date|video release date|IMDb URL"
# A year in parentheses ending a title: "Toy Story (1995)".
_TITLE_YEAR = r"\s*\((?P<year>[0-9]{4})\)\s*$"
# ml-latest's marker of a movie without genres.
_NO_GENRES = "(no genres listed)"


def _read_u_user(fs: fsspec.AbstractFileSystem, path: str, where: str) -> pa.Table:
    """ml-100k's ``u.user``: ``user id|age|gender|occupation|zip code``."""
    lines, numbers = _read_lines(fs, path, where)
    user, age, gender, occupation, zip_code = _split_lines(
        lines, numbers, "|", 5, where, "user id|age|gender|occupation|zip code"
    )
    _check_ids(user, numbers, where, "user")
    return _feature_table(
        {"user_id": user, "age": age, "gender": gender, "occupation": occupation,
         "zip_code": zip_code}
    )


def _read_users_dat(fs: fsspec.AbstractFileSystem, path: str, where: str) -> pa.Table:
    """ml-1m's ``users.dat``: ``UserID::Gender::Age::Occupation::Zip-code``."""
    lines, numbers = _read_lines(fs, path, where)
    user, gender, age, occupation, zip_code = _split_lines(
        lines, numbers, "::", 5, where, "UserID::Gender::Age::Occupation::Zip-code"
    )
    _check_ids(user, numbers, where, "user")
    return _feature_table(
        {"user_id": user, "age": age, "gender": gender, "occupation": occupation,
         "zip_code": zip_code}
    )


def _read_u_genre(fs: fsspec.AbstractFileSystem, path: str, where: str) -> list[str]:
    """ml-100k's ``u.genre`` (``name|index`` lines): the genre names in index order."""
    lines, numbers = _read_lines(fs, path, where)
    names, index = _split_lines(lines, numbers, "|", 2, where, "genre name|index")
    # A name becomes one token of a space-separated token_seq, so it may hold no whitespace.
    bad = pc.invert(pc.match_substring_regex(names, r"^\S+$"))
    if pc.any(bad).as_py():
        row = _first(bad) - 1
        raise AdvrecError(
            f"{where}: line {numbers[row]}: genre name '{names[row]}' is empty or has whitespace"
        )
    bad = pc.invert(pc.match_substring_regex(index, r"^[0-9]+$"))
    if pc.any(bad).as_py():
        row = _first(bad) - 1
        raise AdvrecError(
            f"{where}: line {numbers[row]}: genre index '{index[row]}' is not an integer >= 0"
        )
    idx = index.cast(pa.int64()).to_numpy()
    _, first = np.unique(idx, return_index=True)
    repeated = np.ones(len(idx), dtype=bool)
    repeated[first] = False
    bad_rows = np.flatnonzero(repeated | (idx >= len(idx)))
    if bad_rows.size:
        row = bad_rows[0]
        raise AdvrecError(
            f"{where}: line {numbers[row]}: genre index {idx[row]} repeats or is out of range "
            f"(the {len(idx)} genres must be numbered 0..{len(idx) - 1}, each once)"
        )
    return names.take(pa.array(np.argsort(idx))).to_pylist()


def _read_u_item(
    fs: fsspec.AbstractFileSystem, path: str, where: str, genres: list[str] | None
) -> pa.Table:
    """ml-100k's ``u.item``: five fields, then one 0/1 flag per genre of ``genres`` (named by
    flag position, 0-based, when ``genres`` is ``None``: then the first line sets the count)."""
    lines, numbers = _read_lines(fs, path, where)
    if genres is None:
        count = pc.list_value_length(pc.split_pattern(lines.slice(0, 1), "|"))[0].as_py()
        if count <= 5:
            raise AdvrecError(
                f"{where}: line {numbers[0]} has {count} fields, expected {_U_ITEM_LAYOUT} "
                "and a flag per genre"
            )
        genres = [str(j) for j in range(count - 5)]
    layout = f"{_U_ITEM_LAYOUT} and {len(genres)} genre flags"
    fields = _split_lines(lines, numbers, "|", 5 + len(genres), where, layout)
    item, title, date = fields[0], fields[1], fields[2]
    _check_ids(item, numbers, where, "movie")
    flags = np.zeros((len(lines), len(genres)), dtype=bool)
    for j, flag in enumerate(fields[5:]):
        bad = pc.invert(pc.is_in(flag, value_set=pa.array(["0", "1"])))
        if pc.any(bad).as_py():
            row = _first(bad) - 1
            raise AdvrecError(
                f"{where}: line {numbers[row]}, field {6 + j} (genre '{genres[j]}'): "
                f"flag '{flag[row]}' is not 0 or 1"
            )
        flags[:, j] = pc.equal(flag, "1").to_numpy(zero_copy_only=False)
    year = pc.struct_field(pc.extract_regex(date, r"(?:^|[^0-9])(?P<year>[0-9]{4})$"), [0])
    bad = pc.and_(pc.not_equal(date, ""), pc.is_null(year))
    if pc.any(bad).as_py():
        row = _first(bad) - 1
        raise AdvrecError(
            f"{where}: line {numbers[row]}, field 3: release date '{date[row]}' has no year"
        )
    _, columns = np.nonzero(flags)  # row-major: each movie's genres in genre-index order
    offsets = np.concatenate([[0], np.cumsum(flags.sum(axis=1))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(genres).take(pa.array(columns)))
    return _feature_table(
        {"item_id": item, "movie_title": _strip_year(title), "release_year": year.fill_null(""),
         "class": pc.binary_join(lists, " ")}
    )


def _read_movies_dat(fs: fsspec.AbstractFileSystem, path: str, where: str) -> pa.Table:
    """ml-1m's ``movies.dat``: ``MovieID::Title (Year)::Genre1|Genre2``."""
    lines, numbers = _read_lines(fs, path, where)
    item, title, genres = _split_lines(
        lines, numbers, "::", 3, where, "MovieID::Title::Genres"
    )
    _check_ids(item, numbers, where, "movie")
    return _movies(item, title, genres, numbers, "line", where)


def _read_movies_csv(fs: fsspec.AbstractFileSystem, path: str, where: str) -> pa.Table:
    """ml-latest's ``movies.csv``: ``movieId,title,genres`` with a header, quoted, UTF-8."""
    names = ["movieId", "title", "genres"]
    table = _csv(
        fs,
        path,
        where,
        pacsv.ReadOptions(),
        pacsv.ParseOptions(delimiter=","),
        pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        rows="movies",
    )
    for name in names:
        if name not in table.column_names:
            raise AdvrecError(
                f"{where}: missing column '{name}' (columns: {', '.join(table.column_names)})"
            )
    item, title, genres = (table[n].combine_chunks().fill_null("") for n in names)
    numbers = np.arange(1, len(item) + 1)
    _check_ids(item, numbers, where, "movie", unit="data row")
    return _movies(item, title, genres, numbers, "data row", where)


def _movies(
    item: pa.Array, title: pa.Array, genres: pa.Array, numbers: np.ndarray, unit: str, where: str
) -> pa.Table:
    """The item features of a ``Title (Year)`` and ``Genre1|Genre2`` movie list."""
    genres = pc.if_else(pc.equal(genres, _NO_GENRES), "", genres)
    bad = pc.match_substring_regex(genres, r"\s")
    if pc.any(bad).as_py():
        row = _first(bad) - 1
        raise AdvrecError(
            f"{where}: {unit} {numbers[row]}: genres '{genres[row]}' hold whitespace "
            "(genre names become space-separated tokens)"
        )
    year = pc.struct_field(pc.extract_regex(title, _TITLE_YEAR), [0])
    return _feature_table(
        {"item_id": item, "movie_title": _strip_year(title), "release_year": year.fill_null(""),
         "class": pc.replace_substring(genres, "|", " ")}
    )


def _strip_year(title: pa.Array) -> pa.Array:
    """Titles without their trailing ``(year)``, as RecBole's atomic files have them."""
    return pc.replace_substring_regex(title, _TITLE_YEAR, "")


def _read_lines(
    fs: fsspec.AbstractFileSystem, path: str, where: str
) -> tuple[pa.Array, np.ndarray]:
    """The non-blank lines of a (small) text file, and their 1-based line numbers."""
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise AdvrecError(f"{where}: file not found") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # ml-100k's and ml-1m's encoding; any bytes decode
    lines = pc.utf8_rtrim(pc.list_flatten(pc.split_pattern(pa.array([text]), "\n")), "\r")
    keep = pc.not_equal(pc.utf8_trim_whitespace(lines), "")
    numbers = np.flatnonzero(keep.to_numpy(zero_copy_only=False)) + 1
    if numbers.size == 0:
        raise AdvrecError(f"{where}: empty file")
    return lines.filter(keep), numbers


def _split_lines(
    lines: pa.Array, numbers: np.ndarray, sep: str, count: int, where: str, layout: str
) -> list[pa.Array]:
    """Split each line at ``sep`` into exactly ``count`` fields: one string array per field."""
    parts = pc.split_pattern(lines, sep)
    lengths = pc.list_value_length(parts)
    bad = pc.not_equal(lengths, count)
    if pc.any(bad).as_py():
        row = _first(bad) - 1
        raise AdvrecError(
            f"{where}: line {numbers[row]} has {lengths[row]} '{sep}'-separated fields, "
            f"expected {count} ({layout})"
        )
    return [pc.list_element(parts, j) for j in range(count)]


def _check_ids(
    ids: pa.Array, numbers: np.ndarray, where: str, what: str, unit: str = "line"
) -> None:
    """MovieLens ids are positive integers, and a features file lists each id once."""
    bad = pc.invert(pc.match_substring_regex(ids, r"^[0-9]+$"))
    if pc.any(bad).as_py():
        row = _first(bad) - 1
        raise AdvrecError(
            f"{where}: {unit} {numbers[row]}: {what} id '{ids[row]}' is not a positive integer"
        )
    codes = ids.dictionary_encode().indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    if first.size < codes.size:
        repeated = np.ones(codes.size, dtype=bool)
        repeated[first] = False
        row = int(np.flatnonzero(repeated)[0])
        was = int(np.flatnonzero(codes == codes[row])[0])
        raise AdvrecError(
            f"{where}: {unit} {numbers[row]}: {what} id '{ids[row]}' is listed again "
            f"(first on {unit} {numbers[was]})"
        )


def _feature_table(columns: dict[str, pa.Array]) -> pa.Table:
    """String feature columns, each tagged with its RecBole type (``class`` is a token_seq)."""
    types = {n: b"token_seq" if n == "class" else b"token" for n in columns}
    schema = pa.schema(pa.field(n, pa.string(), metadata={RECBOLE_TYPE: types[n]}) for n in columns)
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


# ---------------------------------------------------------------------------------------------
# Normalising to the standard table


def _source_columns(present: list[str], columns: ColumnMap, where: str) -> dict[str, str]:
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
        elif f.name in ("user", "item") or name != getattr(_DEFAULT_COLUMNS, f.name):
            raise AdvrecError(
                f"{where}: missing {f.name} column '{name}' (columns: {', '.join(present)})"
            )
    return source


def _feature_sources(present: list[str], columns: ColumnMap, where: str) -> list[str]:
    """The log's user and item feature columns, checking that each exists, is listed once and
    is not the id column of its side."""
    for kind, names in (("user", columns.user_features), ("item", columns.item_features)):
        own_id = columns.user if kind == "user" else columns.item
        for j, name in enumerate(names):
            if name == own_id:
                raise AdvrecError(
                    f"{where}: {kind} feature column '{name}' is the {kind} id column itself"
                )
            if name in names[:j]:
                raise AdvrecError(f"{where}: {kind} feature column '{name}' is listed twice")
            if name not in present:
                raise AdvrecError(
                    f"{where}: missing {kind} feature column '{name}' "
                    f"(columns: {', '.join(present)})"
                )
    return [*columns.user_features, *columns.item_features]


def _standardize(table: pa.Table, columns: ColumnMap, where: str) -> pa.Table:
    """Select, check and cast the user/item/rating/timestamp/label columns of a parsed log, and
    append its feature columns under prefixed names."""
    source = _source_columns(table.column_names, columns, where)
    _feature_sources(table.column_names, columns, where)
    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    for key in ("user", "item"):
        out[key] = _ids(table[source[key]], source[key], where)
    if "rating" in source:
        out["rating"] = _numeric(table[source["rating"]], source["rating"], where)
    if "timestamp" in source:
        out["timestamp"] = _timestamps(table[source["timestamp"]], source["timestamp"], where)
    else:
        # No time in the log: the row order is the time order.
        out["timestamp"] = pa.array(np.arange(table.num_rows, dtype=np.int64))
    if "label" in source:
        out["label"] = _labels(table[source["label"]], source["label"], where)
    schema = [pa.field(name, col.type) for name, col in out.items()]
    for kind, names in (("user", columns.user_features), ("item", columns.item_features)):
        for name in names:
            field = table.schema.field(name)
            col = _feature_values(table[name], name, where)
            out[_FEATURE_PREFIX[kind] + name] = col
            # The field metadata (a RecBole .inter column's type) goes along.
            schema.append(pa.field(_FEATURE_PREFIX[kind] + name, col.type, metadata=field.metadata))
    return pa.Table.from_arrays(list(out.values()), schema=pa.schema(schema))


def _ids(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    """An id column as strings: any scalar type (integers, floats, strings, categoricals), but
    no nested one (a list or struct has no one id to name); a missing id (null, NaN or empty:
    a float column's NaN would otherwise become a user called 'nan') is an error that counts
    them and names the first."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    _check_id_type(col.type, name, where)
    bad = pc.is_null(col)
    if pa.types.is_floating(col.type):
        bad = pc.or_(bad, pc.is_nan(col).fill_null(False))
    try:
        ids = col.cast(pa.string())
    except pa.ArrowInvalid:  # binary ids (Parquet without the UTF-8 annotation) must be text
        raise AdvrecError(f"{where}: id column '{name}' holds ids that are not UTF-8 text") from None
    bad = pc.or_(bad, pc.equal(ids, "").fill_null(False))
    count = pc.sum(bad).as_py() or 0
    if count:
        ids_ = "id" if count == 1 else "ids"
        raise AdvrecError(
            f"{where}: column '{name}' has {count} missing (null, NaN or empty) {ids_}, "
            f"the first at data row {_first(bad)}"
        )
    return ids


def _check_id_type(kind: pa.DataType, name: str, where: str) -> None:
    """Ids are strings (or bytes) or numbers; a list or struct (a Parquet column) is an error
    naming it."""
    scalar = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_string,
              pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not any(is_kind(kind) for is_kind in scalar):
        raise AdvrecError(f"{where}: id column '{name}' has type {kind}; ids must be strings or "
                          "numbers")


def _labels(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    """An explicit click column as int8: only 0 and 1 (as numbers, booleans or the strings
    '0'/'1'); anything else, missing values included, is an error naming the first culprit."""
    if pa.types.is_boolean(col.type):
        bad = pc.is_null(col)
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        bad = pc.invert(pc.is_in(col, value_set=pa.array(["0", "1"]))).fill_null(True)
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        # NaN is neither 0 nor 1, and a null is in no set (fill_null).
        bad = pc.invert(pc.is_in(col, value_set=pa.array([0, 1], col.type))).fill_null(True)
    else:
        raise AdvrecError(f"{where}: label column '{name}' must hold 0/1, not type {col.type}")
    if pc.any(bad).as_py():
        row = _first(bad)
        value = col[row - 1].as_py()
        shown = "a missing value" if value is None else f"'{value}'"
        raise AdvrecError(
            f"{where}: label column '{name}' has {shown} at data row {row} (expected only 0/1)"
        )
    return col.cast(pa.int8())


def _feature_values(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    """A feature column in a type the feature encoder takes: numbers as they are (decimals as
    float64), strings (categoricals decoded, booleans as 'true'/'false', a column with no values
    as all-null strings) and lists of strings; any other type is an error naming the column."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    kind = col.type
    if pa.types.is_null(kind) or pa.types.is_boolean(kind) or pa.types.is_large_string(kind):
        return col.cast(pa.string())
    if pa.types.is_string(kind) or pa.types.is_floating(kind) or pa.types.is_integer(kind):
        return col
    if pa.types.is_decimal(kind):
        return col.cast(pa.float64())
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
        pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)
    ):
        return col.cast(pa.list_(pa.string()))
    raise AdvrecError(
        f"{where}: feature column '{name}' has type {kind}; a feature column must hold "
        "numbers, strings or lists of strings"
    )


def _positive_ids(table: pa.Table, where: str) -> pa.Table:
    """MovieLens numbers users and items 1, 2, ...: anything else is a corrupt line."""
    for key in ("user", "item"):
        bad = pc.invert(pc.match_substring_regex(table[key], r"^[0-9]+$"))
        if pc.any(bad).as_py():
            row = _first(bad)
            raise AdvrecError(f"{where}: {key} id '{table[key][row - 1]}' at data row {row} "
                              "is not a positive integer")
    return table


def _numeric(
    col: pa.ChunkedArray, name: str, where: str, allow_missing: bool = False
) -> pa.ChunkedArray:
    """``col`` as float64, or an error naming the first non-numeric (or missing or NaN) value."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        # Numbers typed as text (a RecBole `token` rating, a CSV column with one bad value).
        try:
            col = col.cast(pa.float64())
        except pa.ArrowInvalid:
            for row, value in enumerate(col.to_pylist(), 1):  # error path only: find the culprit
                try:
                    pa.scalar(value, pa.string()).cast(pa.float64())
                except pa.ArrowInvalid:
                    raise AdvrecError(
                        f"{where}: column '{name}' has a non-numeric value '{value}' "
                        f"at data row {row}"
                    ) from None
            raise AdvrecError(f"{where}: column '{name}' is not numeric") from None
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    if not any(is_type(col.type) for is_type in numeric):
        raise AdvrecError(f"{where}: column '{name}' is not numeric (type {col.type})")
    col = col.cast(pa.float64())
    if allow_missing:
        return col
    bad = pc.or_kleene(pc.is_null(col), pc.is_nan(col))
    if pc.any(bad).as_py():
        raise AdvrecError(
            f"{where}: column '{name}' has a missing or NaN value at data row {_first(bad)}"
        )
    return col


def _timestamps(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    """Times as int64: integers as they are, floats floored, datetimes as epoch seconds."""
    if pa.types.is_integer(col.type) or pa.types.is_temporal(col.type):
        if col.null_count:
            row = _first(pc.is_null(col))
            raise AdvrecError(f"{where}: column '{name}' has a missing value at data row {row}")
        if pa.types.is_integer(col.type):
            return col.cast(pa.int64())
        # Sub-second parts are dropped (safe=False): ordering within a second falls to row order.
        return col.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
    return pc.floor(_numeric(col, name, where)).cast(pa.int64())


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    """The 1-based data row of the first true value of ``mask``."""
    return pc.index(mask, True).as_py() + 1


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
