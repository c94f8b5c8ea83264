"""The log a stream replays, and each window's prepared dataset.

The log is read once (`advrec.data.readers.read_log`), put in time order (file order breaking
ties) and deduplicated as `advrec prepare` does (a (user, item) pair's first interaction only),
so each id's integer code is its order of arrival. Window ``w``'s dataset (`write_window`) is a
prepared dataset (`advrec.data.prepare`'s layout) over the rows up to the window's end:

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
            rated = pc.greater_equal(log["rating"], min_rating)
            log = log.filter(rated)
            batch = None if batch is None else batch[rated.to_numpy(zero_copy_only=False)]
            if log.num_rows == 0:
                raise AdvrecError(f"{source}: data.min_rating {min_rating} removed every "
                                  "interaction")
        batch = np.zeros(log.num_rows, dtype=np.int64) if batch is None else batch
        order = np.lexsort((np.arange(log.num_rows), log["timestamp"].to_numpy(), batch))
        kept = keep_pairs(log.take(pa.array(order)), source, 0, None, None)
        seen = {side: np.concatenate(([0], np.maximum.accumulate(codes) + 1))
                for side, codes in kept.codes.items()}
        return cls(source, fmt, kept, seen, batch[order][kept.rows])

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
                     seed: int) -> dict[str, Any]:
        """Write ``window``'s prepared dataset to ``output`` (see the module); returns its
        metadata. ``seed`` (with the window's first row) draws the replayed rows."""
        start, stop = window.start, window.stop
        ids = {side: vocabulary(self.kept.names[side], self.kept.codes[side][:stop])
               for side in ("user", "item")}
        train = np.arange(0 if update == "retrain" else start, stop)
        if replay and update == "incremental" and start:
            drawn = np.random.default_rng([seed, start]).choice(start, min(replay, start),
                                                                replace=False)
            train = np.concatenate([np.sort(drawn), train])
        none = np.arange(0)
        tables = {name: self._table(rows, ids)
                  for name, rows in (("train", train), ("valid", none), ("test", none),
                                     ("known", np.arange(start)))}
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
                       if update == "incremental" else 0},
        }
        write_dataset(output, tables, ids, {}, meta)
        return meta

    def _table(self, rows: np.ndarray, ids: dict[str, tuple[np.ndarray, pa.Table]]) -> pa.Table:
        """The interactions ``rows`` as a split's table, in the window's numbering ``ids``."""
        kept = self.kept
        return interactions_table(ids["user"][0][kept.codes["user"][rows]],
                                  ids["item"][0][kept.codes["item"][rows]],
                                  kept.timestamp[rows],
                                  None if kept.rating is None else kept.rating[rows])

    def prequential(self, window: Window, data: Dataset) -> tuple[Dataset, dict[str, int]]:
        """What the model of the windows before ``window`` is evaluated on, before it trains
        on it: ``data`` (the window's dataset, its numbering) with the window's rows whose user
        and item were both seen before as ``test`` (a model cannot rank for a user it never
        saw, nor rank an item it never saw by anything but chance: those rows are counted, as
        ``cold``), and the earlier rows as ``train``: what that model learnt from, masked when
        ranking, and the examples an attack on it differentiates; and the counts."""
        start, stop = window.start, window.stop
        rows = np.arange(start, stop)
        codes = self.kept.codes
        warm = (codes["user"][rows] < self.seen["user"][start]) & (
            codes["item"][rows] < self.seen["item"][start])
        ids = {side: vocabulary(self.kept.names[side], codes[side][:stop])
               for side in ("user", "item")}
        test = _interactions(self._table(rows[warm], ids))
        earlier = _interactions(self._table(np.arange(start), ids))
        view = dataclasses.replace(data, train=earlier, valid=EMPTY, test=test, known=EMPTY)
        counts = {"rows": int(rows.size), "evaluated_rows": int(warm.sum()),
                  "cold_rows": int((~warm).sum()),
                  "evaluated_users": int(np.unique(codes["user"][rows][warm]).size)}
        return view, counts

    def sizes(self, window: Window) -> dict[str, int]:
        """Users and items seen up to the window's end (the tables' rows), and how many of
        them arrived in it."""
        return {"users": int(self.seen["user"][window.stop]),
                "items": int(self.seen["item"][window.stop]),
                "new_users": int(self.seen["user"][window.stop] - self.seen["user"][window.start]),
                "new_items": int(self.seen["item"][window.stop] - self.seen["item"][window.start])}


def _interactions(table: pa.Table) -> Interactions:
    """A split's table (`interactions_table`) as tensors."""
    column = {name: torch.from_numpy(table[name].to_numpy().astype(np.int64))
              for name in ("user", "item", "timestamp")}
    return Interactions(**column)
