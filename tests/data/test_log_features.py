"""Side features and CTR labels taken from columns of the log itself (csv, parquet, recbole)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advrec.cli import main
from advrec.config import DataConfig
from advrec.data import ColumnMap, load_dataset, load_features, prepare, read_log
from advrec.data.source import resolve_dataset
from advrec.errors import AdvrecError
from errors import error_line

# Users 2 and 10, items a/b/c. The (10, b) pair is logged twice: the first line (t=100) loses to
# the last (t=30), so user 10's first surviving row is line 3, and item b's is line 4. User 2's
# age and item b's genre conflict between rows: the first surviving row's value is kept.
LOG = """user_id,item_id,rating,timestamp,age,city,genre
10,b,5,100,30,paris,drama
2,a,3,50,25,rome,comedy
10,a,4,60,31,lyon,comedy
2,b,1,40,26,rome,drama
2,c,4,20,27,rome,horror
10,c,5,70,31,lyon,horror
10,b,1,30,31,lyon,thriller
"""
FEATURES = ColumnMap(user_features=("age", "city"), item_features=("genre",))


def _read(path: Path) -> dict:
    return pq.read_table(path).to_pydict()


def test_csv_feature_columns_take_each_ids_first_row(write, tmp_path):
    out = tmp_path / "out"
    meta = prepare(write("log.csv", LOG), "csv", str(out), split="loo", columns=FEATURES)
    assert meta["features"] == ["item", "user"]
    assert _read(out / "users.parquet")["raw_id"] == ["2", "10"]
    assert _read(out / "user_features.parquet") == {
        "index": [0, 1],
        "age": [25, 31],  # user 2: line 2 (not 26 or 27); user 10: line 3 (line 1 is a dup)
        "city": ["rome", "lyon"],
    }
    assert _read(out / "item_features.parquet") == {
        "index": [0, 1, 2],
        "genre": ["comedy", "drama", "horror"],  # b: line 4's drama, not thriller
    }
    assert pq.read_schema(out / "user_features.parquet") == pa.schema(
        [("index", pa.int32()), ("age", pa.int64()), ("city", pa.string())]
    )
    # The interactions are those of a log without feature columns.
    plain = tmp_path / "plain"
    prepare(write("log.csv", LOG), "csv", str(plain), split="loo")
    for split in ("train", "valid", "test"):
        assert _read(out / f"{split}.parquet") == _read(plain / f"{split}.parquet")
    assert not (plain / "user_features.parquet").exists()

    users = load_features(str(out), "user", 2, buckets=4)
    assert [(f.name, f.kind, f.vocab_size) for f in users.fields] == [
        ("age", "single", 5),
        ("city", "single", 3),
    ]
    assert users.single[:, 1].tolist() == [2, 1]  # rome, lyon in sorted order lyon=1, rome=2


def test_first_row_is_taken_after_the_filters(write, tmp_path):
    log = write("log.csv", """user_id,item_id,rating,timestamp,age,shelf
u1,a,1,1,10,s1
u1,b,5,2,11,s2
u1,c,5,3,12,s3
u1,d,5,4,13,s4
u2,a,1,5,20,s5
u2,b,5,6,21,s6
u2,c,5,7,22,s7
u2,d,5,8,23,s8
""")
    columns = ColumnMap(user_features=("age",), item_features=("shelf",))
    prepare(log, "csv", str(tmp_path / "all"), split="loo", columns=columns)
    assert _read(tmp_path / "all/user_features.parquet")["age"] == [10, 20]
    # min_rating 3 drops each user's first row, and item a altogether.
    prepare(log, "csv", str(tmp_path / "out"), split="loo", min_rating=3, columns=columns)
    assert _read(tmp_path / "out/user_features.parquet") == {"index": [0, 1], "age": [11, 21]}
    assert _read(tmp_path / "out/item_features.parquet") == {
        "index": [0, 1, 2],
        "shelf": ["s2", "s3", "s4"],
    }


def test_same_input_gives_identical_bytes(write, tmp_path):
    log = write("log.csv", LOG)
    for name in ("a", "b"):
        prepare(log, "csv", str(tmp_path / name), columns=FEATURES, seed=3)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "user_features.parquet" in files and "item_features.parquet" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_parquet_list_column_is_multi_valued(tmp_path):
    table = pa.table(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u1", "u2"],
            "item_id": ["x", "y", "x", "z", "z", "y"],
            "timestamp": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "tags": pa.array(
                [["b", "a"], ["c"], ["b", "a", "q"], [], ["d", "b"], ["c"]],
                pa.list_(pa.string()),
            ),
            "price": [1.5, 2.0, 1.5, 9.0, 9.0, 2.0],
            "level": pa.array(["lo", "hi", "lo", "lo", "hi", "mid"]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "log.parquet")
    out = tmp_path / "out"
    columns = ColumnMap(user_features=("level",), item_features=("tags", "price"))
    prepare(str(tmp_path / "log.parquet"), "parquet", str(out), split="loo", columns=columns)
    assert pq.read_schema(out / "item_features.parquet") == pa.schema(
        [("index", pa.int32()), ("tags", pa.list_(pa.string())), ("price", pa.float64())]
    )
    assert _read(out / "item_features.parquet") == {
        "index": [0, 1, 2],
        "tags": [["b", "a"], ["c"], []],  # x, y, z: each item's first row
        "price": [1.5, 2.0, 9.0],
    }
    # A pandas-style categorical (dictionary) column arrives as strings.
    assert _read(out / "user_features.parquet") == {"index": [0, 1], "level": ["lo", "lo"]}

    items = load_features(str(out), "item", 3, buckets=2)
    assert [(f.name, f.kind, f.vocab_size) for f in items.fields] == [
        ("tags", "multi", 4),  # a, b, c + the reserved 0
        ("price", "single", 3),
    ]
    assert items.multi["tags"].tolist() == [[2, 1], [3, 0], [0, 0]]


def test_recbole_inter_columns_join_the_user_file(write, tmp_path):
    write(
        "toy/toy.inter",
        "user_id:token\titem_id:token\ttimestamp:float\tdevice:token\tcats:token_seq\n"
        "1\ta\t1\tios\tx y\n1\tb\t2\tweb\tz\n2\ta\t3\tweb\tx y\n2\tb\t4\tios\tz\n"
        "1\tc\t5\tios\tw\n2\tc\t6\tweb\tw\n",
    )
    write("toy/toy.user", "user_id:token\tage:float\n1\t30\n2\t40\n")
    out = tmp_path / "out"
    columns = ColumnMap(user_features=("device",), item_features=("cats",))
    prepare(str(tmp_path / "toy"), "recbole", str(out), split="loo", columns=columns)
    assert _read(out / "user_features.parquet") == {
        "index": [0, 1],
        "age": [30.0, 40.0],
        "device": ["ios", "web"],
    }
    types = {f.name: (f.metadata or {}).get(b"recbole_type")
             for f in pq.read_schema(out / "item_features.parquet")}
    assert types == {"index": None, "cats": b"token_seq"}
    items = load_features(str(out), "item", 3)
    assert items.fields[0].kind == "multi"


def test_recbole_inter_columns_clash_with_the_user_file(write, tmp_path):
    write(
        "toy/toy.inter",
        "user_id:token\titem_id:token\tdevice:token\n1\ta\tios\n1\tb\tios\n1\tc\tweb\n",
    )
    write("toy/toy.user", "user_id:token\tdevice:token\n1\tx\n")
    with pytest.raises(
        AdvrecError, match=r"toy: user feature column 'device' is in both the log .* \.user file"
    ):
        prepare(str(tmp_path / "toy"), "recbole", str(tmp_path / "out"), split="loo",
                columns=ColumnMap(user_features=("device",)))
    assert not (tmp_path / "out").exists()


CLICKS = """user_id,item_id,timestamp,click
u1,a,1,1
u1,b,2,0
u1,c,3,1
u2,a,4,0
u2,b,5,0
u2,c,6,1
"""


def test_label_column_makes_a_ctr_dataset_without_ratings(write, tmp_path):
    out = tmp_path / "out"
    meta = prepare(write("log.csv", CLICKS), "csv", str(out), split="loo",
                   columns=ColumnMap(label="click"))
    assert (meta["task"], meta["label_threshold"], meta["label_column"]) == ("ctr", None, "click")
    assert meta["schema"] == {"user": "int32", "item": "int32", "timestamp": "int64",
                              "label": "int8"}
    assert _read(out / "train.parquet") == {"user": [0, 1], "item": [0, 0], "timestamp": [1, 4],
                                            "label": [1, 0]}
    assert _read(out / "valid.parquet")["label"] == [0, 0]
    assert _read(out / "test.parquet")["label"] == [1, 1]
    assert pq.read_schema(out / "test.parquet").field("label").type == pa.int8()
    assert load_dataset(str(out)).test.label.tolist() == [1.0, 1.0]
    # A ranking dataset's meta.json has no label_column key (its bytes are as before).
    plain = prepare(write("log.csv", CLICKS), "csv", str(tmp_path / "plain"), split="loo")
    assert "label_column" not in plain and plain["task"] == "ranking"


def test_boolean_and_float_label_columns(tmp_path):
    table = pa.table({"user_id": ["u", "u", "u"], "item_id": ["a", "b", "c"],
                      "rating": [5.0, 1.0, 3.0], "clicked": [True, False, True],
                      "score": [1.0, 0.0, 1.0]})
    pq.write_table(table, tmp_path / "log.parquet")
    for name in ("clicked", "score"):
        log = read_log(str(tmp_path / "log.parquet"), "parquet", ColumnMap(label=name))
        assert log["label"].type == pa.int8() and log["label"].to_pylist() == [1, 0, 1]
        # The rating stays beside the label.
        assert log["rating"].to_pylist() == [5.0, 1.0, 3.0]


@pytest.mark.parametrize("value, shown", [
    ("2", "'2'"),
    ("0.5", "'0.5'"),
    ("yes", "'yes'"),
    ("", "a missing value"),
    ("NaN", "a missing value"),  # pyarrow's CSV reader reads NaN as a missing value
])
def test_non_binary_label_is_named(write, tmp_path, value, shown):
    path = write("log.csv", CLICKS.replace("u2,a,4,0", f"u2,a,4,{value}"))
    with pytest.raises(AdvrecError) as info:
        prepare(path, "csv", str(tmp_path / "out"), columns=ColumnMap(label="click"))
    assert str(info.value) == (
        f"{path}: label column 'click' has {shown} at data row 4 (expected only 0/1)"
    )
    assert not (tmp_path / "out").exists()


def test_nan_label_is_named(tmp_path):
    table = pa.table({"user_id": ["u", "u"], "item_id": ["a", "b"], "click": [1.0, np.nan]})
    pq.write_table(table, tmp_path / "log.parquet")
    with pytest.raises(AdvrecError, match=r"log.parquet: label column 'click' has 'nan' at data "
                       r"row 2 \(expected only 0/1\)"):
        read_log(str(tmp_path / "log.parquet"), "parquet", ColumnMap(label="click"))


def test_label_options_exclude_each_other(write, tmp_path):
    log = write("log.csv", LOG.replace("genre", "click").replace("drama", "1")
                .replace("comedy", "0").replace("horror", "1").replace("thriller", "0"))
    columns = ColumnMap(label="click")
    with pytest.raises(AdvrecError, match=r"^--label-col/data.label_column and "
                       r"--label-threshold/data.label_threshold exclude each other"):
        prepare(log, "csv", str(tmp_path / "out"), label_threshold=4, columns=columns)
    with pytest.raises(AdvrecError, match=r"^--label-col/data.label_column and "
                       r"--min-rating/data.min_rating exclude each other"):
        prepare(log, "csv", str(tmp_path / "out"), min_rating=4, columns=columns)
    with pytest.raises(AdvrecError, match=r"log.csv: missing label column 'clicks'"):
        prepare(log, "csv", str(tmp_path / "out"), columns=ColumnMap(label="clicks"))
    assert not (tmp_path / "out").exists()


def test_missing_and_misnamed_feature_columns(write, tmp_path):
    path = write("log.csv", LOG)
    with pytest.raises(AdvrecError) as info:
        prepare(path, "csv", str(tmp_path / "out"),
                columns=ColumnMap(user_features=("age", "sex")))
    assert str(info.value) == (
        f"{path}: missing user feature column 'sex' "
        "(columns: user_id, item_id, rating, timestamp, age, city, genre)"
    )
    assert "\n" not in str(info.value)
    with pytest.raises(AdvrecError, match=r"log.csv: item feature column 'item_id' is the item "
                       "id column itself"):
        prepare(path, "csv", str(tmp_path / "out"), columns=ColumnMap(item_features=("item_id",)))
    with pytest.raises(AdvrecError, match=r"log.csv: user feature column 'age' is listed twice"):
        prepare(path, "csv", str(tmp_path / "out"),
                columns=ColumnMap(user_features=("age", "age")))
    pq.write_table(pa.table({"user_id": ["u"], "item_id": ["a"]}), tmp_path / "log.parquet")
    with pytest.raises(AdvrecError, match=r"log.parquet: missing item feature column 'genre'"):
        prepare(str(tmp_path / "log.parquet"), "parquet", str(tmp_path / "out"),
                columns=ColumnMap(item_features=("genre",)))
    pq.write_table(pa.table({"user_id": ["u"], "item_id": ["a"], "when": pa.array(
        [0], pa.date32())}), tmp_path / "log.parquet")
    with pytest.raises(AdvrecError, match=r"feature column 'when' has type date32"):
        prepare(str(tmp_path / "log.parquet"), "parquet", str(tmp_path / "out"),
                columns=ColumnMap(item_features=("when",)))
    seq = write("seq.txt", "u1 a\nu1 b\nu1 c\n")
    with pytest.raises(AdvrecError, match=r"^--user-features/data.user_features names a column "
                       "of a csv, parquet or recbole log; a sasrec log has a fixed layout"):
        prepare(seq, "sasrec", str(tmp_path / "out"), columns=ColumnMap(user_features=("age",)))
    assert not (tmp_path / "out").exists()


def test_cli_flags(write, tmp_path, capsys):
    log = write("log.csv", LOG.replace(",genre", ",genre,click").replace("drama\n", "drama,1\n")
                .replace("comedy\n", "comedy,0\n").replace("horror\n", "horror,1\n")
                .replace("thriller\n", "thriller,0\n"))
    out = tmp_path / "out"
    code = main(["prepare", "--input", log, "--format", "csv", "--output", str(out),
                 "--split", "loo", "--user-features", "age, city", "--item-features", "genre",
                 "--label-col", "click"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["task"], meta["label_column"], meta["features"]) == ("ctr", "click",
                                                                      ["item", "user"])
    assert _read(out / "user_features.parquet")["age"] == [25, 31]
    assert _read(out / "item_features.parquet")["genre"] == ["comedy", "drama", "horror"]
    capsys.readouterr()

    bad = tmp_path / "bad"
    code = main(["prepare", "--input", log, "--format", "csv", "--output", str(bad),
                 "--label-col", "click", "--label-threshold", "4"])
    err = capsys.readouterr().err
    assert code == 2 and error_line(err)
    assert "--label-col" in err and "--label-threshold" in err
    code = main(["prepare", "--input", log, "--format", "csv", "--output", str(bad),
                 "--user-features", "zip"])
    err = capsys.readouterr().err
    line = error_line(err)
    assert code == 2 and line and "missing user feature column 'zip'" in line
    assert not bad.exists()
    with pytest.raises(SystemExit):
        main(["prepare", "--input", log, "--format", "csv", "--output", str(bad),
              "--item-features", ","])


def test_resolve_dataset_passes_the_columns_and_keys_the_cache(write, tmp_path):
    log = write("log.csv", LOG.replace(",genre", ",genre,click").replace("drama\n", "drama,1\n")
                .replace("comedy\n", "comedy,0\n").replace("horror\n", "horror,1\n")
                .replace("thriller\n", "thriller,0\n"))
    cache = str(tmp_path / "cache")
    plain = resolve_dataset(DataConfig(source=log, cache_dir=cache))
    rich = resolve_dataset(DataConfig(source=log, cache_dir=cache, user_features=["age"],
                                      item_features=["genre", "city"], label_column="click"))
    assert plain != rich
    assert not Path(plain, "user_features.parquet").exists()
    assert _read(Path(rich, "user_features.parquet")) == {"index": [0, 1], "age": [25, 31]}
    assert pq.read_schema(Path(rich, "item_features.parquet")).names == ["index", "genre", "city"]
    assert json.loads(Path(rich, "meta.json").read_text())["label_column"] == "click"
    other = resolve_dataset(DataConfig(source=log, cache_dir=cache, user_features=["city"]))
    assert other not in (plain, rich)
