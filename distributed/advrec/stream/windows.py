"""Cutting a time-ordered log into the windows `advrec stream` trains on, one after another.

A window is a time span (``--window 1d``, ``7d``, ``12h``: consecutive spans from the first
interaction's UTC midnight, so day windows are calendar days) or a number of rows
(``--window 5000``). A span without interactions is no window: it is skipped and named, so the
caller can warn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from advrec.errors import AdvrecError

_UNITS = {"d": 86_400, "h": 3_600}
DAY = _UNITS["d"]
MAX_SECONDS = 100 * 366 * DAY
"""The longest window: a century."""
MAX_WINDOWS = 1_000_000
"""The most windows of time a log may span (its times in milliseconds would make millions)."""
FIRST_TIME, LAST_TIME = -62_135_596_800, 253_402_300_799
"""The first second of the year 1 and the last of 9999: no window can be named by a time
outside them."""
ROW_WIDTH = 12
"""The digits of a row window's first row in its name: fixed, so a longer log names its
windows as a shorter one did."""


@dataclass(frozen=True)
class WindowSpec:
    """``--window``: a span of ``seconds``, or a number of ``rows``, as the user wrote it."""

    text: str
    seconds: int | None = None
    rows: int | None = None


def parse_window(text: str) -> WindowSpec:
    """``Nd`` (days), ``Nh`` (hours) or ``N`` (rows), N a positive integer."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([dh]?)\s*", text)
    if not match or int(match[1]) < 1:
        raise AdvrecError(f"--window: '{text}' is not a window; give days (7d), hours (12h) or "
                          "a number of rows (5000), each at least 1")
    n, unit = int(match[1]), match[2]
    canonical = f"{n}{unit}"  # '1 d' and '01d' are the window '1d'
    if unit and n * _UNITS[unit] > MAX_SECONDS:
        raise AdvrecError(f"--window: '{text}' is longer than a century")
    if not unit and n >= 10**ROW_WIDTH:
        raise AdvrecError(f"--window: '{text}' rows is more than a log can hold")
    return WindowSpec(canonical, seconds=n * _UNITS[unit]) if unit else WindowSpec(
        canonical, rows=n)


@dataclass(frozen=True)
class Window:
    """One window: rows ``[start, stop)`` of the time-ordered log, the span of time it covers
    (``begins`` inclusive, ``ends`` exclusive, Unix seconds), and its name (its first day or
    hour, UTC, for a span; its first row for a count), which sorts as the windows do."""

    name: str
    start: int
    stop: int
    begins: int
    ends: int


def cut(timestamp: np.ndarray, spec: WindowSpec) -> tuple[list[Window], list[str]]:
    """The windows of a log whose rows have the ascending Unix times ``timestamp`` (N,), and
    the names of the spans left empty (time windows only)."""
    n = timestamp.size
    if spec.rows is not None:
        return [Window(f"rows-{s:0{ROW_WIDTH}d}", s, min(s + spec.rows, n), int(timestamp[s]),
                       int(timestamp[min(s + spec.rows, n) - 1]) + 1)
                for s in range(0, n, spec.rows)], []
    assert spec.seconds is not None
    first, last = int(timestamp[0]), int(timestamp[-1])
    if first < FIRST_TIME or last > LAST_TIME:
        bad = first if first < FIRST_TIME else last
        raise AdvrecError(f"timestamp {bad} is {'before 1' if bad < 0 else 'after 9999'}: "
                          "time windows need Unix seconds (are these milliseconds?), or give "
                          "--window N (rows)")
    if (last - first) // spec.seconds >= MAX_WINDOWS:
        raise AdvrecError(f"the log's times span {(last - first) / DAY:.0f} days: over "
                          f"{MAX_WINDOWS} windows of {spec.text} (are its timestamps in "
                          "milliseconds?); give a longer --window")
    origin = first // DAY * DAY
    span = (timestamp.astype(np.int64) - origin) // spec.seconds  # (N,) each row's span
    bounds = np.searchsorted(span, np.arange(int(span[-1]) + 2))  # first row of each span
    windows, empty = [], []
    for k in range(int(span[-1]) + 1):
        begins = origin + k * spec.seconds
        name = _name(begins, spec.seconds)
        if bounds[k] == bounds[k + 1]:
            empty.append(name)
        else:
            windows.append(Window(name, int(bounds[k]), int(bounds[k + 1]), begins,
                                  begins + spec.seconds))
    return windows, empty


def _name(begins: int, seconds: int) -> str:
    """A span's name: its first day (``2020-01-01``), or hour (``2020-01-01T06``) when spans
    are not whole days."""
    moment = datetime.fromtimestamp(begins, timezone.utc)
    return moment.strftime("%Y-%m-%d" if seconds % DAY == 0 else "%Y-%m-%dT%H")
