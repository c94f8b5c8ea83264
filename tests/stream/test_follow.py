"""`advrec stream --follow`: the partitions that land under a prefix (a real S3 endpoint, and a
local directory) are taken as they appear, each a window, evaluated before it is trained on."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from advrec import io
from advrec.config import load_config
from advrec.data.synth import synth_days
from advrec.errors import AdvrecError
from advrec.stream.follow import new_windows
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
