"""The checks and casts of one column of a parsed log (ids, labels, numbers, times, feature
values): each casts the column to its standard type or raises an error naming the column and
its first bad row."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from advrec.errors import AdvrecError


def id_strings(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    """An id column as strings: any scalar type (integers, floats, strings, categoricals), but
    no nested one (a list or struct has no one id to name); a missing id (null, NaN or empty:
    a float column's NaN would otherwise become a user called 'nan') is an error that counts
    them and names the first."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    check_id_type(col.type, name, where)
    bad = pc.is_null(col)
    if pa.types.is_floating(col.type):
        bad = pc.or_(bad, pc.is_nan(col).fill_null(False))
    try:
        ids = col.cast(pa.string())
    except pa.ArrowInvalid:  # binary ids (Parquet without the UTF-8 annotation) must be text
        raise AdvrecError(f"{where}: id column '{name}' holds ids that are not UTF-8 text") from None
    bad = pc.or_(bad, pc.equal(ids, "").fill_null(False))

    def missing(row: int) -> str:
        count = pc.sum(bad).as_py()
        return (f"{where}: column '{name}' has {count} missing (null, NaN or empty) "
                f"{'id' if count == 1 else 'ids'}, the first at data row {row + 1}")

    refuse(bad, missing)
    return ids


def check_id_type(kind: pa.DataType, name: str, where: str) -> None:
    """Ids are strings (or bytes) or numbers; a list or struct (a Parquet column) is an error
    naming it."""
    scalar = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_string,
              pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not any(is_kind(kind) for is_kind in scalar):
        raise AdvrecError(f"{where}: id column '{name}' has type {kind}; ids must be strings or "
                          "numbers")


def labels(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
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

    def not_a_label(row: int) -> str:
        value = col[row].as_py()
        shown = "a missing value" if value is None else f"'{value}'"
        return (f"{where}: label column '{name}' has {shown} at data row {row + 1} "
                "(expected only 0/1)")

    refuse(bad, not_a_label)
    return col.cast(pa.int8())


def feature_values(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
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


def numeric(
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
    bad = pc.or_kleene(pc.is_null(col), pc.invert(pc.is_finite(col)))
    refuse(bad, lambda row: f"{where}: column '{name}' has a missing, NaN or infinite value at "
                            f"data row {row + 1}")
    return col


def timestamps(col: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    """Times as int64: integers as they are, floats floored, datetimes as epoch seconds."""
    if pa.types.is_integer(col.type) or pa.types.is_temporal(col.type):
        refuse(pc.is_null(col),
               lambda row: f"{where}: column '{name}' has a missing value at data row {row + 1}")
        if pa.types.is_integer(col.type):
            return col.cast(pa.int64())
        # Sub-second parts are dropped (safe=False): ordering within a second falls to row order.
        return col.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
    seconds = numeric(col, name, where)
    # beyond 2**53 a float is no longer an exact integer (and 1e300 no int64 at all)
    refuse(pc.greater(pc.abs(seconds), float(2**53)),
           lambda row: f"{where}: column '{name}' has a time out of range at data row {row + 1}")
    return pc.floor(seconds).cast(pa.int64())


def refuse(bad: pa.ChunkedArray | pa.Array, message: Callable[[int], str]) -> None:
    """Raise ``AdvrecError(message(row))`` when the boolean mask ``bad`` holds a true value, ``row``
    the 0-based index of the first (a null counts as false): every check names its first culprit,
    and builds the message only when there is one."""
    if pc.any(bad).as_py():
        raise AdvrecError(message(pc.index(bad, True).as_py()))

