"""prepare(): filters, vocabularies, written files, determinism, and failures that leave nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from advrec.data import ColumnMap, load_dataset, prepare, read_log
from advrec.data.splits import split_counts
from advrec.errors import AdvrecError

# Two users (numeric ids: '2' must come before '10'), items a/b/c, and two duplicate pairs whose
# earlier interaction (by time, not by file order) is the one kept.
LOG = """user_id,item_id,rating,timestamp
10,b,5,100
2,a,3,50
10,a,4,60
2,b,1,40
2,a,2,10
10,c,5,70
2,c,4,20
10,b,1,30
"""


def _read(path: Path) -> dict:
    return pq.read_table(path).to_pydict()


def test_prepare_writes_the_dataset(write, tmp_path):
    out = tmp_path / "out"
    meta = prepare(write("log.csv", LOG), "csv", str(out), split="loo")
    assert sorted(p.name for p in out.iterdir()) == [
        "items.parquet",
        "meta.json",
        "test.parquet",
        "train.parquet",
        "users.parquet",
        "valid.parquet",
    ]
    assert _read(out / "users.parquet") == {"index": [0, 1], "raw_id": ["2", "10"]}
    assert _read(out / "items.parquet") == {"index": [0, 1, 2], "raw_id": ["a", "b", "c"]}
    # Per user in time order: user 2 has a(10) c(20) b(40), user 10 has b(30) a(60) c(70).
    assert _read(out / "train.parquet") == {
        "user": [0, 1],
        "item": [0, 1],
        "rating": [2.0, 1.0],
        "timestamp": [10, 30],
    }
    assert _read(out / "valid.parquet") == {
        "user": [0, 1],
        "item": [2, 0],
        "rating": [4.0, 4.0],
        "timestamp": [20, 60],
    }
    assert _read(out / "test.parquet") == {
        "user": [0, 1],
        "item": [1, 2],
        "rating": [1.0, 5.0],
        "timestamp": [40, 70],
    }
    assert pq.read_schema(out / "train.parquet") == pa.schema(
        [
            ("user", pa.int32()),
            ("item", pa.int32()),
            ("rating", pa.float32()),
            ("timestamp", pa.int64()),
        ]
    )
    assert meta == json.loads((out / "meta.json").read_text())
    assert meta == {
        "format_version": 1,
        "num_users": 2,
        "num_items": 3,
        "counts": {"train": 2, "valid": 2, "test": 2},
        "schema": {"user": "int32", "item": "int32", "rating": "float", "timestamp": "int64"},
        "split": {"kind": "loo", "ratios": None, "spec": "loo"},
        "filters": {"min_rating": None, "kcore": 0},
        "task": "ranking",
        "label_threshold": None,
        "features": [],
        "seed": 0,
        "source": str(tmp_path / "log.csv"),
        "input_format": "csv",
    }


def test_lexicographic_vocab_and_no_rating_column(write, tmp_path):
    path = write("seq.txt", "u10 b\nu10 a\nu2 a\nu2 b\nu10 c\nu2 c\n")
    meta = prepare(path, "sasrec", str(tmp_path / "out"), split="loo")
    assert _read(tmp_path / "out/users.parquet")["raw_id"] == ["u10", "u2"]
    assert meta["schema"] == {"user": "int32", "item": "int32", "timestamp": "int64"}
    assert _read(tmp_path / "out/test.parquet") == {
        "user": [0, 1],
        "item": [2, 2],
        "timestamp": [4, 5],
    }


def test_min_rating_keeps_positives(write, tmp_path):
    meta = prepare(write("log.csv", LOG), "csv", str(tmp_path / "out"), min_rating=3)
    # Kept: user 2 {a, c}, user 10 {b@100, a, c}; 8:1:1 of 2 and 3 gives (1,0,1) and (1,1,1).
    assert meta["counts"] == {"train": 2, "valid": 1, "test": 2}
    ratings = [
        r
        for s in ("train", "valid", "test")
        for r in _read(tmp_path / f"out/{s}.parquet")["rating"]
    ]
    assert sorted(ratings) == [3.0, 4.0, 4.0, 5.0, 5.0]
    assert meta["filters"] == {"min_rating": 3, "kcore": 0}


def test_min_rating_errors(write, tmp_path):
    with pytest.raises(AdvrecError, match=r"log\.csv: --min-rating 6 removed every interaction"):
        prepare(write("log.csv", LOG), "csv", str(tmp_path / "out"), min_rating=6)
    with pytest.raises(AdvrecError, match=r"seq\.txt: --min-rating needs a 'rating' column"):
        prepare(write("seq.txt", "1 2\n"), "sasrec", str(tmp_path / "out"), min_rating=4)


KCORE_LOG = "user_id,item_id\nA,i1\nA,i2\nA,i3\nB,i1\nB,i2\nC,i3\nC,i4\n"


def test_kcore_iterates_to_a_fixed_point(write, tmp_path):
    # k=2: i4 goes, so C is left with one item and goes, so i3 is left with one user and goes.
    meta = prepare(write("log.csv", KCORE_LOG), "csv", str(tmp_path / "out"), kcore=2)
    assert (meta["num_users"], meta["num_items"]) == (2, 2)
    assert _read(tmp_path / "out/users.parquet")["raw_id"] == ["A", "B"]
    assert _read(tmp_path / "out/items.parquet")["raw_id"] == ["i1", "i2"]
    assert meta["counts"] == {"train": 2, "valid": 0, "test": 2}
    with pytest.raises(AdvrecError, match=r"log\.csv: --kcore 3 removed every interaction"):
        prepare(str(tmp_path / "log.csv"), "csv", str(tmp_path / "out3"), kcore=3)
    with pytest.raises(AdvrecError, match="--kcore"):
        prepare(str(tmp_path / "log.csv"), "csv", str(tmp_path / "out3"), kcore=-1)
    with pytest.raises(AdvrecError, match="--seed"):
        prepare(str(tmp_path / "log.csv"), "csv", str(tmp_path / "out3"), seed=-1)
    assert not (tmp_path / "out3").exists()


def test_time_split_vocab_covers_the_kept_interactions(write, tmp_path):
    rows = "".join(
        f"{u},{i},{t}\n"
        for u, i, t in [
            ("a", "x", 9),
            ("a", "x0", 0),
            ("a", "y", 1),
            ("b", "y", 2),
            ("b", "z", 3),
            ("b", "z0", 4),
            ("c", "w", 5),
            ("c", "w0", 6),
            ("c", "x", 7),
            ("d", "y", 8),
        ]
    )
    meta = prepare(
        write("log.csv", "user_id,item_id,timestamp\n" + rows),
        "csv",
        str(tmp_path / "out"),
        split="time:0.8",
    )
    # d's only interaction (t=8, valid) is unseen in train and dropped; a-x (t=9) is the test.
    assert meta["counts"] == {"train": 8, "valid": 0, "test": 1}
    assert (meta["num_users"], meta["num_items"]) == (3, 7)
    assert _read(tmp_path / "out/test.parquet") == {"user": [0], "item": [2], "timestamp": [9]}


def test_random_split_follows_recbole_counts(udata_small, small_log, tmp_path):
    meta = prepare(str(udata_small), "movielens", str(tmp_path / "out"))
    items = len(set(small_log.log["item_id"].to_pylist()))
    assert (meta["num_users"], meta["num_items"]) == (small_log.num_users, items)
    assert sum(meta["counts"].values()) == small_log.log.num_rows
    sizes = np.bincount(
        read_log(str(udata_small), "movielens")["user"].to_numpy().astype(int)
    )
    sizes = sizes[sizes > 0]  # user ids 1..N, in numeric order like the vocabulary
    expected = np.array([split_counts(int(n), (0.8, 0.1, 0.1)) for n in sizes])
    for column, name in enumerate(("train", "valid", "test")):
        users = pq.read_table(tmp_path / f"out/{name}.parquet")["user"].to_numpy()
        assert np.array_equal(np.bincount(users, minlength=len(sizes)),
                              expected[:, column]), name
    assert meta["counts"]["train"] == expected[:, 0].sum()


def test_same_input_gives_identical_bytes_with_features(atomic_small, small_log, tmp_path):
    for out in ("a", "b"):
        meta = prepare(str(atomic_small), "recbole", str(tmp_path / out), seed=3)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [
        "item_features.parquet",
        "items.parquet",
        "meta.json",
        "test.parquet",
        "train.parquet",
        "user_features.parquet",
        "users.parquet",
        "valid.parquet",
    ]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert meta["features"] == ["item", "user"]
    items = _read(tmp_path / "a/item_features.parquet")
    assert items["index"] == list(range(meta["num_items"]))  # a row per item of the log
    first = min(small_log.log["item_id"].to_pylist())  # the smallest raw id is index 0
    assert items["movie_title"][0] == small_log.items["movie_title"][first]
    users = _read(tmp_path / "a/user_features.parquet")
    assert (users["age"][0], users["gender"][0]) == (small_log.users["age"][0],
                                                     small_log.users["gender"][0])
    # Another seed moves interactions between splits but keeps the per-user counts.
    other = prepare(str(atomic_small), "recbole", str(tmp_path / "c"), seed=4)
    assert other["counts"] == meta["counts"]
    assert (tmp_path / "c/test.parquet").read_bytes() != (tmp_path / "a/test.parquet").read_bytes()


def test_failed_prepare_leaves_nothing(write, tmp_path):
    path = write("in/log.csv", "user_id,item_id\n1,a\n1,b\n1,c\n2,a\n2,b\n3,c\n")
    out = tmp_path / "out"
    with pytest.raises(AdvrecError, match=r"user '3' has 1 interaction: .* filter with --kcore 3"):
        prepare(path, "csv", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    # A failed re-run keeps the dataset that was there.
    prepare(path, "csv", str(out), kcore=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(AdvrecError, match="bad split"):
        prepare(path, "csv", str(out), split="random:2")
    with pytest.raises(AdvrecError, match="user '3' has 1 interaction"):
        prepare(path, "csv", str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_duplicate_feature_ids_are_named(write, tmp_path):
    write("toy/toy.inter", "user_id:token\titem_id:token\n1\ta\n1\tb\n1\tc\n")
    write("toy/toy.user", "user_id:token\tage:float\n1\t30\n1\t31\n")
    with pytest.raises(
        AdvrecError, match=r"\.user file\): column 'user_id' lists id '1' more than once"
    ):
        prepare(str(tmp_path / "toy"), "recbole", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_label_threshold_makes_a_ctr_dataset(write, tmp_path):
    out = tmp_path / "out"
    meta = prepare(write("log.csv", LOG), "csv", str(out), split="loo", label_threshold=4)
    assert (meta["task"], meta["label_threshold"]) == ("ctr", 4)
    assert meta["schema"] == {
        "user": "int32",
        "item": "int32",
        "rating": "float",
        "timestamp": "int64",
        "label": "int8",
    }
    # Every rated interaction stays (low ratings are the negatives); the same rows as without
    # labels (see test_prepare_writes_the_dataset), each labelled rating >= 4.
    assert meta["counts"] == {"train": 2, "valid": 2, "test": 2}
    assert _read(out / "train.parquet")["label"] == [0, 0]  # ratings 2, 1
    assert _read(out / "valid.parquet")["label"] == [1, 1]  # ratings 4, 4
    assert _read(out / "test.parquet")["label"] == [0, 1]  # ratings 1, 5
    assert pq.read_schema(out / "test.parquet").field("label").type == pa.int8()
    dataset = load_dataset(str(out))
    assert dataset.test.label.tolist() == [0.0, 1.0]
    assert dataset.test.label.dtype == torch.float32
    # A ranking dataset has no label.
    prepare(write("log.csv", LOG), "csv", str(tmp_path / "ranking"), split="loo")
    assert load_dataset(str(tmp_path / "ranking")).test.label is None


def test_label_threshold_errors(write, tmp_path):
    log = write("log.csv", LOG)
    with pytest.raises(
        AdvrecError, match=r"--label-threshold/data.label_threshold and --min-rating/"
    ):
        prepare(log, "csv", str(tmp_path / "out"), min_rating=3, label_threshold=4)
    with pytest.raises(
        AdvrecError, match="--label-threshold/data.label_threshold must be a finite number"
    ):
        prepare(log, "csv", str(tmp_path / "out"), label_threshold=float("nan"))
    path = write("seq.txt", "u1 a\nu1 b\nu1 c\n")
    with pytest.raises(
        AdvrecError,
        match=r"seq.txt: --label-threshold/data.label_threshold needs a 'rating' column, "
        r"but this sasrec log has none",
    ):
        prepare(path, "sasrec", str(tmp_path / "out"), label_threshold=4)
    assert not (tmp_path / "out").exists()


def test_feature_files_keep_the_recbole_types(atomic_small, tmp_path):
    prepare(str(atomic_small), "recbole", str(tmp_path / "out"))
    types = {
        kind: {
            f.name: (f.metadata or {}).get(b"recbole_type")
            for f in pq.read_schema(tmp_path / f"out/{kind}_features.parquet")
        }
        for kind in ("user", "item")
    }
    assert types == {
        "user": {
            "index": None,
            "age": b"token",
            "gender": b"token",
            "occupation": b"token",
            "zip_code": b"token",
        },
        "item": {
            "index": None,
            "movie_title": b"token_seq",
            "release_year": b"token",
            "class": b"token_seq",
        },
    }


def test_parquet_files_are_written_in_bounded_row_groups(tmp_path):
    # a stream (data.stream) reads a row group at a time: its memory must not grow with the file
    import fsspec

    from advrec.io import ROW_GROUP_ROWS, write_parquet

    table = pa.table({"user": np.arange(ROW_GROUP_ROWS + 5, dtype=np.int64)})
    write_parquet(fsspec.filesystem("file"), str(tmp_path / "t.parquet"), table)
    meta = pq.ParquetFile(tmp_path / "t.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [ROW_GROUP_ROWS, 5]
    assert pq.read_table(tmp_path / "t.parquet").equals(table)


def test_hashed_ids_share_bounded_rows_and_report_their_collisions(udata_small, tmp_path):
    whole = prepare(str(udata_small), "movielens", str(tmp_path / "whole"))
    ids, buckets = whole["num_users"], whole["num_users"] // 3
    meta = prepare(str(udata_small), "movielens", str(tmp_path / "hashed"),
                   buckets={"user": buckets})
    assert (meta["num_users"], meta["num_items"]) == (buckets, whole["num_items"])
    vocab = _read(tmp_path / "hashed/users.parquet")
    assert len(vocab["raw_id"]) == ids  # every id, with its row
    for raw, row in zip(vocab["raw_id"], vocab["index"]):  # the documented hash, any process
        digest = hashlib.blake2b(raw.encode(), digest_size=8).digest()
        assert row == int.from_bytes(digest, "little") % buckets
    rows_used = len(set(vocab["index"]))
    assert meta["hashing"] == {"user": {"buckets": buckets, "ids": ids, "rows_used": rows_used,
                                        "collision_rate": 1 - rows_used / ids}}
    # 3 ids a row: most rows are shared, as balls into bins predict (1 - (1 - e^-3) / 3 = 0.68)
    assert 0.62 < meta["hashing"]["user"]["collision_rate"] < 0.74
    # the interactions are the same, only the users' rows change
    assert meta["counts"] == whole["counts"]
    hashed = load_dataset(str(tmp_path / "hashed"))
    assert int(hashed.train.user.max()) < buckets
    raw_rows = dict(zip(_read(tmp_path / "whole/users.parquet")["index"],
                        _read(tmp_path / "whole/users.parquet")["raw_id"]))
    row_of = dict(zip(vocab["raw_id"], vocab["index"]))
    plain = load_dataset(str(tmp_path / "whole"))
    expected = sorted(zip([row_of[raw_rows[int(u)]] for u in plain.train.user],
                          plain.train.item.tolist(), plain.train.timestamp.tolist()))
    assert sorted(zip(hashed.train.user.tolist(), hashed.train.item.tolist(),
                      hashed.train.timestamp.tolist())) == expected
    # a table as large as the id space leaves few collisions
    wide = prepare(str(udata_small), "movielens", str(tmp_path / "wide"),
                   buckets={"user": 1_000_000})
    assert wide["hashing"]["user"]["collision_rate"] < 0.01


def test_hashed_ids_errors(write, tmp_path):
    with pytest.raises(AdvrecError, match=r"--item-buckets/data.item_buckets must be >= 0"):
        prepare(write("log.csv", LOG), "csv", str(tmp_path / "out"), buckets={"item": -1})
    with_age = LOG.replace("timestamp\n", "timestamp,age\n").replace("\n", ",30\n")
    with_age = with_age.replace("timestamp,age,30\n", "timestamp,age\n")
    with pytest.raises(AdvrecError, match="user side features need a row per user; they do not "
                                          "go with --user-buckets/data.user_buckets"):
        prepare(write("aged.csv", with_age), "csv", str(tmp_path / "features"),
                columns=ColumnMap(user_features=("age",)), buckets={"user": 100})
    assert not (tmp_path / "out").exists() and not (tmp_path / "features").exists()


def test_loo_keep_short_users_train_sasrec_and_count_in_no_metric(write, tmp_path):
    """`--split loo:keep-short` (SASRec's split): users with 1 or 2 interactions are kept in
    train only; SASRec trains on their sequences and evaluates the others alone."""
    from advrec.cli import main

    rng = np.random.default_rng(0)
    rows = [f"u{u},i{i},{t}" for u in range(12) for t, i in
            enumerate(rng.choice(15, size=1 + u % 2 if u < 4 else 6, replace=False))]
    source = write("log.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    out = tmp_path / "prepared"
    meta = prepare(source, "csv", str(out), split="loo:keep-short")
    assert meta["num_users"] == 12 and meta["split"]["spec"] == "loo:keep-short"
    data = load_dataset(str(out))
    users = {part: data.split(part).user.tolist() for part in ("train", "valid", "test")}
    short = {u for u in set(users["train"]) if users["train"].count(u) <= 2}
    assert len(short) == 4  # u0..u3, whose 1 or 2 rows are all in train
    assert not short & set(users["valid"] + users["test"])
    assert meta["counts"] == {"train": 1 + 2 + 1 + 2 + 8 * 4, "valid": 8, "test": 8}
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={out}",
                 "model.name=sasrec", "model.dim=8", "model.max_len=8", "train.epochs=1",
                 "train.batch_size=4", "adv.method=none"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["ndcg@10"] <= 1
