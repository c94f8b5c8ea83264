"""Epoch histories compared across runs."""

from __future__ import annotations


def without_times(history: list[dict]) -> list[dict]:
    """A run's ``history.json`` records without their wall-clock times (the ``*_s`` keys), which
    differ between two runs that otherwise repeat each other."""
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in history]
