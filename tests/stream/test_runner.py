"""`advrec stream` on a replayed log of a few days: every window's model is evaluated on the
next window before training on it, `latest` always names a whole model, a stopped stream
resumes at its first unfinished window, and the update modes train what they say."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from advrec import io
from advrec.cli import main
from advrec.config import RunConfig, load_config
from advrec.data import load_dataset
from advrec.data.dataset import EMPTY
from advrec.data.synth import synth_days
from advrec.errors import AdvrecError
from advrec.metrics.evaluate import evaluate
from advrec.stream import runner
from advrec.stream.log import StreamLog
from advrec.stream.runner import prequential, run_stream
from advrec.stream.windows import DAY, Window, cut, parse_window
from advrec.train import read_run
from advrec.train.checkpoint import load_model, model_url
from advrec.train.warm import warm_model
from errors import error_line

T0 = 1_577_836_800  # 2020-01-01 00:00 UTC
MF = ["model.name=mf", "model.dim=8", "train.epochs=2", "train.batch_size=64", "train.lr=0.05",
      "eval.ks=[10]"]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A log of 3 days (one dt=DATE/ partition each), with users and items arriving."""
    out = tmp_path_factory.mktemp("days") / "log"
    synth_days(40, 60, 900, str(out), days=3, seed=0)
    return str(out)


def _cfg(log: str, *more: str) -> RunConfig:
    return load_config(None, [f"data.source={log}", *MF, *more])


@pytest.fixture(scope="module")
def stream(log: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """An incremental stream of the log by day, each window's training checking that `latest`
    names a finished run whenever it exists."""
    out = tmp_path_factory.mktemp("stream") / "s"
    seen: list[str | None] = []
    train = runner.run_training

    def checked(cfg: RunConfig, output: str, **kwargs: Any) -> dict[str, Any]:
        latest = out / "latest"
        seen.append(os.readlink(latest) if latest.is_symlink() else None)
        assert not latest.is_symlink() or (latest / "metrics.json").is_file()
        return train(cfg, output, **kwargs)

    runner.run_training = checked
    try:
        history = run_stream(_cfg(log), str(out), "1d", progress=False)
    finally:
        runner.run_training = train
    assert seen == [None, "windows/2020-01-01", "windows/2020-01-02"]
    return out, history


def test_each_window_is_evaluated_by_the_model_before_it(stream: tuple[Path, list[dict]],
                                                         log: str) -> None:
    out, history = stream
    assert [r["window"] for r in history] == ["2020-01-01", "2020-01-02", "2020-01-03"]
    assert "prequential" not in history[0]  # nothing to evaluate the first window with
    cfg = _cfg(log)
    slog = StreamLog.read(log, "parquet")
    windows, _ = cut(slog.timestamp, parse_window("1d"))
    for w, record in zip(windows[1:], history[1:]):
        assert record["evaluated_rows"] > 0 and record["cold_rows"] > 0  # new users arrive
        assert record["evaluated_rows"] + record["cold_rows"] == record["rows"]
        data = str(out / "data" / w.name)
        previous = history[history.index(record) - 1]["window"]
        before = prequential(cfg, slog, w, data, str(out / "windows" / previous))
        # the model published before the window, not the one trained on it, made the numbers
        assert record["prequential"] == pytest.approx(before[0])
        assert json.loads((out / "windows" / w.name / "run.json").read_text())["init_from"][
            "run"] == str(out / "windows" / previous)
        after, _ = prequential(cfg, slog, w, data, str(out / "windows" / w.name))
        assert after["ndcg@10"] != pytest.approx(record["prequential"]["ndcg@10"])


def test_the_evaluation_masks_what_was_known_and_scores_only_known_ids(
        stream: tuple[Path, list[dict]], log: str) -> None:
    out, history = stream
    slog = StreamLog.read(log, "parquet")
    w = cut(slog.timestamp, parse_window("1d"))[0][2]
    data = load_dataset(str(out / "data" / w.name))
    view, counts = slog.prequential(w, data)
    assert len(view.train) == w.start and len(view.known) == len(view.valid) == 0
    # every evaluated user and item was seen before the window
    assert set(view.test.user.tolist()) <= set(view.train.user.tolist())
    assert set(view.test.item.tolist()) <= set(view.train.item.tolist())
    assert counts["evaluated_users"] == view.test.user.unique().numel()
    cfg = _cfg(log)
    model = warm_model(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"init_from": str(out / "windows" / history[1]["window"])})}), data)
    # asked to find the items each user was known to have, it finds none: they are masked,
    # as earlier windows' rows (the view's train split) and as a dataset's known split alike
    earlier = view.train
    for masked in (dataclasses.replace(view, test=earlier),
                   dataclasses.replace(view, test=earlier, train=EMPTY, known=earlier)):
        assert evaluate(model, masked, "test", cfg.eval)["hit@10"] == 0
    unmasked = dataclasses.replace(view, test=earlier, train=EMPTY)
    assert evaluate(model, unmasked, "test", cfg.eval)["hit@10"] > 0


def read_run_config(run: Path) -> tuple[RunConfig, Any]:
    cfg, dataset = read_run(str(run))
    return cfg, load_dataset(dataset, train_pairs_only=True)


def test_latest_names_the_last_window_and_the_history_is_whole(
        stream: tuple[Path, list[dict]]) -> None:
    out, history = stream
    assert os.readlink(out / "latest") == "windows/2020-01-03"
    assert json.loads((out / "latest.json").read_text())["window"] == "2020-01-03"
    assert json.loads((out / "stream_history.json").read_text()) == json.loads(
        json.dumps(history))
    assert (out / "stream_history.png").stat().st_size > 0
    # the tables grow with the arrivals, and a window's dataset trains on its own rows only
    assert [r["users"] for r in history] == sorted(r["users"] for r in history)
    assert all(r["train_rows"] == r["rows"] for r in history)
    assert all(r["new_users"] > 0 for r in history)


def test_a_stream_stopped_in_window_2_resumes_there(stream: tuple[Path, list[dict]], log: str,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s"
    train = runner.run_training

    def crash_on_the_third(cfg: RunConfig, output: str, **kwargs: Any) -> dict[str, Any]:
        if output.endswith("2020-01-03"):
            raise KeyboardInterrupt  # the stream is stopped while it trains window 2
        return train(cfg, output, **kwargs)

    monkeypatch.setattr(runner, "run_training", crash_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_stream(_cfg(log), str(out), "1d", progress=False)
    assert [r["window"] for r in json.loads((out / "stream_history.json").read_text())] == [
        "2020-01-01", "2020-01-02"]
    assert os.readlink(out / "latest") == "windows/2020-01-02"
    finished = {w: (out / "windows" / w / "metrics.json").stat().st_mtime_ns
                for w in ("2020-01-01", "2020-01-02")}
    monkeypatch.setattr(runner, "run_training", train)
    history = run_stream(_cfg(log), str(out), "1d", progress=False)
    # the finished windows were not trained again, and it ends as the uninterrupted stream
    assert {w: (out / "windows" / w / "metrics.json").stat().st_mtime_ns
            for w in finished} == finished
    expected = stream[1]
    assert [r["prequential"] for r in history[1:]] == [r["prequential"] for r in expected[1:]]
    a = load_model(model_url(str(out / "latest")), *read_run_config(out / "latest"))[0]
    b = load_model(model_url(str(stream[0] / "latest")),
                   *read_run_config(stream[0] / "latest"))[0]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values()))


def test_retrain_frozen_replay_and_keep(log: str, tmp_path: Path) -> None:
    retrain = run_stream(_cfg(log), str(tmp_path / "r"), "1d", "retrain", progress=False)
    assert [r["train_rows"] for r in retrain] == list(
        __import__("itertools").accumulate(r["rows"] for r in retrain))
    assert all("init_from" not in json.loads(
        (tmp_path / "r" / "windows" / r["window"] / "run.json").read_text()) for r in retrain)
    frozen = run_stream(_cfg(log), str(tmp_path / "f"), "1d", "frozen", progress=False)
    assert [r["model"] for r in frozen] == ["2020-01-01"] * 3
    assert [("train_s" in r) for r in frozen] == [True, False, False]
    assert sorted(os.listdir(tmp_path / "f" / "windows")) == ["2020-01-01"]
    replay = run_stream(_cfg(log), str(tmp_path / "p"), "1d", replay=50, keep=1, progress=False)
    assert [r["train_rows"] - r["rows"] for r in replay] == [0, 50, 50]
    # keep 1: only the published window's model and dataset are left
    assert os.listdir(tmp_path / "p" / "windows") == ["2020-01-03"]
    assert os.listdir(tmp_path / "p" / "data") == ["2020-01-03"]


def test_an_empty_day_is_skipped_with_a_warning(log: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # the log without its middle day
    gap = tmp_path / "gap"
    for day in ("dt=2020-01-01", "dt=2020-01-03"):
        shutil.copytree(Path(log) / day, gap / day)
    code = main(["stream", "--output", str(tmp_path / "s"), "--window", "1d", "--quiet",
                 f"data.source={gap}", *MF])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 span of" in captured.err and "without interactions, skipped: 2020-01-02" in \
        captured.err
    assert "stream written to" in captured.out
    assert sorted(os.listdir(tmp_path / "s" / "windows")) == ["2020-01-01", "2020-01-03"]


@pytest.mark.parametrize("argv, culprit", [
    (["--window", "1w"], "--window: '1w' is not a window"),
    (["--window", "1d", "--update", "sometimes"], "--update: 'sometimes' is not one of"),
    (["--window", "1d", "--update", "retrain", "--replay", "5"], "--replay: only an incremental"),
    (["--window", "1d", "model.name=deepfm"], "model.name=deepfm: a stream trains ranking"),
    (["--window", "1d", "data.source=/nonexistent/log"], "/nonexistent/log: file not found"),
    (["--window", "1d", "model.nope=1"], "model.nope"),
])
def test_bad_input_is_one_line(log: str, tmp_path: Path, argv: list[str], culprit: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    code = main(["stream", "--output", str(out), "--quiet", f"data.source={log}", *MF, *argv])
    line = error_line(capsys.readouterr().err)
    assert code == 2 and line and culprit in line, line
    assert not out.exists()


def test_a_stream_of_other_settings_is_not_continued(stream: tuple[Path, list[dict]],
                                                     log: str) -> None:
    out = stream[0]
    before = (out / "stream_history.json").read_bytes()
    with pytest.raises(AdvrecError, match="holds a stream with window '1d', not '7d'"):
        run_stream(_cfg(log), str(out), "7d", progress=False)
    with pytest.raises(AdvrecError, match="holds a stream of another config"):
        run_stream(_cfg(log, "train.lr=0.5"), str(out), "1d", progress=False)
    assert (out / "stream_history.json").read_bytes() == before


def test_a_stream_that_finished_no_window_is_replaced(log: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose first window failed leaves its directory behind; a stream of other
    settings may replace it (it has nothing to continue), removing only what advrec wrote."""
    out = tmp_path / "s"

    def fails(*args: Any, **kwargs: Any) -> None:
        raise AdvrecError("the first window failed")

    monkeypatch.setattr(runner, "run_training", fails)
    with pytest.raises(AdvrecError, match="the first window failed"):
        run_stream(_cfg(log), str(out), "400", progress=False)
    assert (out / "stream.json").is_file() and (out / "data" / "rows-000000000000").is_dir()
    assert not (out / "stream_history.json").exists()
    (out / "data" / "notes.txt").write_text("mine")
    monkeypatch.undo()
    history = run_stream(_cfg(log, "train.lr=0.5"), str(out), "1d", progress=False)
    assert len(history) == 3 and history[-1]["model"] == history[-1]["window"]
    assert load_config(str(out / "config.yaml")).train.lr == 0.5
    assert json.loads((out / "stream.json").read_text())["window"] == "1d"
    # the failed stream's window dataset (named for its first row) is gone
    assert sorted(os.listdir(out / "data")) == sorted([*(r["window"] for r in history),
                                                       "notes.txt"])
    assert (out / "data" / "notes.txt").read_text() == "mine"


def test_a_stream_that_stops_before_writing_leaves_no_directory(
        log: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped between taking its lock and writing its marker, a stream leaves no directory
    holding only ``.lock``, which a rerun would refuse as someone else's."""
    def interrupted(output: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_check_latest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stream(_cfg(log), str(tmp_path / "s"), "1d", progress=False)
    assert not (tmp_path / "s").exists()


def test_a_foreign_directory_is_never_written(log: str, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(AdvrecError, match="exists and is not an advrec stream"):
        run_stream(_cfg(log), str(out), "1d", progress=False)
    assert os.listdir(out) == ["notes.txt"]
    assert io.exists(str(out / "notes.txt"))


def test_the_prequential_evaluation_under_attack(log: str, tmp_path: Path) -> None:
    cfg = _cfg(log, "eval.robust_every=1", "eval.robust_attack=fgm", "eval.robust_eps=1.0")
    history = run_stream(cfg, str(tmp_path / "s"), "1d", progress=False)
    for record in history[1:]:
        metrics = record["prequential"]
        # the attack moves the tables the window is ranked with: the ranking gets worse
        assert metrics["robust/ndcg@10"] < metrics["ndcg@10"]
        assert {f"robust/{k}" for k in metrics if "/" not in k} <= set(metrics)


def test_expiry_frees_the_rows_of_ids_unseen_for_n_windows(log: str, tmp_path: Path) -> None:
    out = tmp_path / "s"
    history = run_stream(_cfg(log), str(out), "1d", expire=1, progress=False)
    slog = StreamLog.read(log, "parquet")
    windows, _ = cut(slog.timestamp, parse_window("1d"))
    users = [set(_raw(slog, "user", w)) for w in windows]
    items = [set(_raw(slog, "item", w)) for w in windows]
    for k, (w, record) in enumerate(zip(windows, history)):
        data = load_dataset(str(out / "data" / w.name))
        vocab = set(pq.read_table(out / "data" / w.name / "users.parquet")["raw_id"].to_pylist())
        # the tables hold this window's ids only; the rest are counted as expired
        assert vocab == users[k] and record["users"] == data.num_users == len(users[k])
        assert record["expired_users"] == len(set().union(*users[:k + 1])) - len(users[k])
        if k:
            # a user the last window's tables did not hold (new, or back after a gap) starts
            # fresh; the prequential evaluation ranks only users that model held
            matched = json.loads((out / "windows" / w.name / "run.json").read_text())
            assert matched["init_from"]["user"] == {"known": len(users[k] & users[k - 1]),
                                                    "new": len(users[k] - users[k - 1])}
            assert record["evaluated_rows"] == sum(
                u in users[k - 1] and i in items[k - 1] for u, i in zip(
                    *(_raw(slog, side, windows[k]) for side in ("user", "item"))))
    assert history[2]["expired_users"] > 0
    with pytest.raises(AdvrecError, match="--expire-after: only an incremental stream"):
        run_stream(_cfg(log), str(tmp_path / "r"), "1d", "retrain", expire=1, progress=False)


def _raw(slog: StreamLog, side: str, w: Window) -> list[str]:
    """The raw ids of ``side`` of window ``w``'s rows."""
    return slog.kept.names[side].take(slog.kept.codes[side][w.start:w.stop]).to_pylist()


def test_a_resumed_window_republishes_before_removing_its_stopped_attempt(
        stream: tuple[Path, list[dict]], log: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s"
    shutil.copytree(stream[0], out, symlinks=True)
    history = json.loads((out / "stream_history.json").read_text())
    # stopped after publishing window 2, before its history was written
    (out / "stream_history.json").write_text(json.dumps(history[:-1]))
    train = runner.run_training

    def checked(cfg: RunConfig, output: str, **kwargs: Any) -> dict[str, Any]:
        assert os.readlink(out / "latest") == "windows/2020-01-02"  # the history's, whole
        assert (out / "latest" / "metrics.json").is_file()
        return train(cfg, output, **kwargs)

    monkeypatch.setattr(runner, "run_training", checked)
    again = run_stream(_cfg(log), str(out), "1d", progress=False)
    assert again[2]["prequential"] == pytest.approx(stream[1][2]["prequential"])
    assert os.readlink(out / "latest") == "windows/2020-01-03"


def test_a_source_written_otherwise_continues_and_grown_windows_warn(
        log: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "log"
    shutil.copytree(log, copy)
    first = run_stream(_cfg(str(copy)), str(tmp_path / "s"), "1d", progress=False)
    monkeypatch.chdir(tmp_path)
    # the last day's partition grows: its window is not trained again, and the stream says so
    day = copy / "dt=2020-01-03" / "part-00000.parquet"
    table = pq.read_table(day)
    pq.write_table(pa.concat_tables([table, table.slice(0, 5).set_column(
        0, "user_id", pa.array([10**6 + k for k in range(5)]))]), day)
    capsys.readouterr()
    again = run_stream(_cfg("./log"), str(tmp_path / "s"), "1d", progress=False)
    assert again == first
    assert ("window 2020-01-03 now has" in capsys.readouterr().err)


def test_frozen_keep_prunes_every_window_dataset_but_the_published_ones(
        log: str, tmp_path: Path) -> None:
    run_stream(_cfg(log), str(tmp_path / "f"), "1d", "frozen", keep=1, progress=False)
    assert sorted(os.listdir(tmp_path / "f" / "data")) == ["2020-01-01", "2020-01-03"]
    assert os.listdir(tmp_path / "f" / "windows") == ["2020-01-01"]


def test_a_log_without_times_streams_by_rows_only(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id\n" + "".join(f"{u},{(u * 7 + k) % 30}\n"
                                                   for k in range(6) for u in range(20)))
    cfg = load_config(None, [f"data.source={csv}", "data.format=csv", *MF])
    with pytest.raises(AdvrecError, match="has no timestamp column, so no time windows"):
        run_stream(cfg, str(tmp_path / "t"), "1d", progress=False)
    history = run_stream(cfg, str(tmp_path / "r"), "40", progress=False)
    assert [r["window"] for r in history] == [f"rows-{s:012d}" for s in (0, 40, 80)]


def test_sasrec_skips_a_window_without_a_sequence(log: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "log.csv"
    # day 1: every user once (no next item to learn); day 2: sequences
    rows = [(u, u % 7, T0 + u) for u in range(12)] + [
        (u, (u + k) % 7 + 7, T0 + DAY + 10 * u + k) for u in range(12) for k in range(3)]
    csv.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    cfg = load_config(None, [f"data.source={csv}", "data.format=csv", "model.name=sasrec",
                             "model.dim=8", "model.max_len=5", "train.epochs=1", "eval.ks=[5]"])
    history = run_stream(cfg, str(tmp_path / "s"), "1d", progress=False)
    assert "window 2020-01-01: no user has two interactions" in capsys.readouterr().err
    assert history[0]["model"] is None and "train_s" not in history[0]
    assert history[1]["model"] == "2020-01-02" and "prequential" not in history[1]


def test_a_second_stream_into_the_same_directory_is_refused(
        stream: tuple[Path, list[dict]], log: str, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "s"
    shutil.copytree(stream[0], out, symlinks=True)
    (out / "stream_history.json").write_text("[]")  # its windows still to do
    with open(out / ".lock", "a") as held:  # another stream holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AdvrecError, match="another advrec stream is writing it"):
            run_stream(_cfg(log), str(out), "1d", progress=False)
    assert (out / "stream_history.json").read_text() == "[]"


def test_a_stream_on_2_workers_trains_every_window_on_one_worker_group(
        log: str, ray_local: None, tmp_path: Path) -> None:
    # the same two Ray Train worker processes train every window: the group is started once
    history = run_stream(_cfg(log, "scaling.num_workers=2"), str(tmp_path / "s"), "1d",
                         progress=False)
    assert [r["window"] for r in history] == ["2020-01-01", "2020-01-02", "2020-01-03"]
    pids = [r["worker_pids"] for r in history]
    assert len(set(pids[0])) == 2 and os.getpid() not in pids[0]
    assert pids == [pids[0]] * 3
    assert all("ndcg@10" in r["prequential"] for r in history[1:])
    assert os.readlink(tmp_path / "s" / "latest") == "windows/2020-01-03"
    for record in history:  # each window trained on both workers
        metrics = json.loads((tmp_path / "s" / "windows" / record["window"] /
                              "metrics.json").read_text())
        assert len(metrics["devices"]) == 2


def test_a_group_trains_run_after_run_idles_between_and_a_failure_is_one_line(
        log: str, ray_local: None, tmp_path: Path) -> None:
    from advrec.data import prepare
    from advrec.train.pool import WorkerGroup

    dataset = str(tmp_path / "data")
    prepare(log, "parquet", dataset, seed=0)
    cfg = _cfg(dataset, "data.format=prepared", "scaling.num_workers=2")

    def job(dataset: str, output: str) -> dict[str, Any]:
        return {"run": cfg.model_dump(mode="json", by_alias=True), "dataset": dataset,
                "output": str(tmp_path / output), "progress": False, "targets": None}

    # keep-alives every 0.2 s while the group waits: it sits idle through several, then trains
    # the next run on the same workers
    group = WorkerGroup(cfg.scaling, None, str(tmp_path / "ray_train"), idle_s=0.2)
    with group:
        first = group.run(job(dataset, "a"))
        pids = group.pids
        time.sleep(2)
        second = group.run(job(dataset, "b"))  # the same run again, the same result
        assert second["test"] == pytest.approx(first["test"])
        assert group.pids == pids and len(set(pids)) == 2
        # a worker's error ends the group (no restart) and reaches the caller as one line
        with pytest.raises(AdvrecError, match=f"{tmp_path}/missing: not a prepared dataset"):
            group.run(job(str(tmp_path / "missing"), "c"))


def test_clearing_a_stream_on_s3_never_touches_a_local_namesake(
        s3_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new stream clears what an unfinished one left in its own store: for s3://advrec/s
    that is never ./advrec/s on the local disk, whoever wrote it."""
    monkeypatch.chdir(tmp_path)
    namesake = tmp_path / "advrec" / "s"
    (namesake / "data" / "w").mkdir(parents=True)
    (namesake / "stream_history.json").write_text("[]")
    runner._clear("s3://advrec/s")
    assert (namesake / "stream_history.json").read_text() == "[]"
    assert (namesake / "data" / "w").is_dir()
