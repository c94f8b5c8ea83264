"""MovieLens: the ratings of any release (ml-100k's ``u.data``, ml-1m's ``ratings.dat``,
ml-latest's ``ratings.csv``) in a file, a directory or a ``.zip``, and the user and movie files
beside them (``u.user``/``u.item``/``u.genre``, ``users.dat``/``movies.dat``, ``movies.csv``)."""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable, Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from advrec.data.readers.checks import refuse
from advrec.data.readers.columns import ColumnMap, standardize
from advrec.data.readers.csv_log import read_csv_file
from advrec.data.readers.files import name_in, open_zip, parse_csv, read_text
from advrec.data.readers.recbole import RECBOLE_TYPE
from advrec.errors import AdvrecError
from advrec.io import filesystem

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


def read_movielens(url: str) -> pa.Table:
    """The ratings file that ``url`` (a file, a directory or a ``.zip``) leads to, as the
    standard table."""
    with _movielens_files(url) as (fs, path, where):
        return _read_movielens_file(fs, path, where(path))


def _read_movielens_file(fs: fsspec.AbstractFileSystem, path: str, where: str) -> pa.Table:
    names = ["user", "item", "rating", "timestamp"]
    std = ColumnMap("user", "item", "rating", "timestamp")
    if path.endswith(".csv"):
        return read_csv_file(fs, path, where, ColumnMap("userId", "movieId", "rating", "timestamp"))
    if path.endswith(".dat"):
        # pyarrow's CSV parser takes a one-character delimiter only: splitting `1::2::5::9` on
        # ':' gives the four fields with an empty column between each pair.
        raw = read_text(
            fs, path, where, ":", ["user", "_1", "item", "_2", "rating", "_3", "timestamp"]
        )
        return _positive_ids(standardize(raw.select(names), std, where), where)
    return _positive_ids(standardize(read_text(fs, path, where, "\t", names), std, where), where)


def _positive_ids(table: pa.Table, where: str) -> pa.Table:
    """MovieLens numbers users and items 1, 2, ...: anything else is a corrupt line."""
    for key in ("user", "item"):
        bad = pc.invert(pc.match_substring_regex(table[key], r"^[0-9]+$"))
        refuse(bad, lambda row, key=key: f"{where}: {key} id '{table[key][row]}' at data row "
                                         f"{row + 1} is not a positive integer")
    return table


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
        if found in _USERS_LAYOUT:
            return _read_users(fs, path, where(path), found)
        if found == "u.item":
            genres = posixpath.join(directory, "u.genre")
            names = _read_u_genre(fs, genres, where(genres)) if fs.isfile(genres) else None
            return _read_u_item(fs, path, where(path), names)
        if found == "movies.dat":
            return _read_movies_dat(fs, path, where(path))
        return _read_movies_csv(fs, path, where(path))


@contextlib.contextmanager
def _movielens_files(
    url: str,
) -> Iterator[tuple[fsspec.AbstractFileSystem, str, Callable[[str], str]]]:
    """The MovieLens ratings file that ``url`` leads to, for the block: its filesystem (an open
    archive for a ``.zip``), its path there, and how to name a file there in messages."""
    if url.rstrip("/").endswith(".zip"):
        with open_zip(url) as zfs:
            yield zfs, _find_movielens(zfs, "", url), lambda p: f"zip://{p}::{url}"
        return
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise AdvrecError(f"{url}: file not found")
    if fs.isdir(path):
        yield fs, _find_movielens(fs, path, url), lambda p: name_in(url, path, p)
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


# ---------------------------------------------------------------------------------------------
# The user and movie files

_U_ITEM_LAYOUT = "movie id|title|release date|video release date|IMDb URL"
# A year in parentheses ending a title: "Toy Story (1995)".
_TITLE_YEAR = r"\s*\((?P<year>[0-9]{4})\)\s*$"
# ml-latest's marker of a movie without genres.
_NO_GENRES = "(no genres listed)"


# The two users files differ only in layout: (field as the release's README names it, column),
# in file order, and the separator. Both give the columns of _USER_COLUMNS.
_USERS_LAYOUT = {
    "u.user": ("|", (("user id", "user_id"), ("age", "age"), ("gender", "gender"),
                     ("occupation", "occupation"), ("zip code", "zip_code"))),
    "users.dat": ("::", (("UserID", "user_id"), ("Gender", "gender"), ("Age", "age"),
                         ("Occupation", "occupation"), ("Zip-code", "zip_code"))),
}
_USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")


def _read_users(fs: fsspec.AbstractFileSystem, path: str, where: str, file: str) -> pa.Table:
    """A MovieLens users file, laid out as ``_USERS_LAYOUT[file]``: ml-100k's ``u.user``
    (``user id|age|gender|occupation|zip code``) or ml-1m's ``users.dat``
    (``UserID::Gender::Age::Occupation::Zip-code``)."""
    sep, layout = _USERS_LAYOUT[file]
    lines, numbers = _read_lines(fs, path, where)
    values = _split_lines(
        lines, numbers, sep, len(layout), where, sep.join(field for field, _ in layout)
    )
    columns = {column: value for (_, column), value in zip(layout, values)}
    _check_ids(columns["user_id"], numbers, where, "user")
    return _feature_table({name: columns[name] for name in _USER_COLUMNS})


def _read_u_genre(fs: fsspec.AbstractFileSystem, path: str, where: str) -> list[str]:
    """ml-100k's ``u.genre`` (``name|index`` lines): the genre names in index order."""
    lines, numbers = _read_lines(fs, path, where)
    names, index = _split_lines(lines, numbers, "|", 2, where, "genre name|index")
    # A name becomes one token of a space-separated token_seq, so it may hold no whitespace.
    bad = pc.invert(pc.match_substring_regex(names, r"^\S+$"))
    refuse(bad, lambda row: f"{where}: line {numbers[row]}: genre name '{names[row]}' is empty "
                            "or has whitespace")
    bad = pc.invert(pc.match_substring_regex(index, r"^[0-9]+$"))
    refuse(bad, lambda row: f"{where}: line {numbers[row]}: genre index '{index[row]}' is not an "
                            "integer >= 0")
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
        refuse(bad, lambda row, j=j, flag=flag: (
            f"{where}: line {numbers[row]}, field {6 + j} (genre '{genres[j]}'): "
            f"flag '{flag[row]}' is not 0 or 1"))
        flags[:, j] = pc.equal(flag, "1").to_numpy(zero_copy_only=False)
    year = pc.struct_field(pc.extract_regex(date, r"(?:^|[^0-9])(?P<year>[0-9]{4})$"), [0])
    bad = pc.and_(pc.not_equal(date, ""), pc.is_null(year))
    refuse(bad, lambda row: f"{where}: line {numbers[row]}, field 3: release date '{date[row]}' "
                            "has no year")
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
    table = parse_csv(
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
    refuse(bad, lambda row: f"{where}: {unit} {numbers[row]}: genres '{genres[row]}' hold "
                            "whitespace (genre names become space-separated tokens)")
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
    refuse(bad, lambda row: f"{where}: line {numbers[row]} has {lengths[row]} '{sep}'-separated "
                            f"fields, expected {count} ({layout})")
    return [pc.list_element(parts, j) for j in range(count)]


def _check_ids(
    ids: pa.Array, numbers: np.ndarray, where: str, what: str, unit: str = "line"
) -> None:
    """MovieLens ids are positive integers, and a features file lists each id once."""
    bad = pc.invert(pc.match_substring_regex(ids, r"^[0-9]+$"))
    refuse(bad, lambda row: f"{where}: {unit} {numbers[row]}: {what} id '{ids[row]}' is not a "
                            "positive integer")
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

