"""Cutting a log into windows: spans of days or hours from the first day's midnight, or counts
of rows; empty spans are skipped and named."""

from __future__ import annotations

import re

import numpy as np
import pytest

from advrec.errors import AdvrecError
from advrec.stream.windows import DAY, cut, parse_window

T0 = 1_577_836_800  # 2020-01-01 00:00 UTC


def test_day_windows_start_at_midnight_and_skip_an_empty_day() -> None:
    # rows on day 0 (from 10:00), day 1 and day 3: day 2 is empty
    ts = np.array([T0 + 36_000, T0 + 80_000, T0 + DAY + 5, T0 + 3 * DAY, T0 + 3 * DAY + 9])
    windows, empty = cut(ts, parse_window("1d"))
    assert [(w.name, w.start, w.stop) for w in windows] == [
        ("2020-01-01", 0, 2), ("2020-01-02", 2, 3), ("2020-01-04", 3, 5)]
    assert empty == ["2020-01-03"]
    assert windows[0].begins == T0 and windows[0].ends == T0 + DAY
    week, none = cut(ts, parse_window("7d"))
    assert [(w.start, w.stop) for w in week] == [(0, 5)] and none == []


def test_hour_windows_are_named_by_their_hour() -> None:
    ts = np.array([T0 + 3_600 * 5, T0 + 3_600 * 13])
    windows, empty = cut(ts, parse_window("12h"))
    assert [w.name for w in windows] == ["2020-01-01T00", "2020-01-01T12"] and not empty


def test_row_windows_cover_every_row_once() -> None:
    ts = np.arange(10) + T0
    windows, _ = cut(ts, parse_window("4"))
    assert [(w.start, w.stop) for w in windows] == [(0, 4), (4, 8), (8, 10)]
    # a fixed width: a log grown past a power of ten names its windows as before
    assert [w.name for w in windows] == [f"rows-{s:012d}" for s in (0, 4, 8)]
    assert cut(np.arange(12) + T0, parse_window("4"))[0][1].name == windows[1].name


@pytest.mark.parametrize("text", ["0", "0d", "-1", "1w", "1.5d", "", "d", "7 days"])
def test_a_bad_window_is_one_line_naming_it(text: str) -> None:
    with pytest.raises(AdvrecError, match=r"--window: '.*' is not a window"):
        parse_window(text)


def test_a_window_is_named_canonically_and_bounded() -> None:
    assert parse_window(" 1 d").text == parse_window("01d").text == "1d"
    with pytest.raises(AdvrecError, match="longer than a century"):
        parse_window("99999999999999999999d")


@pytest.mark.parametrize("ts, culprit", [
    (np.array([1_577_836_800_000, 1_577_836_900_000]), "after 9999: time windows need Unix"),
    (np.array([T0, 10**11]), "over 1000000 windows of 1d"),
])
def test_times_no_window_can_cover_are_one_line(ts: np.ndarray, culprit: str) -> None:
    with pytest.raises(AdvrecError, match=re.escape(culprit)):
        cut(ts, parse_window("1d"))
