"""Encode a prepared dataset's side features (``<kind>_features.parquet``) as embedding ids.

Every feature becomes a field of integer ids, and id 0 always means "nothing here" (missing,
unknown, padding), so a model can give it a zero or learned "missing" embedding and never has to
special-case absent rows. Three encodings, picked from the column's type:

- categorical (a string, RecBole ``token``): ids 1..V in sorted-value order;
- multi-valued (RecBole ``token_seq``: space-separated tokens in one string, or a list of
  strings): a padded id matrix, tokens in file order, ids 1..V in sorted-token order;
- numeric (a float or integer column, or a string column named in ``numeric``): ``buckets``
  equal-frequency bins, ids 1..buckets.

The encoding depends only on the file's contents, so the same dataset always gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from advrec.data.readers import RECBOLE_TYPE
from advrec.errors import AdvrecError
from advrec.io import filesystem, join, refuse_extension_types

KINDS = ("user", "item")


@dataclass(frozen=True)
class Field:
    """One encoded feature.

    Attributes:
        name: the column's name.
        kind: ``single`` (one id per row, a column of :attr:`FeatureSet.single`) or ``multi``
            (a padded id list per row, :attr:`FeatureSet.multi` ``[name]``).
        vocab_size: the number of ids, including the reserved id 0: the embedding table's size.
        vocab: the value of each id 1..vocab_size-1 of a categorical or multi-valued field
            (sorted); ``None`` for a numeric one, whose id is its equal-frequency bin. A model
            warm-started on other data matches a field's rows by these values
            (`advrec.train.warm`).
    """

    name: str
    kind: Literal["single", "multi"]
    vocab_size: int
    vocab: tuple[str, ...] | None = None


# eq=False: tensors have no single truth value, so compare feature sets by identity.
@dataclass(frozen=True, eq=False)
class FeatureSet:
    """The encoded side features of the users or the items, one row per dataset index.

    Attributes:
        fields: every encoded feature, in the file's column order.
        single: (num_rows, F_single) int64 ids; column ``j`` is the ``j``-th ``single`` field of
            :attr:`fields`. 0 = missing or unknown.
        multi: name -> (num_rows, max_len) int64 ids of each ``multi`` field, left-aligned and
            padded with 0 (``max_len`` >= 1, the longest row's token count).
    """

    fields: list[Field]
    single: torch.Tensor
    multi: dict[str, torch.Tensor]

    @property
    def single_fields(self) -> list[Field]:
        """The ``single`` fields, in the order of :attr:`single`'s columns."""
        return [f for f in self.fields if f.kind == "single"]

    @property
    def multi_fields(self) -> list[Field]:
        """The ``multi`` fields, in file order."""
        return [f for f in self.fields if f.kind == "multi"]

    @property
    def num_rows(self) -> int:
        return self.single.shape[0]


def load_features(
    url: str,
    kind: str,
    num_rows: int,
    buckets: int = 10,
    exclude: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
) -> FeatureSet | None:
    """Encode the ``kind`` features of the prepared dataset at ``url``.

    Args:
        url: the prepared dataset's directory, a path or fsspec URL.
        kind: ``user`` or ``item``.
        num_rows: the dataset's number of users or items; rows the file lacks are all 0.
        buckets: the number of equal-frequency bins of a numeric column.
        exclude: columns to drop, such as free text (``movie_title``).
        numeric: string columns to bucketise as numbers instead of treating them as categories
            (RecBole types ``release_year`` and ``age`` as tokens, say); values that are no
            number count as missing.

    Returns:
        The encoded features, or ``None`` when the dataset has no ``<kind>_features.parquet``.
    """
    if kind not in KINDS:
        raise AdvrecError(f"feature kind must be one of {', '.join(KINDS)}, not '{kind}'")
    if buckets < 1:
        raise AdvrecError(f"feature buckets must be >= 1, not {buckets}")
    if num_rows < 0:
        raise AdvrecError(f"num_rows must be >= 0, not {num_rows}")
    fs, path = filesystem(url)
    file = join(path, f"{kind}_features.parquet")
    where = f"{url.rstrip('/')}/{kind}_features.parquet"
    if not fs.isfile(file):
        return None
    try:
        with fs.open(file, "rb") as f:
            table = pq.read_table(f, use_threads=False)  # as data.dataset's reads
    except (pa.ArrowInvalid, OSError) as exc:
        raise AdvrecError(f"{where}: cannot read this Parquet file ({exc})") from None
    refuse_extension_types(table.schema, where)

    if "index" not in table.column_names:
        raise AdvrecError(f"{where}: no 'index' column; run `advrec prepare` again")
    index = table["index"].to_numpy().astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= num_rows):
        bad = int(index.min()) if index.min() < 0 else int(index.max())
        raise AdvrecError(f"{where}: index {bad} is outside 0..{num_rows - 1}")
    if np.unique(index).size < index.size:
        raise AdvrecError(f"{where}: column 'index' lists an index more than once")
    names = [n for n in table.column_names if n != "index"]
    for option, listed in (("exclude", exclude), ("numeric", numeric)):
        for name in listed:
            if name not in names:
                raise AdvrecError(
                    f"{where}: feature column '{name}' (in {option}) does not exist "
                    f"(columns: {', '.join(names) or 'none'})"
                )

    fields, single, multi = [], [], {}
    for name in names:
        if name in exclude:
            continue
        column = table[name].combine_chunks()
        field = table.schema.field(name)
        recbole_type = (field.metadata or {}).get(RECBOLE_TYPE, b"").decode()
        if pa.types.is_list(column.type) or recbole_type == "token_seq":
            ids, vocab = _encode_multi(column, name, where)
            fields.append(Field(name, "multi", len(vocab) + 1, vocab))
            multi[name] = _scatter(ids, index, num_rows)
            continue
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            values = column.cast(pa.float64())
        elif pa.types.is_string(column.type) and name in numeric:
            values = _parse_numbers(column)
        elif pa.types.is_string(column.type):
            ids, vocab = _encode_categorical(column)
            fields.append(Field(name, "single", len(vocab) + 1, vocab))
            single.append(ids)
            continue
        else:
            raise AdvrecError(
                f"{where}: column '{name}' has type {column.type}, which no "
                "feature encoding takes (string, list of strings, number)"
            )
        fields.append(Field(name, "single", buckets + 1))
        single.append(_bucketise(values, buckets))

    by_row = np.stack(single, axis=1) if single else np.zeros((len(index), 0), dtype=np.int64)
    return FeatureSet(fields=fields, single=_scatter(by_row, index, num_rows), multi=multi)


def load_side_features(
    url: str,
    num_rows: dict[str, int],
    buckets: int = 10,
    exclude: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
) -> dict[str, FeatureSet | None]:
    """`load_features` of both sides, with ``exclude`` and ``numeric`` naming columns of either.

    Args:
        num_rows: ``{"user": num_users, "item": num_items}``.

    Raises:
        AdvrecError: a listed column is in neither features file (the config keys
            ``data.exclude_features`` / ``data.numeric_features`` name them).
    """
    fs, path = filesystem(url)
    columns: dict[str, list[str]] = {}
    for kind in KINDS:
        file = join(path, f"{kind}_features.parquet")
        columns[kind] = []
        if fs.isfile(file):
            with fs.open(file, "rb") as f:
                columns[kind] = pq.read_schema(f).names
    for key, listed in (("exclude_features", exclude), ("numeric_features", numeric)):
        for name in listed:
            if not any(name in names for names in columns.values()):
                known = sorted({n for names in columns.values() for n in names} - {"index"})
                raise AdvrecError(
                    f"data.{key}: feature column '{name}' is not in {url} "
                    f"(feature columns: {', '.join(known) or 'none'})")
    return {kind: load_features(url, kind, num_rows[kind], buckets,
                                tuple(n for n in exclude if n in columns[kind]),
                                tuple(n for n in numeric if n in columns[kind]))
            for kind in KINDS}


def _scatter(ids: np.ndarray, index: np.ndarray, num_rows: int) -> torch.Tensor:
    """(len(index), ...) ids of the file's rows -> (num_rows, ...) int64, rows not in the file 0."""
    out = np.zeros((num_rows, *ids.shape[1:]), dtype=np.int64)
    out[index] = ids
    return torch.from_numpy(out)


def _sorted_vocab(values: pa.Array) -> pa.Array:
    """The distinct ``values``, sorted (by UTF-8 bytes, i.e. code point, not by locale)."""
    distinct = pc.unique(values)
    return distinct.take(pc.sort_indices(distinct))


def _present(values: pa.Array) -> pa.Array:
    """Mask of the values that hold something: RecBole writes a missing token as an empty
    field, which arrives as '' (and ids the feature file lacks arrive as null)."""
    return pc.and_(pc.is_valid(values), pc.not_equal(values, "")).fill_null(False)


def _ids(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    """ids 1..len(vocab) of ``values`` in ``vocab``; 0 for anything not in it."""
    return pc.index_in(values, value_set=vocab).fill_null(-1).to_numpy().astype(np.int64) + 1


def _encode_categorical(column: pa.Array) -> tuple[np.ndarray, tuple[str, ...]]:
    """(R,) ids of a string column, and its vocabulary (the value of ids 1, 2, ...)."""
    vocab = _sorted_vocab(column.filter(_present(column)))
    return _ids(column, vocab), tuple(vocab.to_pylist())


def _encode_multi(column: pa.Array, name: str,
                  where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """(R, max_len) left-aligned, 0-padded ids of a multi-valued column, and its vocabulary
    (the token of ids 1, 2, ...)."""
    if pa.types.is_string(column.type):
        # RecBole's token_seq separator is one space; runs of spaces leave '' tokens, dropped below.
        lists = pc.split_pattern(column, " ")
    elif pa.types.is_list(column.type) and pa.types.is_string(column.type.value_type):
        lists = column
    else:
        raise AdvrecError(
            f"{where}: multi-valued column '{name}' has type {column.type}, "
            "expected space-separated tokens or a list of strings"
        )
    rows = len(lists)
    tokens = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists)
    keep = _present(tokens)
    tokens, parent = tokens.filter(keep), parent.filter(keep).to_numpy().astype(np.int64)
    vocab = _sorted_vocab(tokens)
    counts = np.bincount(parent, minlength=rows)
    # Parents are non-decreasing, so a token's slot is its rank within its row's run.
    starts = np.cumsum(counts) - counts
    slot = np.arange(len(parent)) - starts[parent]
    # At least one column, so that a field without tokens still has a well-formed matrix.
    ids = np.zeros((rows, max(int(counts.max(initial=0)), 1)), dtype=np.int64)
    ids[parent, slot] = _ids(tokens, vocab)
    return ids, tuple(vocab.to_pylist())


def _parse_numbers(column: pa.Array) -> pa.Array:
    """A string column as float64; '', null and anything that is no number become null.

    A token column treated as numeric may mark missing values with a word (ml-100k's RecBole
    ``release_year`` has one ``unkonwn``), so such values are missing rather than an error.
    """
    distinct = pc.unique(column)

    def number(value: str | None) -> float | None:
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    # Parse each distinct value once: a few hundred years or ages, not one per row.
    parsed = pa.array([number(v) for v in distinct.to_pylist()], type=pa.float64())
    return parsed.take(pc.index_in(column, value_set=distinct))


def _bucketise(values: pa.Array, buckets: int) -> np.ndarray:
    """(R,) ids 1..buckets of equal-frequency bins of ``values``; 0 for missing, NaN or ±inf.

    The bin edges are the 1/buckets, ..., (buckets-1)/buckets quantiles of the finite values;
    a value on an edge goes to the upper bin. Heavy ties can leave some bins empty, but the
    vocabulary stays buckets + 1 so a model's table size never depends on the data.
    """
    x = values.to_numpy(zero_copy_only=False).astype(np.float64)
    finite = np.isfinite(x)
    ids = np.zeros(len(x), dtype=np.int64)
    if finite.any():
        edges = np.quantile(x[finite], np.linspace(0.0, 1.0, buckets + 1)[1:-1])
        ids[finite] = np.searchsorted(edges, x[finite], side="right") + 1
    return ids
