"""Each reader on a small file written here, the real ml-100k, and each kind of bad input."""

from __future__ import annotations

import re
import zipfile

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advrec.data import FORMATS, ColumnMap, read_log
from advrec.data.readers import read_recbole_features
from advrec.errors import AdvrecError

STANDARD = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("rating", pa.float64()),
        ("timestamp", pa.int64()),
    ]
)
NO_RATING = pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.int64())])

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
EXPECTED = {
    "user": ["196", "186", "22"],
    "item": ["242", "302", "377"],
    "rating": [3.0, 3.0, 1.0],
    "timestamp": [881250949, 891717742, 878887116],
}


def test_formats_are_listed():
    assert FORMATS == ("movielens", "recbole", "sasrec", "csv", "parquet")


def test_movielens_u_data(write):
    table = read_log(write("u.data", U_DATA), "movielens")
    assert table.schema == STANDARD
    assert table.to_pydict() == EXPECTED


def test_movielens_directory_one_level_down(write, tmp_path):
    write("ml-100k/u.data", U_DATA)
    write("ml-100k/u.item", "1|Toy Story\n")
    assert read_log(str(tmp_path), "movielens").to_pydict() == EXPECTED


def test_movielens_ratings_dat(write):
    path = write(
        "ml-1m/ratings.dat",
        "196::242::3::881250949\n186::302::3::891717742\n22::377::1::878887116\n",
    )
    assert read_log(path, "movielens").to_pydict() == EXPECTED


def test_movielens_ratings_csv(write, tmp_path):
    write(
        "ml-latest-small/ratings.csv",
        "userId,movieId,rating,timestamp\n196,242,3.0,881250949\n186,302,3.0,891717742\n"
        "22,377,1.0,878887116\n",
    )
    assert read_log(str(tmp_path / "ml-latest-small"), "movielens").to_pydict() == EXPECTED


def test_movielens_zip_local_and_any_fsspec_url(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", U_DATA)
        z.writestr("ml-100k/README", "MovieLens")
    assert read_log(str(archive), "movielens").to_pydict() == EXPECTED

    # The same archive behind another fsspec protocol (as for the GroupLens https URL).
    url = "memory://advrec-test-readers/ml-100k.zip"
    with fsspec.open(url, "wb") as f:
        f.write(archive.read_bytes())
    try:
        assert read_log(url, "movielens").to_pydict() == EXPECTED
    finally:
        fsspec.filesystem("memory").rm("/advrec-test-readers", recursive=True)


def test_movielens_zip_errors_name_the_file_inside(tmp_path):
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-1m/ratings.dat", "1::2::x::4\n")
    with pytest.raises(AdvrecError, match=r"zip://ml-1m/ratings.dat::.*ml-1m.zip.*'rating'"):
        read_log(str(archive), "movielens")
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("README", "nothing here")
    with pytest.raises(AdvrecError, match="no MovieLens ratings file"):
        read_log(str(archive), "movielens")


RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742.0\n22\t377\t1\t878887116.9\n"
)


def test_recbole_file_and_directory(write, tmp_path):
    path = write("toy/toy.inter", RECBOLE_INTER)
    write("toy/other.txt", "ignored")
    assert read_log(path, "recbole").to_pydict() == EXPECTED  # float times are floored
    assert read_log(str(tmp_path / "toy"), "recbole").to_pydict() == EXPECTED


def test_recbole_features(write, tmp_path):
    write("toy/toy.inter", RECBOLE_INTER)
    write(
        "toy/toy.item",
        "item_id:token\ttitle:token_seq\tyear:float\n242\tKolya\t1996\n302\tL.A. Confidential\t\n",
    )
    items = read_recbole_features(str(tmp_path / "toy"), "item")
    assert items.schema == pa.schema(
        [("item_id", pa.string()), ("title", pa.string()), ("year", pa.float64())]
    )
    assert items["title"].to_pylist() == ["Kolya", "L.A. Confidential"]
    assert items["year"].to_pylist() == [1996.0, None]  # side features may be missing
    assert read_recbole_features(str(tmp_path / "toy"), "user") is None


def test_recbole_column_map(write):
    path = write(
        "yelp.inter",
        "review_id:token\tuser_id:token\tbusiness_id:token\tstars:float\n"
        "r1\tu1\tb1\t5\nr2\tu2\tb1\t4\n",
    )
    table = read_log(path, "recbole", ColumnMap(item="business_id", rating="stars", timestamp=None))
    assert table.to_pydict() == {
        "user": ["u1", "u2"],
        "item": ["b1", "b1"],
        "rating": [5.0, 4.0],
        "timestamp": [0, 1],
    }


def test_sasrec_time_is_line_order(write):
    table = read_log(write("Beauty.txt", "1 5\n1 3\n2 5\n"), "sasrec")
    assert table.schema == NO_RATING
    assert table.to_pydict() == {
        "user": ["1", "1", "2"],
        "item": ["5", "3", "5"],
        "timestamp": [0, 1, 2],
    }


def test_csv_with_column_map(write):
    path = write("log.csv", "uid;iid;score;extra\nalice;i1;4.5;x\nbob;i2;3;y\n")
    table = read_log(path, "csv", ColumnMap(user="uid", item="iid", rating="score", sep=";"))
    # No column of the default time name: the row order is the time.
    assert table.to_pydict() == {
        "user": ["alice", "bob"],
        "item": ["i1", "i2"],
        "rating": [4.5, 3.0],
        "timestamp": [0, 1],
    }


def test_csv_ids_stay_strings_and_datetimes_become_epoch_seconds(write):
    path = write(
        "log.csv", "user_id,item_id,timestamp\n007,1,2020-01-01 00:00:10\n7,2,1970-01-01 00:00:00\n"
    )
    table = read_log(path, "csv")
    assert table.schema == NO_RATING
    assert table.to_pydict() == {
        "user": ["007", "7"],
        "item": ["1", "2"],
        "timestamp": [1577836810, 0],
    }


def test_parquet_file_and_directory_in_sorted_order(tmp_path):
    part = {"user_id": [1, 2], "item_id": [10, 20], "rating": [1.0, 2.0], "timestamp": [5, 6]}
    later = {"user_id": [3], "item_id": [30], "rating": [3.0], "timestamp": [7]}
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table(later), tmp_path / "log/part-00001.parquet")
    pq.write_table(pa.table(part), tmp_path / "log/part-00000.parquet")
    (tmp_path / "log/_synth.json").write_text("{}")
    table = read_log(str(tmp_path / "log"), "parquet")
    assert table.schema == STANDARD
    assert table.to_pydict() == {
        "user": ["1", "2", "3"],
        "item": ["10", "20", "30"],
        "rating": [1.0, 2.0, 3.0],
        "timestamp": [5, 6, 7],
    }
    one = read_log(str(tmp_path / "log/part-00001.parquet"), "parquet", ColumnMap(timestamp=None))
    assert one.to_pydict() == {"user": ["3"], "item": ["30"], "rating": [3.0], "timestamp": [0]}


def test_real_ml100k_u_data_and_recbole_agree(ml100k):
    table = read_log(str(ml100k / "u.data"), "movielens")
    assert table.num_rows == 100_000
    assert len(table["user"].unique()) == 943
    assert len(table["item"].unique()) == 1682
    assert table.equals(read_log(str(ml100k / "recbole"), "recbole"))
    items = read_recbole_features(str(ml100k / "recbole"), "item")
    users = read_recbole_features(str(ml100k / "recbole"), "user")
    assert (items.num_rows, users.num_rows) == (1682, 943)
    assert users.column_names == ["user_id", "age", "gender", "occupation", "zip_code"]


@pytest.mark.parametrize(
    ("name", "text", "fmt", "columns", "culprit"),
    [
        ("u.data", "", "movielens", None, r"u\.data: empty"),
        ("log.csv", "user_id,item_id\n", "csv", None, r"log\.csv: empty"),
        (
            "log.csv",
            "u,item_id\n1,2\n",
            "csv",
            None,
            r"log\.csv: missing user column 'user_id' \(columns: u, item_id\)",
        ),
        (
            "log.csv",
            "user_id,item_id\n1,2\n",
            "csv",
            ColumnMap(rating="stars"),
            r"missing rating column 'stars'",
        ),
        (
            "u.data",
            "1\t2\tgood\t3\n",
            "movielens",
            None,
            r"u\.data: column 'rating' has a non-numeric value 'good' at data row 1",
        ),
        (
            "u.data",
            "1\t2\t3\t4\n1\t3\tNaN\t5\n",
            "movielens",
            None,
            r"column 'rating' has a missing, NaN or infinite value at data row 2",
        ),
        (
            "u.data",
            "1\t2\t3\tmonday\n",
            "movielens",
            None,
            r"column 'timestamp' has a non-numeric value 'monday'",
        ),
        (
            "log.csv",
            "user_id,item_id\n1,2\n,3\n",
            "csv",
            None,
            r"column 'user_id' has 1 missing \(null, NaN or empty\) id, the first at data row 2",
        ),
        (
            "t.inter",
            "user_id:float\titem_id:token\n1\t2\nnan\t3\n\t4\n",
            "recbole",
            None,
            r"column 'user_id' has 2 missing \(null, NaN or empty\) ids, the first at data row 2",
        ),
        ("u.data", "1\t2\t3\n", "movielens", None, r"u\.data: cannot parse"),
        (
            "t.inter",
            "user_id\titem_id:token\n1\t2\n",
            "recbole",
            None,
            r"t\.inter: header field 'user_id' is not name:type",
        ),
        ("u.data", U_DATA, "tsv", None, r"unknown format 'tsv'"),
    ],
)
def test_bad_input_names_the_culprit(write, name, text, fmt, columns, culprit):
    path = write(name, text)
    with pytest.raises(AdvrecError, match=culprit) as info:
        read_log(path, fmt, columns)
    assert "\n" not in str(info.value)


def test_missing_files_and_directories(tmp_path):
    with pytest.raises(AdvrecError, match=r"nope\.csv: file not found"):
        read_log(str(tmp_path / "nope.csv"), "csv")
    with pytest.raises(AdvrecError, match=r"nope\.zip: file not found"):
        read_log(str(tmp_path / "nope.zip"), "movielens")
    with pytest.raises(AdvrecError, match="no MovieLens ratings file"):
        read_log(str(tmp_path), "movielens")
    with pytest.raises(AdvrecError, match=r"no \.inter file"):
        read_log(str(tmp_path), "recbole")
    with pytest.raises(AdvrecError, match=r"no \.parquet files"):
        read_log(str(tmp_path), "parquet")


def test_parquet_missing_column_names_the_part_file(tmp_path):
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"user_id": [1], "item_id": [2]}), tmp_path / "log/part-0.parquet")
    pq.write_table(pa.table({"user_id": [1], "item": [2]}), tmp_path / "log/part-1.parquet")
    with pytest.raises(
        AdvrecError,
        match=r"part-1\.parquet: missing item column 'item_id' \(columns: user_id, item\)",
    ):
        read_log(str(tmp_path / "log"), "parquet")


@pytest.mark.parametrize("lacking", [0, 1])
def test_a_part_without_an_optional_column_the_others_have_is_named(tmp_path, lacking):
    # not read as a log without times (or ratings) for that part's rows
    (tmp_path / "log").mkdir()
    for part in (0, 1):
        columns = {"user_id": [part], "item_id": [part], "timestamp": [part]}
        if part == lacking:
            del columns["timestamp"]
        pq.write_table(pa.table(columns), tmp_path / f"log/part-{part}.parquet")
    lacks, has = (f"part-{lacking}", f"part-{1 - lacking}")
    with pytest.raises(AdvrecError, match=rf"{lacks}\.parquet: no timestamp column "
                       rf"'timestamp', which .*{has}\.parquet has"):
        read_log(str(tmp_path / "log"), "parquet")


def test_parquet_corrupt_part_and_mismatched_schemas_name_the_culprit(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    for i, ints in enumerate((pa.int64(), pa.int32(), pa.int64())):  # widths may differ
        pq.write_table(pa.table({"user_id": pa.array([i], ints), "item_id": [i + 10]}),
                       log / f"part-{i}.parquet")
    assert read_log(str(log), "parquet").num_rows == 3
    good = (log / "part-1.parquet").read_bytes()
    (log / "part-1.parquet").write_bytes(good[: len(good) // 2])  # a truncated upload
    with pytest.raises(AdvrecError, match=r"log/part-1\.parquet: cannot read Parquet"):
        read_log(str(log), "parquet")
    (log / "part-1.parquet").write_bytes(good)
    pq.write_table(pa.table({"user_id": [7], "item_id": ["x"]}), log / "part-2.parquet")
    with pytest.raises(AdvrecError, match=r"log/part-2\.parquet: column 'item_id' is string, "
                       r"but int64 in .*log/part-0\.parquet"):
        read_log(str(log), "parquet")


def test_parquet_float_ids_with_nan_or_null_are_counted_not_read_as_nan(tmp_path):
    ok = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"user_id": [1.0, 2.5], "item_id": [3, 4]}), ok)
    assert read_log(str(ok), "parquet")["user"].to_pylist() == ["1", "2.5"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": [1.0, float("nan"), None, float("nan")],
                             "item_id": [3, 4, 5, 6]}), bad)
    with pytest.raises(AdvrecError, match=r"bad\.parquet: column 'user_id' has 3 missing "
                       r"\(null, NaN or empty\) ids, the first at data row 2"):
        read_log(str(bad), "parquet")


@pytest.mark.parametrize("ids", [pa.array([[1], [2]]), pa.array([{"a": 1}, {"a": 2}])],
                         ids=["list", "struct"])
def test_parquet_id_column_of_a_nested_type_is_named(tmp_path, ids):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": ids}), path)
    kind = pq.read_schema(path).field("item_id").type
    with pytest.raises(AdvrecError, match=re.escape(
            f"log.parquet: id column 'item_id' has type {kind}; ids must be strings or numbers")):
        read_log(str(path), "parquet")


def test_parquet_binary_ids_are_text_or_an_error(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": [b"u1", b"u2"], "item_id": [1, 2]}), path)
    assert read_log(str(path), "parquet")["user"].to_pylist() == ["u1", "u2"]
    pq.write_table(pa.table({"user_id": [b"u1", b"\xff"], "item_id": [1, 2]}), path)
    with pytest.raises(AdvrecError, match=r"id column 'user_id' holds ids that are not UTF-8"):
        read_log(str(path), "parquet")


def test_categorical_parquet_ids_are_read(tmp_path):
    path = tmp_path / "log.parquet"
    users = pa.array(["a", "b", "a"]).dictionary_encode()
    pq.write_table(pa.table({"user_id": users, "item_id": [1, 2, 3]}), path)
    assert read_log(str(path), "parquet")["user"].to_pylist() == ["a", "b", "a"]


@pytest.mark.parametrize("sep", ["", ";;", "\n"])
def test_csv_separator_is_one_character(sep):
    with pytest.raises(AdvrecError, match=r"--sep: the CSV field separator must be one character"):
        ColumnMap(sep=sep)


def test_errors_name_the_file_found_below_the_directory(write, tmp_path):
    write("ml-1m/ratings.dat", "1::2::3::x\n")
    with pytest.raises(
        AdvrecError, match=r"/ml-1m/ratings\.dat: column 'timestamp' has a non-numeric"
    ):
        read_log(str(tmp_path), "movielens")


def test_not_a_zip_archive(write):
    with pytest.raises(AdvrecError, match=r"ml-100k\.zip: not a zip archive"):
        read_log(write("ml-100k.zip", "not a zip"), "movielens")


def test_recbole_numbers_typed_as_tokens(write):
    path = write("t.inter", "user_id:token\titem_id:token\trating:token\n1\t2\t4\n1\t3\tfive\n")
    with pytest.raises(
        AdvrecError, match=r"t\.inter: column 'rating' has a non-numeric value 'five' at data row 2"
    ):
        read_log(path, "recbole")
    path = write("t.inter", "user_id:token\titem_id:token\trating:token\n1\t2\t4\n1\t3\t5\n")
    assert read_log(path, "recbole")["rating"].to_pylist() == [4.0, 5.0]


def test_recbole_errors_name_the_file_in_the_directory(write, tmp_path):
    write("toy/toy.inter", "user_id:token\titem_id:token\n1\ta\n")
    write("toy/toy.user", "user_id:token\tage:float\n1\told\n")
    with pytest.raises(
        AdvrecError, match=r"toy/toy\.user: column 'age' has a non-numeric value 'old'"
    ):
        read_recbole_features(str(tmp_path / "toy"), "user")
    write("toy/toy.inter", "user_id:token\titem:token\n1\ta\n")
    with pytest.raises(AdvrecError, match=r"toy/toy\.inter: missing item column 'item_id'"):
        read_log(str(tmp_path / "toy"), "recbole")


def test_movielens_negative_id_names_the_row(write):
    path = write("u.data", "1\t2\t5\t10\n-3\t2\t4\t11\n")
    with pytest.raises(AdvrecError, match=r"u.data: user id '-3' at data row 2 is not a positive"):
        read_log(path, "movielens")
