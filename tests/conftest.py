"""Shared fixtures: the real ml-100k data (read-only, beside the repo) and tiny subsets of it."""

from __future__ import annotations

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
