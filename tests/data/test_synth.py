"""synth(): exact sizes, per-user guarantees, skewed popularity, determinism, readable by prepare."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advrec.data import prepare, synth
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
