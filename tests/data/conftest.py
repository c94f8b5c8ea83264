"""Fixtures for the data tests: small logs written into tmp_path.

The real ml-100k comes from the ``ml100k`` fixture of ``tests/conftest.py``
(``/work/shared/data/ml-100k``: u.data and the RecBole atomic files under recbole/).
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
