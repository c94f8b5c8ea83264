"""Target metrics end to end, in this process: a run on a poisoned dataset (made here by hand as
`advrec.poisoning.layout` says) reports T-HR and T-NDCG every evaluated epoch and in
metrics.json; `--targets FILE` measures the same items on the clean dataset; `advrec evaluate`
adds them to every point of its curve; `advrec plot --target` draws them side by side."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from advrec.cli import main
from advrec.config import load_config
from advrec.poisoning.layout import FAKE_PREFIX, TARGETS_FILE
from advrec.train import run_training
from errors import error_line
from synthetic import prepared_synth

FAKES = 8


def poison_by_hand(clean: Path, out: Path, targets: list[int], filler: int) -> None:
    """``clean`` with FAKES fake users appended, each with the targets and items 0..filler-1 in
    train, ``meta.json``'s poison section and ``targets.json``."""
    shutil.copytree(clean, out)
    meta = json.loads((clean / "meta.json").read_text())
    genuine = meta["num_users"]
    train = pq.read_table(clean / "train.parquet")
    profile = [*targets, *range(filler)]
    users = [genuine + f for f in range(FAKES) for _ in profile]
    fake = pa.table({"user": pa.array(users, pa.int32()),
                     "item": pa.array(profile * FAKES, pa.int32()),
                     "rating": pa.array([5.0] * len(users), pa.float32()),
                     "timestamp": pa.array([0] * len(users), pa.int64())}).select(
                         train.column_names).cast(train.schema)
    pq.write_table(pa.concat_tables([train, fake]), out / "train.parquet")
    vocab = pq.read_table(clean / "users.parquet")
    fakes = pa.table({"index": pa.array(range(genuine, genuine + FAKES), pa.int32()),
                      "raw_id": [f"{FAKE_PREFIX}{f}" for f in range(FAKES)]})
    pq.write_table(pa.concat_tables([vocab, fakes.cast(vocab.schema)]), out / "users.parquet")
    items = pq.read_table(clean / "items.parquet")["raw_id"].to_pylist()
    meta["num_users"] = genuine + FAKES
    meta["counts"]["train"] += len(users)
    meta["poison"] = {"attack": "random", "fake_users": FAKES, "genuine_users": genuine,
                      "filler": filler, "targets": targets, "seed": 0, "source": str(clean)}
    (out / TARGETS_FILE).write_text(json.dumps(
        {"items": [items[t] for t in targets], "indices": targets, "attack": "random"}))
    (out / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("target-runs")
    clean = Path(prepared_synth(root, 40, 60, 800))
    poison_by_hand(clean, root / "poisoned", targets=[57, 58], filler=5)
    return clean, root / "poisoned"


TRAIN = ["--quiet", "model.dim=8", "train.epochs=2", "eval.ks=[5]", "eval.target_k=10",
         "eval.attacks=[fgm]", "eval.eps=[0, 0.5]"]


@pytest.fixture(scope="module")
def runs(datasets: tuple[Path, Path]) -> tuple[Path, Path]:
    clean, poisoned = datasets
    root = poisoned.parent
    assert main(["train", "--output", str(root / "poisoned-run"), f"data.source={poisoned}",
                 *TRAIN]) == 0
    assert main(["train", "--output", str(root / "clean-run"), f"data.source={clean}",
                 "--targets", str(poisoned / TARGETS_FILE), *TRAIN]) == 0
    return root / "clean-run", root / "poisoned-run"


def test_a_poisoned_dataset_reports_target_metrics(runs: tuple[Path, Path],
                                                   datasets: tuple[Path, Path]) -> None:
    _, run = runs
    metrics = json.loads((run / "metrics.json").read_text())
    target = metrics["target"]
    items = json.loads((datasets[1] / TARGETS_FILE).read_text())["items"]
    assert target["items"] == items and target["k"] == 10
    # every genuine user lacking the target counts, no fake: at most the 40 genuine users
    assert all(0 < n <= 40 for n in target["users"])
    for split in ("valid", "test"):
        assert set(target[split]) == {"hr@10", "ndcg@10"}
        assert 0.0 <= target[split]["ndcg@10"] <= target[split]["hr@10"] <= 1.0
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2
    for record in history:  # every evaluated epoch
        assert 0.0 <= record["target/hr@10"] <= 1.0 and "target/ndcg@10" in record
    assert history[-1]["target/hr@10"] == pytest.approx(target["valid"]["hr@10"])


def test_targets_file_measures_the_same_items_on_the_clean_dataset(
        runs: tuple[Path, Path], datasets: tuple[Path, Path]) -> None:
    clean_run, poisoned_run = runs
    clean = json.loads((clean_run / "metrics.json").read_text())["target"]
    poisoned = json.loads((poisoned_run / "metrics.json").read_text())["target"]
    assert clean["items"] == poisoned["items"]
    assert clean["users"] == poisoned["users"]  # the same genuine users: fakes never count
    config = (clean_run / "config.yaml").read_text()
    assert f"targets: {datasets[1] / TARGETS_FILE}" in config  # resumable from anywhere


def test_evaluate_adds_target_metrics_to_every_point(runs: tuple[Path, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, run = runs
    assert main(["evaluate", "--run", str(run), "--quiet"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    target = json.loads((run / "metrics.json").read_text())["target"]
    assert curve["fgm"]["0.0"]["target/hr@10"] == pytest.approx(target["test"]["hr@10"])
    assert "target/ndcg@10" in curve["fgm"]["0.5"]
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[-2:] == ["target/hr@10", "target/ndcg@10"]


def test_evaluate_targets_flag_measures_a_run_trained_without(
        datasets: tuple[Path, Path], tmp_path: Path) -> None:
    clean, poisoned = datasets
    run = tmp_path / "plain"
    assert main(["train", "--output", str(run), f"data.source={clean}", *TRAIN]) == 0
    assert "target" not in json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", "--run", str(run), "--quiet", "--eps", "0",
                 "--targets", str(poisoned / TARGETS_FILE)]) == 0
    point = json.loads((run / "robustness.json").read_text())["fgm"]["0.0"]
    assert 0.0 <= point["target/hr@10"] <= 1.0


def test_plot_target_draws_a_bar_per_run(runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "targets.png"
    assert main(["plot", *map(str, runs), "--target", "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_target_of_a_run_without_targets_is_one_line(
        runs: tuple[Path, Path], datasets: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "plain"
    assert main(["train", "--output", str(run), f"data.source={datasets[0]}", *TRAIN]) == 0
    capsys.readouterr()
    out = tmp_path / "targets.png"
    assert main(["plot", str(runs[0]), str(run), "--target", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert line and line.startswith(f"advrec: error: {run}/metrics.json: no target metrics")
    assert not out.exists()


def test_two_workers_rank_their_share_of_the_users_and_agree(
        runs: tuple[Path, Path], tmp_path: Path, ray_local: None) -> None:
    # each of 2 Ray Train workers ranks its share of the users; the summed per-target hits
    # equal one process's
    _, run = runs
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    shutil.copytree(run, shared)
    shutil.copytree(run, alone)
    for where, workers in ((shared, "2"), (alone, "0")):
        assert main(["evaluate", "--run", str(where), "--quiet", "--eps", "0,0.5",
                     "--workers", workers]) == 0
    two = json.loads((shared / "robustness.json").read_text())["fgm"]
    one = json.loads((alone / "robustness.json").read_text())["fgm"]
    for eps in ("0.0", "0.5"):
        for metric in ("target/hr@10", "target/ndcg@10"):
            assert two[eps][metric] == pytest.approx(one[eps][metric], abs=1e-6), (eps, metric)


def test_a_search_minimises_target_hr(datasets: tuple[Path, Path], tmp_path: Path,
                                      ray_local: None) -> None:
    # two trials on 1 Ray Train worker each: every epoch reports target/hr@10 to Tune, and the
    # best trial is the one with the lowest (the metric's own mode: min)
    out = tmp_path / "search"
    assert main(["tune", "--output", str(out), "--quiet", f"data.source={datasets[1]}",
                 "model.dim=8", "train.epochs=2", "eval.ks=[5]", "eval.target_k=10",
                 "eval.attacks=[fgm]", "tune.metric=target/hr@10", "tune.scheduler=none",
                 "tune.num_samples=1", "tune.space={train.lr: {grid: [0.001, 0.05]}}"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["status"] == "finished" for r in rows)
    for row in rows:  # a finished trial's score: its best epoch's valid T-HR
        target = json.loads((out / "trials" / row["trial"] / "metrics.json").read_text())["target"]
        assert float(row["score"]) == pytest.approx(target["valid"]["hr@10"])
    best = min(rows, key=lambda r: float(r["score"]))
    assert yaml.safe_load((out / "best.yaml").read_text())["train"]["lr"] == float(best["train.lr"])


def test_a_target_every_genuine_user_had_is_one_line_and_leaves_no_run(
        datasets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = datasets[0]
    data = tmp_path / "everyone"
    shutil.copytree(clean, data)
    train = pq.read_table(data / "train.parquet")
    genuine = json.loads((data / "meta.json").read_text())["num_users"]
    had = train.filter(pc.equal(train["item"], 0))["user"].to_pylist()
    rows = [u for u in range(genuine) if u not in had]  # everyone else gets item 0 too
    extra = pa.table({"user": pa.array(rows, pa.int32()), "item": pa.array([0] * len(rows),
                      pa.int32()), "rating": pa.array([5.0] * len(rows), pa.float32()),
                      "timestamp": pa.array([0] * len(rows), pa.int64())}).select(
                          train.column_names).cast(train.schema)
    pq.write_table(pa.concat_tables([train, extra]), data / "train.parquet")
    raw = pq.read_table(data / "items.parquet")["raw_id"][0].as_py()
    (tmp_path / "t.json").write_text(json.dumps({"items": [raw]}))
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(["train", "--output", str(out), f"data.source={data}", "--targets",
                 str(tmp_path / "t.json"), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert err == (f"advrec: error: {tmp_path / 't.json'}: target item {raw!r}: every genuine "
                   "user of the dataset interacted with it; no user is left to measure it on\n")
    assert not out.exists()


def test_a_resumed_run_measures_the_targets_it_started_with(
        datasets: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # started with a relative --targets path, stopped by a fault, resumed from elsewhere: the
    # same target section as the uninterrupted run's
    clean, poisoned = datasets
    shutil.copy(poisoned / TARGETS_FILE, tmp_path / "t.json")
    monkeypatch.chdir(tmp_path)
    small = [f"data.source={clean}", *TRAIN[1:], "train.batch_size=128"]  # steps to fail in
    assert main(["train", "--output", str(tmp_path / "whole"), *small,
                 "--targets", "t.json"]) == 0
    cfg = load_config(None, [*small, "train.fault_epoch=1"])
    cfg.eval.targets = "t.json"
    with pytest.raises(RuntimeError, match="fault injected in epoch 1"):
        run_training(cfg, "stopped", progress=False)
    monkeypatch.chdir(poisoned)
    assert main(["train", "--resume", str(tmp_path / "stopped"), "--quiet"]) == 0
    resumed = json.loads((tmp_path / "stopped" / "metrics.json").read_text())["target"]
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())["target"]
    assert resumed["items"] == whole["items"]
    for split in ("valid", "test"):
        assert resumed[split] == pytest.approx(whole[split], abs=1e-6)
