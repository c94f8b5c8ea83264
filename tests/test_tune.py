"""`advrec tune`: a Ray Tune search whose trials are `advrec train` runs on Ray Train workers."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from advrec.cli import main
from advrec.data import prepare
from errors import error_line

# MF-APR on a tiny log: valid metrics and PGD-3 robust ones (on 2000 training examples) at
# every epoch, so a trial of 3 epochs takes seconds
SEARCH = ["model.name=mf", "model.dim=16", "adv.method=fgm", "adv.eps=0.5", "adv.relative=true",
          "train.batch_size=256", "train.epochs=3", "eval.robust_every=1", "eval.robust_rows=2000",
          "eval.steps=3", "eval.robust_eps=0.5"]


@pytest.fixture(scope="module")
def prepared(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("tune") / "data"
    prepare(str(udata_small), "movielens", str(out), seed=0)
    return str(out)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_search_writes_its_table_front_plot_and_a_config_train_runs(
        prepared: str, tmp_path: Path, ray_local: None) -> None:
    # a grid over the learning rate: the first trial learns, the next two barely move; ASHA
    # (a rung after epoch 1, half kept) stops those once the first has set the bar
    out = tmp_path / "search"
    assert main(["tune", "--output", str(out), "--quiet", f"data.source={prepared}", *SEARCH,
                 "tune.space={train.lr: {grid: [0.05, 1.0e-7, 1.0e-7]}}",
                 "tune.num_samples=1", "tune.max_concurrent=1", "tune.grace_period=1",
                 "train.loggers=[tensorboard]"]) == 0
    rows = _rows(out / "results.csv")
    assert len(rows) == 3 and {r["trial"] for r in rows} == {p.name for p in (out / "trials").iterdir()}
    # every trial logged its epochs as a run of its own (train.loggers)
    assert all(list((t / "tensorboard").glob("events.out.tfevents.*"))
               for t in (out / "trials").iterdir())
    by_lr = sorted(rows, key=lambda r: -float(r["train.lr"]))
    assert by_lr[0]["status"] == "finished" and by_lr[0]["epochs"] == "3"
    assert any(r["status"] == "stopped" and int(r["epochs"]) < 3 for r in by_lr[1:])
    assert float(by_lr[0]["clean"]) > max(float(r["clean"]) for r in by_lr[1:])
    assert pq.read_table(out / "results.parquet").num_rows == 3

    # the front: trials no other beats on both clean and robust NDCG, among the table's
    front = _rows(out / "pareto.csv")
    assert front and {r["trial"] for r in front} <= {r["trial"] for r in rows}
    points = [(float(r["clean"]), float(r["robust"])) for r in rows]
    for r in front:
        c, b = float(r["clean"]), float(r["robust"])
        assert not any(x >= c and y >= b and (x, y) != (c, b) for x, y in points)
    assert (out / "pareto.png").stat().st_size > 0

    # best.yaml: the user's config (its source, no trial's scaling) with the best trial's values
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["train"]["lr"] == 0.05 and best["data"]["source"] == prepared
    assert best["scaling"]["num_workers"] == 0
    assert main(["train", "--config", str(out / "best.yaml"), "--output", str(tmp_path / "run"),
                 "--quiet", "train.epochs=1"]) == 0


@pytest.mark.parametrize("overrides, culprit", [
    (["tune.space={adv.epsilon: {loguniform: [0.1, 1.0]}}"],
     "tune.space: adv.epsilon=0.1: adv.epsilon: unknown config key"),
    (["tune.space={}"], "tune.space: is empty"),
    (["tune.space={adv.eps: {uniform: [1.0, 0.5]}}"], "tune.space.adv.eps"),
    (["tune.metric=valid/auc"], "tune.metric: 'valid/auc' is never reported"),
    (["eval.robust_every=0", "tune.metric=robust/ndcg@10"],
     "robust/ metrics need eval.robust_every > 0"),
    (["tune.metric=objective"], "tune.metric: 'objective' needs tune.weights"),
    (["tune.objectives=[valid/ndcg@10, robust/ndcg@10]"],
     "tune.objectives: a multi-objective search needs tune.search=optuna"),
    (["tune.search=optuna", "tune.objectives=[valid/ndcg@10, robust/auc]"],
     "tune.objectives: 'robust/auc' is never reported"),
    (["tune.search=optuna", "tune.objectives=[valid/ndcg@10]"], "name two metrics or more"),
    # a target metric is reported only with target items, which this clean dataset lacks
    (["tune.metric=target/hr@50", "tune.scheduler=none"],
     "tune.metric: 'target/hr@50' needs target items"),
])
def test_a_bad_search_fails_before_any_trial(prepared: str, tmp_path: Path, overrides: list[str],
                                             culprit: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "search"
    code = main(["tune", "--output", str(out), "--quiet", f"data.source={prepared}", *SEARCH,
                 *overrides])
    err = capsys.readouterr().err
    line = error_line(err)
    assert code == 2 and line and culprit in line, err
    assert not out.exists()


def test_an_interrupted_search_resumes_without_rerunning_finished_trials(
        prepared: str, tmp_path: Path, ray_local: None) -> None:
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "advrec.cli", "tune", "--output", str(out), "--quiet",
           f"data.source={prepared}", *SEARCH, "tune.scheduler=none", "tune.num_samples=1",
           "tune.max_concurrent=1",
           "tune.space={train.lr: {grid: [0.05, 0.01]}}", "train.epochs=6"]
    # the search in a process of its own, on this session's Ray instance (two instances on one
    # machine leave Ray Train's placement-group cleaner unable to find its cluster), killed once
    # the first trial ends
    import ray

    address = ray.get_runtime_context().gcs_address
    search = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "RAY_ADDRESS": address})
    deadline = time.monotonic() + 300
    finished: list[Path] = []
    while not finished and time.monotonic() < deadline and search.poll() is None:
        time.sleep(1)
        finished = list(out.glob("trials/*/metrics.json"))
    os.killpg(search.pid, signal.SIGKILL)
    search.wait()
    assert len(finished) == 1, "the first trial never finished"
    first = finished[0].stat().st_mtime_ns

    assert main(["tune", "--resume", str(out), "--quiet"]) == 0
    assert finished[0].stat().st_mtime_ns == first  # kept, not trained again
    rows = _rows(out / "results.csv")
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert all(r["epochs"] == "6" for r in rows)
    assert json.loads(finished[0].read_text())["best_epoch"] >= 0


def test_robust_metrics_of_training_equal_the_robustness_evaluation(prepared: str,
                                                                    tmp_path: Path) -> None:
    # robust/... as training reports it (here for the best epoch, in metrics.json) is the
    # robustness evaluation's figure at that attack and eps, on the valid split
    from advrec.report import evaluate_run

    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={prepared}",
                 *SEARCH, "eval.robust_rows=0", "train.lr=0.05"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    assert all("robust/ndcg@10" in r for r in history)  # eval.robust_every=1
    curve = evaluate_run(str(run), ["pgd"], [0.5], steps=3, split="valid", progress=False)
    assert metrics["robust_valid"] == pytest.approx(curve["pgd"]["0.5"], abs=1e-6)
    assert metrics["robust_valid"]["ndcg@10"] < metrics["valid"]["ndcg@10"]


@pytest.mark.parametrize("search", ["random", "optuna"])
def test_a_seeded_search_proposes_the_same_trials_again(
        search: str, prepared: str, tmp_path: Path, ray_local: None) -> None:
    def lrs(name: str) -> list[str]:
        out = tmp_path / name
        assert main(["tune", "--output", str(out), "--quiet", f"data.source={prepared}", *SEARCH,
                     "train.epochs=1", f"tune.search={search}", "tune.scheduler=none",
                     "tune.seed=3", "tune.num_samples=2", "tune.max_concurrent=2",
                     "tune.space={train.lr: {loguniform: [0.001, 0.1]}}"]) == 0
        rows = _rows(out / "results.csv")
        assert len(rows) == 2 and all(r["status"] == "finished" for r in rows)
        return sorted(r["train.lr"] for r in rows)

    first = lrs("first")
    assert all(0.001 <= float(lr) <= 0.1 for lr in first) and first[0] != first[1]
    assert lrs("again") == first


def test_optuna_searches_for_the_front_of_several_objectives(
        prepared: str, tmp_path: Path, ray_local: None) -> None:
    from ray.tune.search.optuna import OptunaSearch

    out = tmp_path / "search"
    assert main(["tune", "--output", str(out), "--quiet", f"data.source={prepared}", *SEARCH,
                 "train.epochs=1", "tune.search=optuna", "tune.num_samples=2",
                 "tune.max_concurrent=2", "tune.scheduler=none",
                 "tune.objectives=[valid/ndcg@10, robust/ndcg@10]"]) == 0
    rows = _rows(out / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "finished" for r in rows)
    # Optuna's own study (Tune saves the searcher): two directions, both values of each trial
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(out))
    study = searcher._ot_study
    assert len(study.directions) == 2 and all(d.name == "MAXIMIZE" for d in study.directions)
    by_clean = {round(float(r["clean"]), 6): float(r["robust"]) for r in rows}
    done = [t for t in study.trials if t.values is not None]
    assert len(done) == 2
    for trial in done:
        assert by_clean[round(trial.values[0], 6)] == pytest.approx(trial.values[1])


def test_a_search_writes_its_experiment_to_object_storage(
        prepared: str, s3_store: str, ray_local: None) -> None:
    import s3fs

    from conftest import S3_KEY, S3_SECRET

    out = "s3://advrec/tune-test/search"
    assert main(["tune", "--output", out, "--quiet", f"data.source={prepared}", *SEARCH,
                 "train.epochs=1", "tune.scheduler=none", "tune.num_samples=1",
                 "tune.space={train.lr: {grid: [0.05]}}"]) == 0
    store = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, endpoint_url=s3_store,
                              skip_instance_cache=True)
    rows = list(csv.DictReader(store.cat("advrec/tune-test/search/results.csv").decode()
                               .splitlines()))
    assert len(rows) == 1 and rows[0]["status"] == "finished"
    for name in ("results.parquet", "pareto.csv", "pareto.png", "best.yaml"):
        assert store.exists(f"advrec/tune-test/search/{name}"), name
    assert store.exists(f"advrec/tune-test/search/trials/{rows[0]['trial']}/metrics.json")


def test_tune_takes_output_or_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def error(args: list[str]) -> str:
        assert main(args) == 2
        return capsys.readouterr().err.strip()

    assert "--output is required (or --resume DIR to continue a search)" in error(["tune"])
    assert "give no --config, --output or overrides" in error(
        ["tune", "--resume", str(tmp_path), "--output", str(tmp_path / "x")])
    assert error(["tune", "--resume", str(tmp_path)]).endswith(
        "not an advrec tune experiment (no search.json)")


def test_schedules_are_searched_and_a_failed_trial_is_a_row_of_its_own(
        prepared: str, tmp_path: Path, ray_local: None) -> None:
    # adv.schedule and adv.replays searched together: replays > 1 is free's alone, so the
    # accumulate trial with 2 replays fails (its config is refused on its worker) and is a row
    # of its own beside the three that finish
    out = tmp_path / "search"
    space = "{adv.schedule: {grid: [free, accumulate]}, adv.replays: {grid: [1, 2]}}"
    assert main(["tune", "--output", str(out), "--quiet", f"data.source={prepared}", *SEARCH,
                 "train.epochs=1", "tune.scheduler=none", "tune.num_samples=1",
                 "adv.schedule=free", f"tune.space={space}"]) == 0
    rows = {(r["adv.schedule"], r["adv.replays"]): r for r in _rows(out / "results.csv")}
    assert {k: r["status"] for k, r in rows.items()} == {
        ("free", "1"): "finished", ("free", "2"): "finished", ("accumulate", "1"): "finished",
        ("accumulate", "2"): "error"}
    assert re.fullmatch(r"[0-9a-f]+_\d{5}", rows["accumulate", "2"]["trial"])  # Tune's trial id
    for key, row in rows.items():  # each finished trial trained what its row says
        if row["status"] == "finished":
            run = yaml.safe_load((out / "trials" / row["trial"] / "config.yaml").read_text())
            assert (run["adv"]["schedule"], str(run["adv"]["replays"])) == key
    best = yaml.safe_load((out / "best.yaml").read_text())["adv"]
    assert rows[best["schedule"], str(best["replays"])]["status"] == "finished"


def test_a_searched_list_is_a_cell_of_the_table_and_best_yaml_takes_it_back(
        tmp_path: Path) -> None:
    """A searched key whose values are lists (adv.mix: a list of adversaries) is written to
    results.csv and .parquet as its JSON (pyarrow writes no list column to CSV), and best.yaml
    holds the best trial's list itself; no Ray: the trials' results as Tune hands them over."""
    from types import SimpleNamespace

    from advrec.config import build_config, load_config
    from advrec.tune.results import write_results

    mixes = [[], [{"method": "fgm", "lambda": 0.5}, {"method": "pgd", "steps": 2}]]
    raw = {"data": {"source": "unused"}, "model": {"dim": 8}, "adv": {"method": "fgm"},
           "tune": {"space": {"adv.mix": {"choice": mixes}}}}
    grid = [SimpleNamespace(metrics={"trial_id": f"t{i}", "epochs": 1, "valid/ndcg@10": score},
                            path=str(tmp_path / f"t{i}"), error=None, config={"adv.mix": mix})
            for i, (mix, score) in enumerate(zip(mixes, [0.1, 0.3]))]
    summary = write_results(grid, build_config(raw), str(tmp_path), raw)

    assert [json.loads(r["adv.mix"]) for r in _rows(tmp_path / "results.csv")] == mixes
    assert [json.loads(m) for m in pq.read_table(tmp_path / "results.parquet")["adv.mix"]
            .to_pylist()] == mixes
    assert summary["best"]["trial"] == "t1"
    best = load_config(tmp_path / "best.yaml")
    assert [(a.method, a.lam, a.steps) for a in best.adv.mix] == [("fgm", 0.5, 1), ("pgd", 1.0, 2)]
