"""The model zoo through the `advrec` command: train and evaluate each kind of model on a small
synthetic log with side features, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advrec.cli import main
from errors import error_line


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _features(options: dict[str, list[str]]) -> list[str]:
    return [f"data.{k}=[{','.join(v)}]" for k, v in options.items()]


@pytest.mark.parametrize("name, keys, headline", [
    ("deepfm", {"auc", "logloss", "gauc"}, "auc"),
    ("dcnv2", {"auc", "logloss", "gauc"}, "auc"),
    ("mmoe", {"click/auc", "click/logloss", "click/gauc", "rating/rmse"}, "click/auc"),
    ("twotower", {f"{m}@10" for m in ("ndcg", "recall", "hit", "mrr", "precision")}, "ndcg@10"),
])
def test_train_and_evaluate_each_kind(name: str, keys: set[str], headline: str, ctr_small: str,
                                      feature_options, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / name
    code, out, err = run(capsys, "train", "--output", str(run_dir), "--quiet",
                         f"data.source={ctr_small}", *_features(feature_options),
                         f"model.name={name}", "model.dim=8", "model.mlp_layers=[16]",
                         "adv.method=pgd", "adv.steps=2", "adv.eps=0.1", "train.epochs=2",
                         "train.lr=0.01", "train.batch_size=512", "eval.ks=[10]")
    assert code == 0, err
    assert headline in out  # the summary table shows the model's own metrics
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert set(metrics[split]) == keys
    if name != "twotower":
        assert 0.5 < metrics["test"][headline] <= 1.0  # better than chance after 2 epochs

    code, out, err = run(capsys, "evaluate", "--run", str(run_dir), "--attack", "fgm,pgd",
                         "--eps", "0,1", "--steps", "3", "--quiet")
    assert code == 0, err
    robust = json.loads((run_dir / "robustness.json").read_text())
    assert robust["fgm"]["0.0"][headline] == pytest.approx(metrics["test"][headline])
    attacked, clean = robust["pgd"]["1.0"], robust["pgd"]["0.0"]
    if name == "mmoe":
        # the attack raises the sum of the click and the rating loss, not the click AUC as such
        # (after 2 epochs the AUC can even rise): one of the two losses rises at least
        assert (attacked["click/logloss"] > clean["click/logloss"]
                or attacked["rating/rmse"] > clean["rating/rmse"])
    else:
        assert attacked[headline] < clean[headline]  # the attack hurts


@pytest.mark.parametrize("overrides, culprit", [
    (["model.name=deepfm", "data.numeric_features=[agee]"], "data.numeric_features: feature column 'agee'"),
    (["model.name=sasrec", "model.max_len=0"], "model.max_len"),
    (["model.name=transformer4rec"], "model.name"),
    (["model.name=deepfm", "train.loss=bpr"], "train.loss"),
    (["model.name=mmoe", "model.task_weights={click: 0, rating: 0}"], "model.task_weights"),
    (["model.name=deepfm", "train.monitor=ndcg@10"], "train.monitor"),
])
def test_bad_zoo_config_is_one_line(overrides: list[str], culprit: str, ctr_small: str,
                                    tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--output", str(out), f"data.source={ctr_small}",
                       "train.epochs=1", *overrides)
    assert code == 2, err
    line = error_line(err)
    assert line and line.startswith("advrec: error:") and culprit in line
    assert not out.exists()


def test_ctr_model_on_a_log_without_labels_names_the_fix(udata_small: Path, tmp_path: Path,
                                                         capsys) -> None:
    code, _, err = run(capsys, "train", "--output", str(tmp_path / "run"),
                       f"data.source={udata_small}", f"data.cache_dir={tmp_path / 'cache'}",
                       "model.name=deepfm", "train.epochs=1")
    line = error_line(err)
    assert code == 2 and line and "data.label_threshold" in line


def test_prepare_label_threshold_labels_every_rating(udata_small: Path, tmp_path: Path,
                                                     capsys) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "ctr"
    code, _, err = run(capsys, "prepare", "--input", str(udata_small), "--format", "movielens",
                       "--output", str(out), "--label-threshold", "4")
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["task"] == "ctr"
    train = pq.read_table(out / "train.parquet").to_pydict()
    assert set(train["label"]) == {0, 1}
    assert all(label == (rating >= 4) for label, rating in zip(train["label"], train["rating"]))
    code, _, err = run(capsys, "prepare", "--input", str(udata_small), "--format", "movielens",
                       "--output", str(tmp_path / "bad"), "--label-threshold", "4",
                       "--min-rating", "3")
    assert code == 2 and "--min-rating" in err and not (tmp_path / "bad").exists()
