"""Fixtures for the data tests: small logs written into tmp_path.

Session-wide logs come from ``tests/conftest.py``: ``small_log`` (synthetic, with side features
and star ratings), written as ``udata_small`` (a MovieLens u.data) and ``atomic_small`` (RecBole
atomic files); and ``ml100k``, the real download beside the repository
(``../shared/data/ml-100k``: u.data and the RecBole atomic files under recbole/), only for the
tests of reading its files, which skip without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], str]:
    """Write ``text`` to ``tmp_path/name`` (parents created) and return the path as a string."""

    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return _write
