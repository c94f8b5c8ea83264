"""synth(): exact sizes, per-user guarantees, skewed popularity, determinism, readable by prepare."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advrec.data import prepare, synth
from advrec.data.synth import synth_days
from advrec.errors import AdvrecError

ARGS = {"users": 200, "items": 300, "interactions": 6000, "seed": 7, "rows_per_file": 2500}


@pytest.fixture
def log(tmp_path):
    summary = synth(output=str(tmp_path / "log"), **ARGS)
    files = sorted((tmp_path / "log").glob("part-*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return summary, files, table


def test_sizes_and_schema(log, tmp_path):
    summary, files, table = log
    assert [f.name for f in files] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [pq.read_metadata(f).num_rows for f in files] == [2500, 2500, 1000]
    assert table.schema == pa.schema(
        [
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("rating", pa.float32()),
            ("timestamp", pa.int64()),
        ]
    )
    assert summary["files"] == [f.name for f in files]
    written = json.loads((tmp_path / "log/_synth.json").read_text())
    assert written == {k: v for k, v in summary.items() if k != "output"}
    assert written["interactions"] == 6000 and written["dim"] == 16


def test_every_user_has_five_distinct_items_in_time_order(log):
    _, _, table = log
    user = table["user_id"].to_numpy()
    item = table["item_id"].to_numpy()
    timestamp = table["timestamp"].to_numpy()
    assert np.bincount(user, minlength=200).min() >= 5
    assert np.all(np.diff(user) >= 0)  # grouped by user
    assert len(np.unique(user * 300 + item)) == len(user)  # sampled without replacement
    same_user = np.diff(user) == 0
    assert np.all(np.diff(timestamp)[same_user] > 0)
    assert set(table["rating"].to_pylist()) == {1.0}


def test_popularity_is_skewed(log):
    _, _, table = log
    counts = np.sort(np.bincount(table["item_id"].to_numpy(), minlength=300))[::-1]
    # Zipf-like: the top 10% of items take twice their uniform share (and more) of the log.
    assert counts[:30].sum() > 0.2 * counts.sum()


def test_a_large_catalogue_scores_popular_candidates(tmp_path):
    # 10^5 items: each user scores a few candidates per pick instead of the whole catalogue
    synth(100, 100_000, 5000, str(tmp_path / "big"), seed=3, rows_per_file=2000)
    table = pq.read_table(tmp_path / "big")
    user, item = table["user_id"].to_numpy(), table["item_id"].to_numpy()
    assert len(user) == 5000 and np.bincount(user, minlength=100).min() >= 5
    assert len(np.unique(user * 100_000 + item)) == len(user)  # still without replacement
    assert item.min() >= 0 and item.max() < 100_000
    counts = np.sort(np.bincount(item, minlength=100_000))[::-1]
    assert counts[:1000].sum() > 0.3 * counts.sum()  # the top 1 % of items: Zipf's head
    again = tmp_path / "again"
    synth(100, 100_000, 5000, str(again), seed=3, rows_per_file=2000)
    assert pq.read_table(again).equals(table)


def test_same_arguments_same_bytes(log, tmp_path):
    _, files, _ = log
    synth(output=str(tmp_path / "again"), **ARGS)
    for f in files:
        assert (tmp_path / "again" / f.name).read_bytes() == f.read_bytes()
    synth(output=str(tmp_path / "other"), **{**ARGS, "seed": 8})
    assert (tmp_path / "other/part-00000.parquet").read_bytes() != files[0].read_bytes()


def test_prepare_reads_it_with_default_columns(log, tmp_path):
    meta = prepare(str(tmp_path / "log"), "parquet", str(tmp_path / "prepared"))
    assert meta["num_users"] == 200
    assert sum(meta["counts"].values()) == 6000
    assert meta["schema"]["rating"] == "float"


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        ({"users": 10, "items": 100, "interactions": 49}, "interactions=49 is below 5 per user"),
        ({"users": 10, "items": 10, "interactions": 51}, "interactions=51 is more than half"),
        ({"users": 0, "items": 10, "interactions": 5}, "users must be >= 1"),
        (
            {"users": 10, "items": 100, "interactions": 50, "rows_per_file": 0},
            "rows_per_file must be >= 1",
        ),
    ],
)
def test_bad_arguments(tmp_path, args, culprit):
    with pytest.raises(AdvrecError, match=culprit):
        synth(output=str(tmp_path / "log"), **args)
    assert list(tmp_path.iterdir()) == []


DAYS = {"users": 200, "items": 300, "interactions": 6000, "days": 6}


def _days(tmp_path, drift: float, seed: int = 3) -> tuple[dict, dict[str, pa.Table]]:
    """`synth_days`' summary and its partitions' tables by date."""
    summary = synth_days(output=str(tmp_path / f"log-{drift}-{seed}"), drift=drift, seed=seed,
                         **DAYS)
    root = tmp_path / f"log-{drift}-{seed}"
    return summary, {p.name.removeprefix("dt="): pq.read_table(p / "part-00000.parquet")
                     for p in sorted(root.glob("dt=*"))}


def test_days_partition_a_log_where_users_and_items_arrive(tmp_path):
    summary, days = _days(tmp_path, drift=0.2)
    assert list(days) == [d["date"] for d in summary["per_day"]] == [
        f"2020-01-0{d}" for d in range(1, 7)]
    assert sum(t.num_rows for t in days.values()) == 6000
    first_seen_user, first_seen_item = {}, {}
    for n, (date, table) in enumerate(days.items()):
        day = summary["per_day"][n]
        start = int(np.datetime64(date, "s").astype(np.int64))
        timestamp = table["timestamp"].to_numpy()
        assert np.all((timestamp >= start) & (timestamp < start + 86400))  # its own day
        assert np.all(np.diff(timestamp) >= 0)  # in time order
        user, item = table["user_id"].to_numpy(), table["item_id"].to_numpy()
        # only those there by then: ids are numbered by arrival
        assert user.max() < day["users"] and item.max() < day["items"]
        assert day["interactions"] == table.num_rows
        for ids, seen in ((user, first_seen_user), (item, first_seen_item)):
            for i in np.unique(ids):
                seen.setdefault(int(i), n)
    # half of each there on day 0, the rest arriving later, each user onboarded on arrival
    assert summary["per_day"][0]["users"] == 100 and summary["per_day"][0]["items"] == 150
    assert summary["per_day"][-1]["users"] == 200 and summary["per_day"][-1]["items"] == 300
    assert len(first_seen_user) == 200 and max(first_seen_user.values()) == 5
    assert max(first_seen_item.values()) > 0
    for user, n in first_seen_user.items():
        there = next(i for i, d in enumerate(summary["per_day"]) if user < d["users"])
        assert n == there  # its first day is its arrival day...
        on_day = days[summary["per_day"][n]["date"]]["user_id"].to_numpy()
        assert np.count_nonzero(on_day == user) >= 5  # ...with at least 5 items
    _days(tmp_path / "again", drift=0.2)
    assert [(tmp_path / f"log-0.2-3/dt={d}/part-00000.parquet").read_bytes()
            for d in days] == [(tmp_path / f"again/log-0.2-3/dt={d}/part-00000.parquet")
                               .read_bytes() for d in days]  # same arguments, same bytes


def _taste_overlap(days: dict[str, pa.Table]) -> float:
    """Mean Jaccard of each day-0 user's items on the first and on the last day (over the
    users active on both)."""
    tables = list(days.values())
    first, last = ({int(u): set() for u in np.unique(t["user_id"].to_numpy())}
                   for t in (tables[0], tables[-1]))
    for table, sets in ((tables[0], first), (tables[-1], last)):
        for u, i in zip(table["user_id"].to_numpy(), table["item_id"].to_numpy()):
            sets[int(u)].add(int(i))
    both = sorted(set(first) & set(last))
    return float(np.mean([len(first[u] & last[u]) / len(first[u] | last[u]) for u in both]))


def test_drift_moves_tastes_away_from_the_first_day(tmp_path):
    # with a fixed taste a user keeps picking what they picked on day 0; with drift less so
    fixed = np.mean([_taste_overlap(_days(tmp_path, 0.0, seed)[1]) for seed in range(3)])
    moving = np.mean([_taste_overlap(_days(tmp_path, 1.0, seed)[1]) for seed in range(3)])
    assert moving < 0.7 * fixed


def test_quiet_days_are_empty_partitions(tmp_path):
    # more days than onboarding and extra interactions fill: some days pass without any
    summary = synth_days(10, 40, 50, str(tmp_path / "log"), days=30)
    sizes = [d["interactions"] for d in summary["per_day"]]
    assert len(sizes) == 30 and sum(sizes) == 50 and 0 in sizes
    tables = [pq.read_table(p) for p in sorted((tmp_path / "log").glob("dt=*/*.parquet"))]
    assert [t.num_rows for t in tables] == sizes
    assert all(t.schema == tables[0].schema for t in tables)


@pytest.mark.parametrize(("args", "culprit"), [
    ({"days": 0}, r"days must be in 1..interactions \(6000\), not 0"),
    ({"days": 6001}, r"days must be in 1..interactions \(6000\), not 6001"),
    ({"days": 3, "drift": 1.5}, "drift must be in"),
    ({"days": 3, "drift": float("nan")}, "drift must be in"),
    ({"days": 2, "interactions": 999}, "interactions=999 is below 5 per user"),
])
def test_days_bad_arguments(tmp_path, args, culprit):
    with pytest.raises(AdvrecError, match=culprit):
        synth_days(output=str(tmp_path / "log"), **{**DAYS, **args})
    assert list(tmp_path.iterdir()) == []
