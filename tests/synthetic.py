"""Small logs for the tests, made here rather than read from outside the repository.

The interactions are `advrec synth`'s (:func:`advrec.data.synth`): users and items with latent
factors and Zipf popularity, so a model has something to learn. This module adds what MovieLens
100K has and synth does not, in the same shapes:

- side features: a user's age, gender, occupation and zip code; a film's title, release year (a
  few unknown, marked with a word as ml-100k does) and 1-3 genres of ml-100k's 19;
- 1-5 star ratings that depend on those features (genre tastes, a gender x genre taste, an
  occupation's leniency, older films rated higher) plus each user's and film's own bias and
  noise, so that "rating >= 4" is a click that CTR and feature models can learn;
- each user's items in a random time order (synth's time order is its draw order, best-liked
  first);

and writes them in the formats the readers take: a MovieLens ``u.data`` and RecBole atomic files
(``.inter`` with ``.user`` and ``.item``). Ids are written 1-based, as ml-100k's are. Same
arguments, same bytes.

Importable by tests because pyproject's pytest ``pythonpath`` holds ``tests/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from advrec.data import synth

# ml-100k's genres, occupations, and a film's year when unknown (ml-100k's own spelling)
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment",
               "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing",
               "none", "other", "programmer", "retired", "salesman", "scientist", "student",
               "technician", "writer")
UNKNOWN_YEAR = "unkonwn"
UNKNOWN_YEARS = 2  # films without a year (ml-100k has 2 of 1682)


@dataclass(frozen=True)
class SyntheticLog:
    """A synthetic log with side features; every list is indexed by the 0-based synth id.

    ``log`` has synth's columns, ``user_id``, ``item_id``, ``rating`` (here 1-5 stars, int64)
    and ``timestamp``, rows grouped by user in time order.
    """

    log: pa.Table
    users: dict[str, list[str]]  # age, gender, occupation, zip_code: (num_users,) each
    items: dict[str, list[str]]  # movie_title, release_year, class (genres, space-separated)

    @property
    def num_users(self) -> int:
        return len(self.users["age"])

    @property
    def num_items(self) -> int:
        return len(self.items["movie_title"])


def synthetic_log(directory: Path, users: int, items: int, interactions: int,
                  seed: int = 0) -> SyntheticLog:
    """`advrec synth`'s log (written under ``directory``) with side features and star ratings."""
    synth(users, items, interactions, str(directory / "synth"), seed=seed)
    log = pq.read_table(directory / "synth")
    rng = np.random.default_rng([seed, 1])  # not synth's own stream

    gender = np.where(rng.random(users) < 0.7, "M", "F")
    occupation = rng.integers(0, len(OCCUPATIONS), users)
    user_features = {
        "age": [str(a) for a in rng.integers(7, 74, users)],
        "gender": gender.tolist(),
        "occupation": [OCCUPATIONS[o] for o in occupation],
        "zip_code": [f"{z:05d}" for z in rng.integers(0, 100_000, users)],
    }
    # Drama and Comedy are the commonest genres, as in ml-100k; "unknown" is no film's here
    weights = np.ones(len(GENRES))
    weights[[GENRES.index("Drama"), GENRES.index("Comedy")]] = 6.0
    weights[GENRES.index("unknown")] = 0.0
    genres = [rng.choice(len(GENRES), rng.integers(1, 4), replace=False, p=weights / weights.sum())
              for _ in range(items)]
    year = np.clip(1998 - np.floor(rng.exponential(8.0, items)), 1922, 1998).astype(int)
    years = [str(y) for y in year]
    for i in rng.choice(items, min(UNKNOWN_YEARS, items), replace=False):
        years[i] = UNKNOWN_YEAR
    item_features = {
        "movie_title": [f"Film {i + 1}" for i in range(items)],
        "release_year": years,
        "class": [" ".join(GENRES[g] for g in sorted(gs)) for gs in genres],
    }

    # A rating is 3.5 stars moved by what the features say (each genre's appeal, a gender's
    # taste for it, an occupation's leniency, classics rated higher) and by the user's and the
    # film's own bias, then noise, rounded and clipped to 1-5 stars.
    genre_appeal = rng.normal(0.0, 0.6, len(GENRES))
    taste = rng.normal(0.0, 0.5, (2, len(GENRES)))  # (M/F, genre)
    leniency = rng.normal(0.0, 0.4, len(OCCUPATIONS))
    item_bias = np.array([genre_appeal[gs].mean() for gs in genres])
    item_bias += 0.3 * (year < 1980) + rng.normal(0.0, 0.4, items)
    user_bias = leniency[occupation] + rng.normal(0.0, 0.4, users)
    user, item = log["user_id"].to_numpy(), log["item_id"].to_numpy()
    is_female = (gender == "F").astype(int)
    user_taste = np.array([[taste[f, gs].mean() for gs in genres] for f in (0, 1)])
    score = (3.5 + user_bias[user] + item_bias[item] + user_taste[is_female[user], item]
             + rng.normal(0.0, 0.6, len(user)))
    stars = np.clip(np.rint(score), 1, 5).astype(np.int64)
    log = log.set_column(log.schema.get_field_index("rating"), "rating", pa.array(stars))
    # synth's time order is its draw order, best-liked first, which would make every user's last
    # item (a leave-one-out test item) their least-liked; here it is a pick like any other
    shuffled = log.take(np.lexsort((rng.random(len(user)), user)))  # rows still by user
    times = log.schema.get_field_index("timestamp")
    log = shuffled.set_column(times, "timestamp", log["timestamp"])  # each user's times, in order
    return SyntheticLog(log, user_features, item_features)


def write_u_data(data: SyntheticLog, path: Path) -> Path:
    """The log as a MovieLens 100K ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``."""
    columns = _one_based(data.log)
    _write_lines(path, None, zip(*columns))
    return path


def write_atomic(data: SyntheticLog, directory: Path, name: str = "synth") -> Path:
    """RecBole atomic files ``directory/name.{inter,user,item}``, typed as RecBole's ml-100k:
    every user and every item has a row of side features, as in the real download."""
    directory.mkdir(parents=True, exist_ok=True)
    _write_lines(directory / f"{name}.inter",
                 "user_id:token\titem_id:token\trating:float\ttimestamp:float",
                 zip(*_one_based(data.log)))
    _write_lines(directory / f"{name}.user",
                 "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
                 zip(range(1, data.num_users + 1), *data.users.values()))
    _write_lines(directory / f"{name}.item",
                 "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
                 zip(range(1, data.num_items + 1), *data.items.values()))
    return directory


def _one_based(log: pa.Table) -> list[list[int]]:
    """The log's columns (user, item, rating, timestamp) with ml-100k's 1-based ids."""
    return [(log["user_id"].to_numpy() + 1).tolist(), (log["item_id"].to_numpy() + 1).tolist(),
            log["rating"].to_pylist(), log["timestamp"].to_pylist()]


def _write_lines(path: Path, header: str | None, rows: Iterable[tuple]) -> None:
    """Tab-separated ``rows`` under an optional header line."""
    with open(path, "w") as f:
        if header is not None:
            f.write(header + "\n")
        f.writelines("\t".join(map(str, row)) + "\n" for row in rows)


def prepared_synth(root: Path, users: int, items: int, interactions: int,
                   **options: Any) -> str:
    """`advrec synth`'s plain log (no side features) of this size under ``root/log``, prepared
    with the defaults (or `prepare`'s ``options``) into ``root/data``; returns the dataset's
    path."""
    from advrec.data import prepare

    synth(users, items, interactions, str(root / "log"))
    prepare(str(root / "log"), "parquet", str(root / "data"), **options)
    return str(root / "data")
