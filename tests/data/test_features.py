"""load_features(): categorical, multi-valued and bucketised fields, on hand-made and real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from advrec.data import FeatureSet, Field, load_dataset, load_features, prepare
from advrec.errors import AdvrecError

# Four users (raw ids 1..4) rate four items (a..d). User 4 is missing from the .user file and
# user 5 / item e appear only in the feature files, so they are not in the dataset at all.
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t{(u + t) % 5 + 1}\t{10 * u + t}\n"
    for u in range(1, 5)
    for t, i in enumerate("abcd")
)
USER = (
    "user_id:token\tgender:token\tage:float\tcity:token\n"
    "1\tM\t20\tparis\n"
    "2\tF\t\ttokyo\n"  # no age
    "3\t\t40\tparis\n"  # no gender
    "5\tF\t60\trome\n"  # not in the log: 'rome' must not enter the vocabulary
)
ITEM = (
    "item_id:token\ttitle:token_seq\tgenres:token_seq\tyear:token\n"
    "a\tThe Cat\tx y\t1990\n"
    "b\tDog\ty\tunknown\n"
    "c\tThe Dog\t\t2000\n"  # no genres
    "d\tCat Dog Day\tz  x y\t1990\n"  # a double space: no empty token
    "e\tEel\tw\t1980\n"  # not in the log
)


@pytest.fixture
def toy(write, tmp_path) -> str:
    """The prepared toy dataset (users 1..4 -> index 0..3, items a..d -> index 0..3)."""
    write("toy/toy.inter", INTER)
    write("toy/toy.user", USER)
    write("toy/toy.item", ITEM)
    out = str(tmp_path / "prepared")
    meta = prepare(str(tmp_path / "toy"), "recbole", out, split="loo")
    assert (meta["num_users"], meta["num_items"]) == (4, 4)
    return out


def test_categorical_and_bucketised_user_features(toy):
    users = load_features(toy, "user", 4, buckets=2)
    assert isinstance(users, FeatureSet)
    assert users.fields == [
        Field("gender", "single", 3, ("F", "M")),
        Field("age", "single", 3),  # 2 buckets split at the median of 20 and 40: no values
        Field("city", "single", 3, ("paris", "tokyo")),  # 'rome' is no user's of the log
    ]
    assert users.single.dtype == torch.int64
    assert users.single.tolist() == [
        [2, 1, 1],  # user 1: M, 20, paris
        [1, 0, 2],  # user 2: F, no age, tokyo
        [0, 2, 1],  # user 3: no gender, 40, paris
        [0, 0, 0],  # user 4: not in the .user file
    ]
    assert users.multi == {}
    assert users.single_fields == users.fields and users.multi_fields == []


def test_multi_valued_item_features_are_padded(toy):
    items = load_features(toy, "item", 4, exclude=("title",))
    assert items.fields == [Field("genres", "multi", 4, ("x", "y", "z")),
                            Field("year", "single", 4, ("1990", "2000", "unknown"))]
    assert items.multi["genres"].dtype == torch.int64
    assert items.multi["genres"].tolist() == [
        [1, 2, 0],  # a: x y
        [2, 0, 0],  # b: y
        [0, 0, 0],  # c: none
        [3, 1, 2],  # d: z x y, in file order
    ]
    # year as a token: 1990=1, 2000=2, unknown=3 (1980 belongs to item e, not in the dataset)
    assert items.single.tolist() == [[1], [3], [2], [1]]
    # Rows beyond the file (a larger vocabulary) are all padding.
    wider = load_features(toy, "item", 6, exclude=("title",))
    assert wider.multi["genres"][4:].eq(0).all() and wider.single[4:].eq(0).all()
    # Without exclude, the title is one more multi-valued field, before genres (file order).
    everything = load_features(toy, "item", 4)
    assert [f.name for f in everything.fields] == ["title", "genres", "year"]
    # Cat=1, Day=2, Dog=3, The=4 (sorted by code point: upper case first)
    assert everything.multi["title"].tolist() == [[4, 1, 0], [3, 0, 0], [4, 3, 0], [1, 3, 2]]


def test_a_token_column_can_be_bucketised(toy):
    items = load_features(toy, "item", 4, buckets=2, exclude=("title",), numeric=("year",))
    assert items.fields[1] == Field("year", "single", 3)
    # The median of 1990, 2000, 1990 is 1990, and a value on an edge goes to the upper bucket;
    # 'unknown' is no number, so it is missing.
    assert items.single.tolist() == [[2], [0], [2], [2]]


def _write_features(directory: Path, kind: str, table: pa.Table) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / f"{kind}_features.parquet")
    return str(directory)


def test_equal_frequency_buckets_and_missing_values(tmp_path):
    # Rows in shuffled index order: the encoding follows the index column, not the row order.
    index = [7, 0, 5, 2, 9, 1, 4, 3, 6, 8, 10]
    score = [8.0, 1.0, 6.0, 3.0, None, 2.0, 5.0, 4.0, 7.0, np.nan, np.inf]
    count = [80, 10, 60, 30, None, 20, 50, 40, 70, 90, 100]  # an integer column is numeric too
    tags = [["p"], [], None, ["q", "p"], ["p", ""], ["r"], [None], ["q"], [], [], []]
    url = _write_features(
        tmp_path / "ds",
        "user",
        pa.table(
            {
                "index": pa.array(index, pa.int32()),
                "score": pa.array(score, pa.float64()),
                "count": pa.array(count, pa.int64()),
                "tags": pa.array(tags, pa.list_(pa.string())),
            }
        ),
    )
    features = load_features(url, "user", 12, buckets=4)
    assert features.fields == [
        Field("score", "single", 5),
        Field("count", "single", 5),
        Field("tags", "multi", 4, ("p", "q", "r")),
    ]
    # 1..8 in quartiles: edges 2.75, 4.5, 6.25; None, NaN and inf are missing.
    expected_score = {0: 1, 1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4}
    assert features.single[:, 0].tolist() == [expected_score.get(i, 0) for i in range(12)]
    # The same rule by hand with numpy, over the 10 counts that are there.
    present = np.array([c for c in count if c is not None], dtype=float)
    edges = np.quantile(present, [0.25, 0.5, 0.75])
    expected_count = [0] * 12
    for i, c in zip(index, count, strict=True):
        if c is not None:
            expected_count[i] = int(np.searchsorted(edges, c, side="right")) + 1
    assert features.single[:, 1].tolist() == expected_count
    assert sorted(expected_count) == [0, 0] + [1] * 3 + [2] * 2 + [3] * 2 + [4] * 3
    assert features.single[11].tolist() == [0, 0]  # index 11 is not in the file
    # p=1, q=2, r=3; '' and null tokens are dropped, empty and null lists are all padding.
    assert features.multi["tags"].tolist() == [
        [0, 0],  # 0: []
        [3, 0],  # 1: r
        [2, 1],  # 2: q p
        [2, 0],  # 3: q
        [0, 0],  # 4: [null]
        [0, 0],  # 5: null
        [0, 0],  # 6: []
        [1, 0],  # 7: p
        [0, 0],  # 8: []
        [1, 0],  # 9: p ''
        [0, 0],  # 10: []
        [0, 0],  # 11: not in the file
    ]


def test_encoding_is_deterministic(toy, tmp_path):
    first = load_features(toy, "item", 4)
    second = load_features(toy, "item", 4)
    assert first.fields == second.fields
    assert torch.equal(first.single, second.single)
    assert first.multi.keys() == second.multi.keys()
    assert all(torch.equal(first.multi[k], second.multi[k]) for k in first.multi)


def test_ml100k_features(ml100k, tmp_path):
    out = str(tmp_path / "ml")
    meta = prepare(str(ml100k / "recbole"), "recbole", out)
    users = load_features(out, "user", meta["num_users"])
    assert meta["num_users"] == 943 and users.single.shape == (943, 4)
    sizes = {f.name: f.vocab_size for f in users.fields}
    assert sizes["gender"] == 2 + 1
    assert sizes["occupation"] == 21 + 1
    assert sizes["age"] == 61 + 1
    assert sizes["zip_code"] == 795 + 1
    assert users.single.min() >= 1  # every user has every feature
    assert users.single[0, 1] == 2  # user 1 is 'M' (F=1, M=2)

    items = load_features(out, "item", meta["num_items"], exclude=("movie_title",))
    assert meta["num_items"] == 1682
    assert [(f.name, f.kind) for f in items.fields] == [
        ("release_year", "single"),
        ("class", "multi"),
    ]
    genres = items.multi["class"]
    assert items.fields[1].vocab_size <= 19 + 1  # the 19 genres, 'unknown' included
    assert genres.shape == (1682, 6)  # at most 6 genres per film
    assert genres[:, 0].min() >= 1  # every film has a genre
    assert int(genres.max()) == items.fields[1].vocab_size - 1
    # Year as a token: 71 years plus the odd values 'unkonwn' and 'V', and the id 0.
    assert items.fields[0].vocab_size == 74

    bucketed = load_features(
        out, "item", 1682, buckets=10, exclude=("movie_title",), numeric=("release_year",)
    )
    year = bucketed.single[:, 0].numpy()
    assert bucketed.fields[0] == Field("release_year", "single", 11)
    assert year.min() == 0 and year.max() == 10
    assert (year == 0).sum() == 2  # 'unkonwn' (item 267) and 'V' (item 1412)
    # Buckets follow the year: sorted by year, the ids never go down.
    raw = pq.read_table(Path(out) / "item_features.parquet")["release_year"].to_pylist()
    known = np.flatnonzero(year > 0)
    by_year = known[np.argsort([int(raw[i]) for i in known], kind="stable")]
    assert np.all(np.diff(year[by_year]) >= 0)
    # Equal frequency up to ties: no bucket holds much more than a tenth of the films, except
    # where one year alone is bigger than that (1996 has 355 films).
    largest_year = max(np.unique([raw[i] for i in known], return_counts=True)[1])
    assert np.bincount(year[known]).max() <= max(largest_year, 1680 // 10 + 1)


def test_ctr_labels(atomic_small, small_log, tmp_path):
    out = str(tmp_path / "ctr")
    meta = prepare(str(atomic_small), "recbole", out, label_threshold=4)
    assert meta["task"] == "ctr" and meta["label_threshold"] == 4
    assert meta["schema"]["label"] == "int8"
    ratings = small_log.log["rating"].to_numpy()
    assert 0.2 < (ratings >= 4).mean() < 0.8  # both labels common
    tables = [pq.read_table(Path(out) / f"{s}.parquet") for s in ("train", "valid", "test")]
    assert sum(t.num_rows for t in tables) == len(ratings)
    labels = np.concatenate([t["label"].to_numpy() for t in tables])
    assert labels.dtype == np.int8
    assert labels.mean() == pytest.approx((ratings >= 4).mean(), abs=1e-12)
    for t in tables:  # each label agrees with its own rating
        rating, label = t["rating"].to_numpy(), t["label"].to_numpy()
        assert np.array_equal(label, (rating >= 4).astype(np.int8))
    dataset = load_dataset(out)
    assert dataset.train.label.dtype == torch.float32
    assert dataset.train.label.shape == dataset.train.user.shape
    assert sum(float(dataset.split(s).label.sum()) for s in ("train", "valid", "test")) == int(
        (ratings >= 4).sum()
    )


def test_errors(toy, tmp_path):
    assert load_features(toy, "user", 4) is not None
    assert load_features(str(tmp_path / "nowhere"), "user", 4) is None
    with pytest.raises(AdvrecError, match=r"feature column 'titel' \(in exclude\) does not exist"):
        load_features(toy, "item", 4, exclude=("titel",))
    with pytest.raises(AdvrecError, match=r"'index' \(in exclude\) does not exist"):
        load_features(toy, "item", 4, exclude=("index",))
    with pytest.raises(AdvrecError, match=r"'yr' \(in numeric\) does not exist"):
        load_features(toy, "item", 4, numeric=("yr",))
    with pytest.raises(AdvrecError, match="feature kind must be one of user, item, not 'items'"):
        load_features(toy, "items", 4)
    with pytest.raises(AdvrecError, match="buckets must be >= 1, not 0"):
        load_features(toy, "user", 4, buckets=0)
    with pytest.raises(AdvrecError, match=r"user_features.parquet: index 3 is outside 0\.\.2"):
        load_features(toy, "user", 3)
    url = _write_features(
        tmp_path / "bad", "item", pa.table({"index": [0], "when": pa.array([1], pa.date32())})
    )
    with pytest.raises(AdvrecError, match="column 'when' has type date32"):
        load_features(url, "item", 1)
    url = _write_features(tmp_path / "noindex", "item", pa.table({"id": [0]}))
    with pytest.raises(AdvrecError, match="item_features.parquet: no 'index' column"):
        load_features(url, "item", 1)
