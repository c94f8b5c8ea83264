"""Load a prepared dataset (the output of ``advrec prepare``) into torch tensors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from advrec.data.prepare import FORMAT_VERSION
from advrec.errors import AdvrecError, shown
from advrec.io import filesystem, join, refuse_extension_types

SPLIT_NAMES = ("train", "valid", "test")
KNOWN = "known"
"""The optional split of interactions known before the train split that are not trained on
(`advrec stream`: the earlier windows' rows): masked as positives, and a sequence's context."""


# eq=False: tensors have no single truth value, so compare datasets by identity.
@dataclass(frozen=True, eq=False)
class Interactions:
    """One split's interactions, sorted by (user, timestamp, item).

    Attributes:
        user: (N,) int64 user indices.
        item: (N,) int64 item indices.
        timestamp: (N,) int64 times, or ``None``.
        label: (N,) float32 click labels (0 or 1) of a CTR dataset, or ``None``.
        rating: (N,) float32 explicit ratings, or ``None`` when the log has none.
    """

    user: torch.Tensor
    item: torch.Tensor
    timestamp: torch.Tensor | None = None
    label: torch.Tensor | None = None
    rating: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.user.numel()


EMPTY = Interactions(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
"""A split without interactions (a dataset's ``known`` split, unless `advrec stream` wrote it)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A prepared dataset: where it is, vocabulary sizes, metadata, the three splits and the
    rows known before them (`KNOWN`: empty unless the dataset has that split)."""

    url: str
    num_users: int
    num_items: int
    meta: dict[str, Any]
    train: Interactions
    valid: Interactions
    test: Interactions
    known: Interactions = field(default_factory=lambda: EMPTY)

    def split(self, name: str) -> Interactions:
        """The split called ``name`` (``train``, ``valid``, ``test`` or ``known``)."""
        if name not in (*SPLIT_NAMES, KNOWN):
            raise AdvrecError(f"unknown split '{name}' (expected one of: {', '.join(SPLIT_NAMES)})")
        return getattr(self, name)

    def positives(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's items in ``split`` as CSR, items ascending within a user.

        Returns:
            ``indptr`` (num_users + 1,) int64 and ``indices`` (nnz,) int64: user ``u``'s items
            are ``indices[indptr[u]:indptr[u + 1]]``.
        """
        inter = self.split(split)
        # Sorting the flat (user, item) key orders by user, then item, in one pass.
        key = torch.sort(inter.user * self.num_items + inter.item).values
        indptr = torch.zeros(self.num_users + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(torch.bincount(inter.user, minlength=self.num_users), 0)
        return indptr, key % self.num_items


def is_prepared(url: str) -> bool:
    """Whether ``url`` holds a prepared dataset (its ``meta.json``, written last, exists)."""
    fs, path = filesystem(url)
    return fs.isfile(join(path, "meta.json"))


def load_dataset(url: str, train_pairs_only: bool = False) -> Dataset:
    """Load the prepared dataset at ``url`` (a path or fsspec URL).

    ``train_pairs_only``: of the train split, load only its (user, item) pairs, which negative
    sampling and ranking evaluation need: the training rows themselves stream from Ray Data
    (``data.stream``).
    """
    fs, path = filesystem(url)
    try:
        with fs.open(join(path, "meta.json"), "r") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise AdvrecError(
            f"{url}: not a prepared dataset (no meta.json); run `advrec prepare` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise AdvrecError(f"{url}/meta.json: not valid JSON ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdvrecError(
            f"{url}/meta.json: format_version {meta.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; run `advrec prepare` again"
        )
    splits = {}
    for name in (*SPLIT_NAMES, KNOWN):
        if name == KNOWN and not fs.isfile(join(path, f"{name}.parquet")):
            continue  # optional: only a stream's window datasets have one
        try:
            with fs.open(join(path, f"{name}.parquet"), "rb") as f:
                pf = pq.ParquetFile(f)
                refuse_extension_types(pf.schema_arrow, f"{url}/{name}.parquet")
                # label exists only in CTR datasets (prepare --label-threshold), rating only
                # when the raw log has ratings
                extra = [c for c in ("label", "rating", "timestamp") if c in pf.schema_arrow.names
                         and not (train_pairs_only and name == "train")]
                # One thread: with Arrow's pool threads reading a Python file object, 1 exit in 6
                # aborted ("terminate called without an active exception", exit 134, not 2; see
                # cli.run); every Parquet read of such a file takes the same flag.
                table = pf.read(columns=["user", "item", *extra], use_threads=False)
        except FileNotFoundError:
            raise AdvrecError(
                f"{url}/{name}.parquet: missing; run `advrec prepare` again"
            ) from None
        except (pa.ArrowInvalid, OSError) as exc:  # truncated, or not Parquet at all
            raise AdvrecError(f"{url}/{name}.parquet: not a Parquet file ({exc}); run "
                              "`advrec prepare` again") from None
        columns = {}
        for column, size in (("user", meta["num_users"]), ("item", meta["num_items"])):
            if not pa.types.is_integer(table[column].type):  # indices, as `prepare` writes them
                raise AdvrecError(f"{url}/{name}.parquet: column '{column}' has type "
                                  f"{table[column].type}, not integer indices; run `advrec "
                                  "prepare` again")
            ids = table[column].to_numpy().astype("int64")
            # a hand-made or corrupt dataset: an index outside the vocabulary would crash (or,
            # worse, silently alias) an embedding lookup far from here
            if ids.size and (ids.min() < 0 or ids.max() >= size):
                bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
                raise AdvrecError(
                    f"{url}/{name}.parquet: column '{column}' has index {bad} "
                    f"outside 0..{size - 1} (num_{column}s in meta.json)"
                )
            columns[column] = torch.from_numpy(ids)
        for column in extra:
            kind = "int64" if column == "timestamp" else "float32"
            columns[column] = torch.from_numpy(table[column].to_numpy().astype(kind))
        splits[name] = Interactions(**columns)
    return Dataset(url=url, num_users=meta["num_users"], num_items=meta["num_items"], meta=meta,
                   **splits)


@overload
def read_part(url: str, name: str, columns: list[str] | None = None, what: str = ...,
              required: Literal[True] = True) -> pa.Table: ...
@overload
def read_part(url: str, name: str, columns: list[str] | None = None, what: str = ...,
              required: bool = True) -> pa.Table | None: ...


def read_part(url: str, name: str, columns: list[str] | None = None,
              what: str = "a Parquet file", required: bool = True) -> pa.Table | None:
    """The Parquet file ``name`` of the prepared dataset at ``url`` (its ``columns``, or all);
    ``None`` when it is missing and not ``required``.

    Raises:
        AdvrecError: naming the file when it is missing (and ``required``), holds an extension
            type column, is not Parquet, or lacks a column; ``what`` says what it should be.
    """
    fs, path = filesystem(url)
    where = f"{url}/{name}"
    try:
        with fs.open(join(path, name), "rb") as f:
            file = pq.ParquetFile(f)
            refuse_extension_types(file.schema_arrow, where)
            return file.read(columns=columns, use_threads=False)  # one thread: load_dataset
    except FileNotFoundError:
        if required:
            raise AdvrecError(f"{where}: missing; run `advrec prepare` again") from None
        return None
    except (pa.ArrowInvalid, KeyError, OSError) as exc:  # truncated, not Parquet, no column
        raise AdvrecError(f"{where}: not {what} ({exc}); run `advrec prepare` again") from None


def item_indices(url: str, raw_ids: list[str], where: str) -> list[int]:
    """The dataset indices of the raw item ids ``raw_ids`` (as ``items.parquet`` of the prepared
    dataset at ``url`` spells them); an id the vocabulary lacks is an error naming it and
    ``where`` it came from."""
    import pyarrow.compute as pc

    vocab = read_part(url, "items.parquet", ["index", "raw_id"], what="an item vocabulary")
    # raw ids are read as text, however the log typed them: a targets.json may write 7 or "7"
    position = pc.index_in(pa.array(raw_ids, pa.string()),
                           value_set=vocab["raw_id"].cast(pa.string())).to_pylist()
    for raw, pos in zip(raw_ids, position):
        if pos is None:
            raise AdvrecError(f"{where}: item {shown(raw)} is not an item of {url} (items.parquet)")
    return [int(i) for i in vocab["index"].to_numpy()[position]]
