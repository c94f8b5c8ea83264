"""`advrec stream --follow`: the partitions that land under a prefix (a real S3 endpoint, and a
local directory) are taken as they appear, each a window, evaluated before it is trained on."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advrec import io
from advrec.config import load_config
from advrec.data.synth import synth_days
from advrec.errors import AdvrecError
from advrec.stream.follow import new_windows, window_log
from advrec.stream.runner import run_stream

MF = ["model.name=mf", "model.dim=8", "train.epochs=2", "train.batch_size=64", "train.lr=0.05",
      "eval.ks=[10]"]
DAYS = ("dt=2020-01-01", "dt=2020-01-02", "dt=2020-01-03")


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("follow") / "log"
    synth_days(40, 60, 900, str(out), days=3, seed=0)
    return out


def _upload(days: Path, day: str, prefix: str) -> None:
    """Put one day's partition under ``prefix``, the way a writer to S3 does: whole objects."""
    fs, path = io.filesystem(prefix)
    for file in sorted((days / day).iterdir()):
        fs.put_file(str(file), f"{path}/{day}/{file.name}")


def test_a_partition_that_lands_on_s3_while_the_stream_runs_is_trained_on(
        s3_store: str, days: Path, tmp_path: Path) -> None:
    prefix = f"s3://advrec/follow-{uuid.uuid4().hex[:8]}"
    _upload(days, DAYS[0], prefix)
    out = tmp_path / "s"
    cfg = load_config(None, [f"data.source={prefix}", *MF])
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(run_stream, cfg, str(out), None, follow=True, poll=0.5, idle=20,
                             progress=False)
        history = out / "stream_history.json"
        deadline = time.monotonic() + 120
        while not (history.exists() and json.loads(history.read_text())) and not stream.done():
            assert time.monotonic() < deadline, "the first partition was never trained on"
            time.sleep(0.2)
        _upload(days, DAYS[1], prefix)  # lands while the stream runs
        records = stream.result(timeout=300)  # its error, if any, raised here
    assert [r["window"] for r in records] == ["2020-01-01", "2020-01-02"]
    second = records[1]
    assert second["files"] == [f"{prefix.removeprefix('s3://')}/{DAYS[1]}/part-00000.parquet"]
    assert "ndcg@10" in second["prequential"] and second["train_s"] > 0
    # from the listing that found it to its publication: at least its evaluation and training
    assert second["latency_s"] >= second["eval_s"] + second["train_s"]
    assert (out / "latest").resolve() == (out / "windows" / "2020-01-02").resolve()
    assert (out / "windows" / "2020-01-02" / "metrics.json").is_file()


def test_a_prefix_that_does_not_exist_is_one_line(s3_store: str, tmp_path: Path) -> None:
    missing = f"s3://advrec/nothing-{uuid.uuid4().hex[:8]}"
    cfg = load_config(None, [f"data.source={missing}", "data.format=parquet", *MF])
    with pytest.raises(AdvrecError, match=f"{missing}: file not found"):
        run_stream(cfg, str(tmp_path / "s"), None, follow=True, poll=0.5, idle=1,
                   progress=False)
    assert not (tmp_path / "s").exists()


def test_new_files_of_a_partition_already_taken_make_a_window_of_their_own(
        days: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    shutil.copytree(days / DAYS[0], prefix / DAYS[0])
    names: set[str] = set()
    first = new_windows(str(prefix), [], names)
    assert [(n, [Path(f).name for f in files]) for n, files in first] == [
        ("2020-01-01", ["part-00000.parquet"])]
    shutil.copy(days / DAYS[1] / "part-00000.parquet", prefix / DAYS[0] / "part-00001.parquet")
    (prefix / DAYS[0] / ".part-00002.parquet").write_bytes(b"being written")  # hidden: not yet
    later = new_windows(str(prefix), [first[0][1]], names)
    assert [(n, [Path(f).name for f in files]) for n, files in later] == [
        ("2020-01-01+1", ["part-00001.parquet"])]


def test_follow_and_window_exclude_each_other(days: Path, tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.source={days}", *MF])
    for window, follow in (("1d", True), (None, False)):
        with pytest.raises(AdvrecError, match="give --window to replay a log, or --follow"):
            run_stream(cfg, str(tmp_path / "s"), window, follow=follow, progress=False)


def test_partitions_named_dot_or_dot_dot_name_windows_of_their_own(days: Path,
                                                                    tmp_path: Path) -> None:
    """``dt=..`` must not name a window ``..``: its dataset, ``DIR/data/..``, would be the
    stream's own directory."""
    prefix = tmp_path / "prefix"
    for value, day in zip((".", "..", "ok"), DAYS):  # taken in the order of their names
        shutil.copytree(days / day, prefix / f"dt={value}")
    found = new_windows(str(prefix), [], set())
    assert [name for name, _ in found] == ["_", "__", "ok"]
    history = run_stream(load_config(None, [f"data.source={prefix}", *MF]), str(tmp_path / "s"),
                         None, follow=True, poll=0.1, idle=0.1, progress=False)
    assert [r["window"] for r in history] == ["_", "__", "ok"]
    assert sorted(p.name for p in (tmp_path / "s" / "data").iterdir()) == ["_", "__", "ok"]


def test_partitions_whose_names_sanitise_alike_stay_apart(days: Path, tmp_path: Path) -> None:
    """``dt=.`` and ``dt=_`` both name a window ``_``: each keeps its own window (a suffix),
    never one window of both partitions' rows."""
    prefix = tmp_path / "prefix"
    for value, day in zip((".", "_", "a b"), DAYS):
        shutil.copytree(days / day, prefix / f"dt={value}")
    found = new_windows(str(prefix), [], set())
    assert [(name, [Path(f).parent.name for f in files]) for name, files in found] == [
        ("_", ["dt=."]), ("_+1", ["dt=_"]), ("a_b", ["dt=a b"])]


def test_a_single_file_is_a_window_named_by_the_file(days: Path, tmp_path: Path) -> None:
    file = tmp_path / "events-2020-01-01.parquet"
    shutil.copy(days / DAYS[0] / "part-00000.parquet", file)
    assert new_windows(str(file), [], set()) == [("events-2020-01-01", [str(file)])]


def _part(path: Path, users: list[str], items: list[str], times: list[int] | None) -> None:
    """A hand-made part file (no timestamp column when ``times`` is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"user_id": pa.array(users, pa.string()), "item_id": pa.array(items, pa.string())}
    if times is not None:
        columns["timestamp"] = pa.array(times, pa.int64())
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("timed", [True, False])
def test_a_pair_repeated_in_a_later_partition_stays_where_it_first_landed(
        tmp_path: Path, timed: bool) -> None:
    """(u1, i1) lands in dt=1, which is trained on, then again in dt=2 with an earlier time (or,
    without times, at a row position that restarts at 0): it stays dt=1's row, so dt=2's model
    is never evaluated on a pair it was trained on, and dt=2 holds only its new pair."""
    _part(tmp_path / "p/dt=1/a.parquet", ["u1", "u2", "u1"], ["i9", "i1", "i1"],
          [100, 101, 102] if timed else None)
    _part(tmp_path / "p/dt=2/a.parquet", ["u1", "u2"], ["i1", "i2"], [50, 60] if timed else None)
    taken = [files for _, files in new_windows(str(tmp_path / "p"), [], set())]
    log, second = window_log(str(tmp_path / "p"), taken, "2", None)
    names = {side: log.kept.names[side].to_pylist() for side in ("user", "item")}
    pairs = [(names["user"][u], names["item"][i])
             for u, i in zip(log.kept.codes["user"], log.kept.codes["item"])]
    assert pairs[:second.start] == [("u1", "i9"), ("u2", "i1"), ("u1", "i1")]
    assert pairs[second.start:second.stop] == [("u2", "i2")]


def test_an_empty_first_partition_is_skipped(days: Path, tmp_path: Path) -> None:
    """A partition of zero rows (Spark writes one for an empty DataFrame) is a skipped window,
    the first one too; the next is trained from scratch."""
    prefix = tmp_path / "prefix"
    _part(prefix / "dt=2019-12-31/part-0.parquet", [], [], [])
    shutil.copytree(days / DAYS[0], prefix / DAYS[0])
    history = run_stream(load_config(None, [f"data.source={prefix}", *MF]), str(tmp_path / "s"),
                         None, follow=True, poll=0.1, idle=0.1, progress=False)
    assert [(r["window"], r.get("skipped", False)) for r in history] == [
        ("2019-12-31", True), ("2020-01-01", False)]
    assert "train_s" in history[1]


def test_files_under_hidden_or_underscore_directories_are_not_taken(days: Path,
                                                                     tmp_path: Path) -> None:
    """Spark stages a job's files under ``_temporary/`` or ``.spark-staging-*/`` and moves or
    removes them at commit: a follower that took them would read them twice, or fail for good
    once they are gone."""
    prefix = tmp_path / "prefix"
    shutil.copytree(days / DAYS[0], prefix / DAYS[0])
    for staging in ("_temporary/0/task_0", f"{DAYS[1]}/.spark-staging-1"):
        shutil.copytree(days / DAYS[1], prefix / staging)
    assert [name for name, _ in new_windows(str(prefix), [], set())] == ["2020-01-01"]


def test_min_rating_over_partitions_some_without_ratings_is_one_line(tmp_path: Path) -> None:
    _part(tmp_path / "p/dt=1/a.parquet", ["u1"], ["i1"], [1])
    table = pq.read_table(tmp_path / "p/dt=1/a.parquet").append_column("rating", pa.array([5.0]))
    pq.write_table(table, tmp_path / "p/dt=1/a.parquet")
    _part(tmp_path / "p/dt=2/a.parquet", ["u2"], ["i2"], [2])
    taken = [files for _, files in new_windows(str(tmp_path / "p"), [], set())]
    with pytest.raises(AdvrecError, match=r"data.min_rating needs every interaction's rating, "
                                          r"but 1 have none"):
        window_log(str(tmp_path / "p"), taken, "2", 4.0)


def test_an_overlong_partition_name_is_shortened_and_kept_apart(days: Path,
                                                                tmp_path: Path) -> None:
    """A legal directory name of 255 bytes (``dt=`` and 252 characters) names a window that an
    atomic write's suffix would push past the limit: it is shortened, with a digest that keeps
    two such partitions apart, and the stream trains on it."""
    prefix = tmp_path / "prefix"
    for tail, day in zip("ab", DAYS):
        shutil.copytree(days / day, prefix / f"dt={'7' * 251}{tail}")
    found = [name for name, _ in new_windows(str(prefix), [], set())]
    assert all(len(name) == 128 and name.startswith("7" * 100) for name in found)
    assert len(set(found)) == 2
    history = run_stream(load_config(None, [f"data.source={prefix}", *MF]), str(tmp_path / "s"),
                         None, follow=True, poll=0.1, idle=0.1, progress=False)
    assert [r["window"] for r in history] == found and "train_s" in history[-1]
