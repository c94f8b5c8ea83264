"""The log a stream replays, and each window's prepared dataset.

The log is read once (`advrec.data.readers.read_log`), put in time order (file order breaking
ties; a followed log by window first) and deduplicated as `advrec prepare` does (a (user, item)
pair's first interaction in that order only), so each id's integer code is its order of
arrival. Window ``w``'s dataset (`write_window`) is a prepared dataset (`advrec.data.prepare`'s
layout) over the rows up to the window's end:

- ``train``: the window's rows; with ``update="retrain"`` every row so far; with a ``replay``
  of R, also R rows drawn from the earlier windows (against forgetting);
- ``known``: the earlier windows' rows (`advrec.data.dataset.KNOWN`), masked as positives and
  excluded from negatives, never trained on (unless replayed);
- ``valid`` and ``test``: empty. A window has no held-out rows: the next window's prequential
  evaluation (`prequential`) is its test, and training keeps its last epoch.

Its vocabulary holds every user and item seen so far, numbered as `prepare` numbers them; a
warm start matches them to the earlier window's by raw id (`advrec.train.warm`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from advrec.data.dataset import EMPTY, Dataset, Interactions
from advrec.data.prepare import (
    FORMAT_VERSION,
    Kept,
    interactions_table,
    keep_pairs,
    vocabulary,
    write_dataset,
)
from advrec.data.readers import ColumnMap, read_log
from advrec.data.readers.columns import ROW_ORDER
from advrec.errors import AdvrecError
from advrec.stream.windows import Window

UPDATES = ("incremental", "retrain", "frozen")
"""How a stream's model follows the log: continued on each window from the last (warm start),
retrained from scratch on everything so far, or trained on the first window only."""


@dataclass(frozen=True)
class StreamLog:
    """A log in time order, deduplicated (every array (N,), row ``r`` the r-th kept
    interaction), with how many distinct users and items the first r rows hold
    (``seen["user"][r]``, (N + 1,)): ids arrive in code order, so a row's user is known before
    row r when its code is below ``seen["user"][r]``."""

    source: str
    fmt: str
    kept: Kept
    seen: dict[str, np.ndarray]
    batch: np.ndarray  # (N,) each row's batch (`of`), ascending
    timed: bool  # whether the log has times (else its rows' positions stand in: ROW_ORDER)

    @classmethod
    def read(cls, source: str, fmt: str, min_rating: float | None = None) -> StreamLog:
        """The log at ``source`` (format ``fmt``) in time order."""
        return cls.of(read_log(source, fmt, ColumnMap()), source, fmt, min_rating)

    @classmethod
    def of(cls, log: pa.Table, source: str, fmt: str, min_rating: float | None = None,
           batch: np.ndarray | None = None) -> StreamLog:
        """The standard table ``log`` (`read_log`'s) in the order of its rows' ``batch``
        ((N,) ints: a followed prefix's window each row landed in), then time."""
        if min_rating is not None:
            if "rating" not in log.column_names:
                raise AdvrecError(f"{source}: data.min_rating needs a 'rating' column, but this "
                                  f"{fmt} log has none")
            missing = log["rating"].null_count
            if missing:  # a followed window whose files have no rating column
                raise AdvrecError(f"{source}: data.min_rating needs every interaction's rating, "
                                  f"but {missing} have none (a file without a 'rating' "
                                  "column)")
            rated = pc.greater_equal(log["rating"], min_rating)
            log = log.filter(rated)
            batch = None if batch is None else batch[rated.to_numpy(zero_copy_only=False)]
            if log.num_rows == 0:
                raise AdvrecError(f"{source}: data.min_rating {min_rating} removed every "
                                  "interaction")
        batch = np.zeros(log.num_rows, dtype=np.int64) if batch is None else batch
        order = np.lexsort((np.arange(log.num_rows), log["timestamp"].to_numpy(), batch))
        # a pair's first row in this order is kept: a repeat in a later window (with an
        # earlier time, or a followed log's restarted row positions) must not move the pair
        # out of a window already trained on into one evaluated before training
        kept = keep_pairs(log.take(pa.array(order)), source, 0, None, None, by_row=True)
        seen = {side: np.concatenate(([0], np.maximum.accumulate(codes) + 1))
                for side, codes in kept.codes.items()}
        timed = log.schema.field("timestamp").metadata != ROW_ORDER
        return cls(source, fmt, kept, seen, batch[order][kept.rows], timed)

    def batch_window(self, batch: int, name: str) -> Window:
        """The rows of ``batch`` (`of`) as the window ``name``, spanning their times (no rows
        when the batch had none that was not a repeat)."""
        start, stop = (int(i) for i in np.searchsorted(self.batch, [batch, batch + 1]))
        times = self.kept.timestamp[start:stop]
        return Window(name, start, stop, int(times.min()) if times.size else 0,
                      int(times.max()) + 1 if times.size else 0)

    @property
    def timestamp(self) -> np.ndarray:
        """(N,) ascending Unix times."""
        return self.kept.timestamp

    def write_window(self, window: Window, output: str, update: str, replay: int,
                     seed: int, active_from: int = 0) -> dict[str, Any]:
        """Write ``window``'s prepared dataset to ``output`` (see the module); returns its
        metadata. ``seed`` (with the window's first row) draws the replayed rows.
        ``active_from``: the first row of the windows whose ids the tables hold (`active`):
        an id not seen since is expired, its row freed, and its rows left out."""
        start, stop = window.start, window.stop
        ids = self.active(active_from, stop)
        held = self._held(ids)
        train = np.arange(0 if update == "retrain" else start, stop)
        if replay and update == "incremental" and start:
            older = np.flatnonzero(held[:start])
            drawn = np.random.default_rng([seed, start]).choice(
                older, min(replay, older.size), replace=False)
            train = np.concatenate([np.sort(drawn), train])
        train = train[held[train]]
        none = np.arange(0)
        tables = {name: self._table(rows, ids)
                  for name, rows in (("train", train), ("valid", none), ("test", none),
                                     ("known", np.flatnonzero(held[:start])))}
        sizes = self.sizes(window, active_from)
        meta = {
            "format_version": FORMAT_VERSION,
            "num_users": len(ids["user"][1]),
            "num_items": len(ids["item"][1]),
            "counts": {name: t.num_rows for name, t in tables.items()},
            "schema": {f.name: str(f.type) for f in tables["train"].schema},
            "split": {"kind": "window", "ratios": None, "spec": window.name},
            "filters": {"min_rating": None, "kcore": 0},
            "task": "ranking",
            "label_threshold": None,
            "features": [],
            "seed": seed,
            "source": self.source,
            "input_format": self.fmt,
            "window": {"name": window.name, "begins": window.begins, "ends": window.ends,
                       "update": update, "replay": int(train.size - (stop - start))
                       if update == "incremental" else 0,
                       "expired_users": sizes["expired_users"],
                       "expired_items": sizes["expired_items"]},
        }
        write_dataset(output, tables, ids, {}, meta)
        return meta

    def active(self, active_from: int, stop: int) -> dict[str, tuple[np.ndarray, pa.Table]]:
        """The tables' ids after row ``stop``: those seen in rows ``[active_from, stop)``,
        numbered as `prepare` numbers them (per side: code to index, -1 for an id not held;
        the vocabulary table)."""
        return {side: vocabulary(self.kept.names[side], self.kept.codes[side][active_from:stop])
                for side in ("user", "item")}

    def _held(self, ids: dict[str, tuple[np.ndarray, pa.Table]]) -> np.ndarray:
        """(N,) bool: the rows whose user and item both have a row in ``ids``' tables."""
        return (ids["user"][0][self.kept.codes["user"]] >= 0) & (
            ids["item"][0][self.kept.codes["item"]] >= 0)

    def _table(self, rows: np.ndarray, ids: dict[str, tuple[np.ndarray, pa.Table]]) -> pa.Table:
        """The interactions ``rows`` as a split's table, in the window's numbering ``ids``."""
        kept = self.kept
        return interactions_table(ids["user"][0][kept.codes["user"][rows]],
                                  ids["item"][0][kept.codes["item"][rows]],
                                  kept.timestamp[rows],
                                  None if kept.rating is None else kept.rating[rows])

    def prequential(self, window: Window, data: Dataset, active_from: int = 0,
                    model_from: int = 0) -> tuple[Dataset, dict[str, int]]:
        """What the model of the windows before ``window`` is evaluated on, before it trains
        on it: ``data`` (the window's dataset, its numbering, its ids those of rows
        ``active_from`` on) with the window's rows whose user and item a model kept up to date
        holds (seen in rows ``model_from`` to the window's start) as ``test`` (a model cannot
        rank for a user it does not know, nor rank an item it does not know by anything but
        chance: those rows are counted, as ``cold``; the same rows for every update policy, so
        a frozen model ranks the ids it never learnt with their fresh rows), and the earlier
        rows as ``train``: what that model learnt from, masked when ranking, and the examples
        an attack on it differentiates; and the counts."""
        start, stop = window.start, window.stop
        rows = np.arange(start, stop)
        known = self._held(self.active(model_from, start))[rows]
        ids = self.active(active_from, stop)
        test = _interactions(self._table(rows[known], ids))
        earlier = _interactions(self._table(np.flatnonzero(self._held(ids)[:start]), ids))
        view = dataclasses.replace(data, train=earlier, valid=EMPTY, test=test, known=EMPTY)
        counts = {"rows": int(rows.size), "evaluated_rows": int(known.sum()),
                  "cold_rows": int((~known).sum()),
                  "evaluated_users": int(np.unique(self.kept.codes["user"][rows][known]).size)}
        return view, counts

    def sizes(self, window: Window, active_from: int = 0) -> dict[str, int]:
        """The tables' rows after the window (users and items seen in rows ``active_from``
        on), how many ids arrived in it, and how many are expired (seen only before)."""
        held = {side: np.unique(self.kept.codes[side][active_from:window.stop]).size
                for side in ("user", "item")}
        seen = {side: int(self.seen[side][window.stop]) for side in ("user", "item")}
        return {"users": held["user"], "items": held["item"],
                "new_users": seen["user"] - int(self.seen["user"][window.start]),
                "new_items": seen["item"] - int(self.seen["item"][window.start]),
                "expired_users": seen["user"] - held["user"],
                "expired_items": seen["item"] - held["item"]}


def _interactions(table: pa.Table) -> Interactions:
    """A split's table (`interactions_table`) as tensors."""
    column = {name: torch.from_numpy(table[name].to_numpy().astype(np.int64))
              for name in ("user", "item", "timestamp")}
    return Interactions(**column)
