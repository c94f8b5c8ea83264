"""Helpers of the serving tests (tests/serve): a short run, and the lists a recommendation file
holds."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from advrec.cli import main


def train_run(log: Path, out: Path, *overrides: str) -> Path:
    """A 2-epoch run (dim 8) on ``log`` at ``out``."""
    assert main(["train", "--output", str(out), "--quiet", f"data.source={log}", "model.dim=8",
                 "train.epochs=2", *overrides]) == 0
    return out


def read_lists(path: Path) -> dict[str, list[str]]:
    """Each user's items in the recommendation file ``path``, checking the ranks run 1, 2, ..."""
    out: dict[str, list[str]] = {}
    for row in pq.read_table(path).to_pylist():
        out.setdefault(row["user"], []).append(row["item"])
        assert row["rank"] == len(out[row["user"]])
    return out
