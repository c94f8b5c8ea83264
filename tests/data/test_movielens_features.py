"""MovieLens' own side-feature files (u.user/u.item/u.genre, users.dat/movies.dat, movies.csv):
read beside the ratings, prepared into user/item feature files, encoded like RecBole's."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from advrec.data import prepare
from advrec.data.features import load_features, load_side_features
from advrec.data.readers import RECBOLE_TYPE, read_movielens_features
from advrec.errors import AdvrecError

# Three users with three ratings each (enough for a leave-one-out split), five movies.
U_DATA = (
    "1\t1\t5\t881250949\n1\t2\t3\t881250950\n1\t267\t4\t881250951\n"
    "2\t1\t4\t881250952\n2\t3\t2\t881250953\n2\t1300\t3\t881250954\n"
    "3\t2\t1\t881250955\n3\t3\t5\t881250956\n3\t1\t4\t881250957\n"
)
# Real ml-100k lines; user 3 is missing (its features are null), user 4 is not in the log.
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n4|24|M|technician|43537\n"
# ml-100k's u.genre, blank last line included.
GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]
U_GENRE = "".join(f"{name}|{i}\n" for i, name in enumerate(GENRES)) + "\n"


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


# Real ml-100k layout and lines (267 is its movie without a date or URL); 1300 has a Latin-1
# title; 5 is not in the log. The file is Latin-1 encoded, as ml-100k's is.
U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
    + _flags("Animation", "Children's", "Comedy") + "\n"
    "2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?GoldenEye%20(1995)|"
    + _flags("Action", "Adventure", "Thriller") + "\n"
    "3|Four Rooms (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Four%20Rooms%20(1995)|"
    + _flags("Thriller") + "\n"
    "5|Copycat (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Copycat%20(1995)|"
    + _flags("Crime", "Drama", "Thriller") + "\n"
    "267|unknown||||" + _flags("unknown") + "\n"
    "1300|Misérables, Les (1995)|15-Dec-1995||http://us.imdb.com/M/title-exact?Mis%E9rables|"
    + _flags("Drama", "Romance") + "\n"
)
FILES = {"u.data": U_DATA, "u.user": U_USER, "u.item": U_ITEM, "u.genre": U_GENRE}

USER_FEATURES = {  # by index: raw users 1, 2, 3
    "index": [0, 1, 2],
    "age": ["24", "53", None],
    "gender": ["M", "F", None],
    "occupation": ["technician", "other", None],
    "zip_code": ["85711", "94043", None],
}
ITEM_FEATURES = {  # by index: raw items 1, 2, 3, 267, 1300
    "index": [0, 1, 2, 3, 4],
    "movie_title": ["Toy Story", "GoldenEye", "Four Rooms", "unknown", "Misérables, Les"],
    "release_year": ["1995", "1995", "1995", "", "1995"],
    "class": [
        "Animation Children's Comedy",
        "Action Adventure Thriller",
        "Thriller",
        "unknown",
        "Drama Romance",
    ],
}


def _write_ml100k(directory: Path, names=tuple(FILES)) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(FILES[name].encode("latin-1"))
    return directory


def _types(path: Path) -> dict:
    return {f.name: (f.metadata or {}).get(RECBOLE_TYPE) for f in pq.read_schema(path)}


def test_prepare_ml100k_features(tmp_path):
    _write_ml100k(tmp_path / "ml-100k")
    out = tmp_path / "out"
    meta = prepare(str(tmp_path / "ml-100k"), "movielens", str(out), split="loo")
    assert meta["features"] == ["item", "user"]
    assert (meta["num_users"], meta["num_items"]) == (3, 5)
    assert pq.read_table(out / "user_features.parquet").to_pydict() == USER_FEATURES
    assert pq.read_table(out / "item_features.parquet").to_pydict() == ITEM_FEATURES
    # Typed like RecBole's ml-100k atomic files, except the title: one token, not a token_seq.
    assert _types(out / "user_features.parquet") == {
        "index": None, "age": b"token", "gender": b"token", "occupation": b"token",
        "zip_code": b"token",
    }
    assert _types(out / "item_features.parquet") == {
        "index": None, "movie_title": b"token", "release_year": b"token", "class": b"token_seq",
    }

    features = load_side_features(
        str(out), {"user": 3, "item": 5}, numeric=("age", "release_year")
    )
    users, items = features["user"], features["item"]
    assert [(f.name, f.kind, f.vocab_size) for f in users.fields] == [
        ("age", "single", 11),  # bucketised: 10 buckets and the missing id
        ("gender", "single", 3),  # F, M
        ("occupation", "single", 3),  # other, technician
        ("zip_code", "single", 3),  # user 4's zip code is not in the dataset
    ]
    assert users.single.tolist() == [[1, 2, 2, 1], [10, 1, 1, 2], [0, 0, 0, 0]]
    assert [(f.name, f.kind, f.vocab_size) for f in items.fields] == [
        ("movie_title", "single", 6),
        ("release_year", "single", 11),
        ("class", "multi", 10),
    ]
    # Titles in byte order: Four Rooms, GoldenEye, Misérables Les, Toy Story, unknown; every
    # known year is 1995 (the top bucket), 267's is missing.
    assert items.single.tolist() == [[4, 10], [2, 10], [1, 10], [5, 0], [3, 10]]
    # Genres in byte order: Action Adventure Animation Children's Comedy Drama Romance
    # Thriller unknown; each movie's in genre-index order.
    assert torch.equal(
        items.multi["class"],
        torch.tensor([[3, 4, 5], [1, 2, 8], [8, 0, 0], [9, 0, 0], [6, 7, 0]]),
    )
    # load_features, one side at a time, agrees.
    single = load_features(str(out), "user", 3, numeric=("age",)).single
    assert torch.equal(single, users.single)


def test_zip_with_features_gives_the_same_files(tmp_path):
    _write_ml100k(tmp_path / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, text in FILES.items():
            z.writestr(f"ml-100k/{name}", text.encode("latin-1"))
        z.writestr("ml-100k/README", "MovieLens")
    for out in ("a", "b"):
        meta = prepare(str(archive), "movielens", str(tmp_path / out), split="loo", seed=1)
    prepare(str(tmp_path / "ml-100k"), "movielens", str(tmp_path / "dir"), split="loo", seed=1)
    assert meta["features"] == ["item", "user"]
    assert pq.read_table(tmp_path / "a/item_features.parquet").to_pydict() == ITEM_FEATURES
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "user_features.parquet" in files
    for name in files:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes(), name
        if name != "meta.json":  # which names the source
            assert a == (tmp_path / "dir" / name).read_bytes(), name


def test_ratings_alone_write_no_feature_files(tmp_path):
    _write_ml100k(tmp_path / "ml-100k", names=("u.data",))
    out = tmp_path / "out"
    meta = prepare(str(tmp_path / "ml-100k"), "movielens", str(out), split="loo")
    assert meta["features"] == []
    assert sorted(p.name for p in out.iterdir()) == [
        "items.parquet", "meta.json", "test.parquet", "train.parquet", "users.parquet",
        "valid.parquet",
    ]
    assert read_movielens_features(str(tmp_path / "ml-100k" / "u.data"), "user") is None
    # One side alone: only its file.
    _write_ml100k(tmp_path / "ml-100k", names=("u.user",))
    meta = prepare(str(tmp_path / "ml-100k" / "u.data"), "movielens", str(out), split="loo")
    assert meta["features"] == ["user"]
    assert not (out / "item_features.parquet").exists()


def test_ratings_under_another_name_have_no_feature_files(tmp_path):
    # a MovieLens ratings file renamed (a subset, a copy): its features are not guessed
    directory = _write_ml100k(tmp_path / "ml-100k", names=("u.data", "u.user", "u.item"))
    (directory / "u.data").rename(directory / "subset.data")
    assert read_movielens_features(str(directory / "subset.data"), "user") is None
    meta = prepare(str(directory / "subset.data"), "movielens", str(tmp_path / "out"), split="loo")
    assert meta["features"] == []


def test_real_ml100k_ratings_with_features_beside(ml100k, tmp_path):
    """The real u.data beside the fixture's feature files: ids link, unknown ones stay null."""
    directory = _write_ml100k(tmp_path / "ml-100k", names=("u.user", "u.item", "u.genre"))
    (directory / "u.data").write_bytes((ml100k / "u.data").read_bytes())
    meta = prepare(str(directory), "movielens", str(tmp_path / "out"))
    assert (meta["num_users"], meta["num_items"]) == (943, 1682)
    users = pq.read_table(tmp_path / "out/user_features.parquet")
    assert users.num_rows == 943
    assert users["gender"].to_pylist()[:4] == ["M", "F", None, "M"]


def test_bad_u_user_line_is_named(tmp_path):
    directory = _write_ml100k(tmp_path / "ml-100k")
    (directory / "u.user").write_text("1|24|M|technician|85711\n\n2|53|F|other\n")
    with pytest.raises(AdvrecError) as error:
        prepare(str(directory), "movielens", str(tmp_path / "out"), split="loo")
    # One line, naming the file, the line (blank lines count) and the layout.
    assert str(error.value) == (
        f"{directory}/u.user: line 3 has 4 '|'-separated fields, expected 5 "
        "(user id|age|gender|occupation|zip code)"
    )
    assert not (tmp_path / "out").exists()
    # Inside an archive, the file is named as fsspec would open it.
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", U_DATA)
        z.writestr("ml-100k/u.user", "1|24|M|technician\n")
    with pytest.raises(AdvrecError, match=r"^zip://ml-100k/u\.user::\S*ml-100k\.zip: line 1 has 4"):
        prepare(str(archive), "movielens", str(tmp_path / "out"), split="loo")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("u.user", "1|24|M|x|1\nx|24|M|x|1\n", r"u\.user: line 2: user id 'x' is not a positive"),
        (
            "u.user",
            "1|24|M|x|1\n2|24|M|x|1\n1|30|F|y|2\n",
            r"u\.user: line 3: user id '1' is listed again \(first on line 1\)",
        ),
        ("u.user", "\n\n", r"u\.user: empty file"),
        (
            "u.item",
            "1|T (1995)|01-Jan-1995||u|" + "0|" * 18 + "2\n",
            r"u\.item: line 1, field 24 \(genre 'Western'\): flag '2' is not 0 or 1",
        ),
        (
            "u.item",
            "1|T (1995)|01-Jan-1995||u|0|1\n",
            r"u\.item: line 1 has 7 '\|'-separated fields, expected 24 \(movie id\|title\|",
        ),
        (
            "u.item",
            "1|T|Jan-95||u|" + _flags("Drama") + "\n",
            r"u\.item: line 1, field 3: release date 'Jan-95' has no year",
        ),
        ("u.genre", "unknown|0\nAction|0\n", r"u\.genre: line 2: genre index 0 repeats"),
        ("u.genre", "unknown|0\nAction|2\n", r"u\.genre: line 2: genre index 2 repeats or is out"),
        ("u.genre", "Film Noir|0\n", r"u\.genre: line 1: genre name 'Film Noir' is empty or has"),
    ],
)
def test_bad_feature_files(tmp_path, name, text, message):
    directory = _write_ml100k(tmp_path / "ml-100k")
    (directory / name).write_text(text)
    kind = "user" if name == "u.user" else "item"
    # Given the ratings file, the features file beside it is named.
    with pytest.raises(AdvrecError, match="^" + re.escape(f"{directory}/") + message):
        read_movielens_features(str(directory / "u.data"), kind)


def test_u_item_without_u_genre_names_genres_by_position(tmp_path):
    directory = _write_ml100k(tmp_path / "ml-100k", names=("u.data", "u.item"))
    items = read_movielens_features(str(directory / "u.data"), "item")
    assert items["class"].to_pylist()[:3] == ["3 4 5", "1 2 16", "16"]
    assert items["item_id"].to_pylist() == ["1", "2", "3", "5", "267", "1300"]


def test_ml1m_users_and_movies_dat(tmp_path):
    directory = tmp_path / "ml-1m"
    directory.mkdir()
    (directory / "ratings.dat").write_text("1::1193::5::978300760\n2::1::3::978300761\n")
    (directory / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (directory / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "3::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
        "4::Misérables, Les (1995)::Drama\n".encode("latin-1")
    )
    users = read_movielens_features(str(directory), "user")
    assert users.to_pydict() == {
        "user_id": ["1", "2"],
        "age": ["1", "56"],
        "gender": ["F", "M"],
        "occupation": ["10", "16"],
        "zip_code": ["48067", "70072"],
    }
    items = read_movielens_features(str(directory), "item")
    assert items.to_pydict() == {
        "item_id": ["1", "1193", "3", "4"],
        "movie_title": [
            "Toy Story",
            "One Flew Over the Cuckoo's Nest",
            "Star Wars: Episode IV - A New Hope",
            "Misérables, Les",
        ],
        "release_year": ["1995", "1975", "1977", "1995"],
        "class": ["Animation Children's Comedy", "Drama", "Action Sci-Fi", "Drama"],
    }
    assert items.schema.field("class").metadata == {RECBOLE_TYPE: b"token_seq"}
    (directory / "users.dat").write_text("1::F::1::10::48067\n2::M::56\n")
    with pytest.raises(AdvrecError, match=r"users\.dat: line 2 has 3 '::'-separated fields"):
        read_movielens_features(str(directory), "user")


def test_ml_latest_movies_csv(write, tmp_path):
    write(
        "ml-latest-small/ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.0,964981247\n",
    )
    write(
        "ml-latest-small/movies.csv",
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Babylon 5,(no genres listed)\n",
    )
    directory = str(tmp_path / "ml-latest-small")
    assert read_movielens_features(directory, "user") is None  # ml-latest has no users file
    assert read_movielens_features(directory, "item").to_pydict() == {
        "item_id": ["1", "2", "3"],
        "movie_title": ["Toy Story", "American President, The", "Babylon 5"],
        "release_year": ["1995", "1995", ""],
        "class": ["Adventure Animation Children Comedy Fantasy", "Comedy Drama Romance", ""],
    }
    meta = prepare(directory, "movielens", str(tmp_path / "out"), split="random:0.5,0.5")
    assert meta["features"] == ["item"]
