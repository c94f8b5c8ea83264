"""A tiny synthetic log that every serving test trains its runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from advrec.cli import main


@pytest.fixture(scope="session")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 users, 60 items, 600 interactions (the most active users have seen every item)."""
    root = tmp_path_factory.mktemp("serve")
    assert main(["synth", "--users", "40", "--items", "60", "--interactions", "600",
                 "--output", str(root / "log")]) == 0
    return root / "log"
