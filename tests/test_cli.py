"""End to end through the `advrec` command: prepare -> train -> evaluate on a small synthetic log,
and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advrec.cli import main
from conftest import SMALL
from errors import error_line


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def prepared(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "ml"
    assert main(["prepare", "--input", str(udata_small), "--format", "movielens",
                 "--output", str(out), "--split", "random:0.8,0.1,0.1", "--seed", "1"]) == 0
    return out


def test_prepare_train_evaluate_end_to_end(prepared: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["num_users"] == SMALL["users"]  # every user of the log
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--output", str(run_dir),
                         f"data.source={prepared}", "model.dim=16", "adv.method=fgm",
                         "adv.eps=0.3", "adv.start_epoch=1", "train.epochs=3", "train.lr=0.01",
                         "train.batch_size=512", "eval.ks=[5,10]")
    assert code == 0, err
    assert "test" in out
    # not a terminal: a line per epoch instead of a progress bar
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all(" ndcg@5 " in line for line in epochs)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert set(metrics[split]) == {f"{m}@{k}" for m in ("ndcg", "recall", "hit", "mrr", "precision")
                                       for k in (5, 10)}
        assert 0.0 < metrics[split]["ndcg@10"] <= 1.0
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["adversarial"] for h in history] == [False, True, True]
    assert "adv" in history[1] and "adv" not in history[0]
    assert (run_dir / "config.yaml").read_text().count("method: fgm") == 1
    assert (run_dir / "checkpoint" / "model.pt").exists()

    code, out, err = run(capsys, "evaluate", "--run", str(run_dir), "--attack", "fgm,pgd",
                         "--eps", "0,0.5", "--steps", "3", "--quiet")
    assert code == 0, err
    robust = json.loads((run_dir / "robustness.json").read_text())
    assert set(robust) == {"fgm", "pgd"} and set(robust["pgd"]) == {"0.0", "0.5"}
    assert robust["fgm"]["0.0"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"])
    assert robust["pgd"]["0.5"]["ndcg@10"] < robust["pgd"]["0.0"]["ndcg@10"]
    assert (run_dir / "robustness.png").read_bytes()[:4] == b"\x89PNG"

    plot = tmp_path / "both.png"
    assert run(capsys, "plot", str(run_dir), str(run_dir), "--output", str(plot))[0] == 0
    assert plot.stat().st_size > 0


def test_training_is_reproducible(prepared: Path, tmp_path: Path) -> None:
    args = [f"data.source={prepared}", "model.dim=8", "train.epochs=2", "adv.method=pgd",
            "adv.steps=2", "adv.random_start=true", "train.batch_size=1024"]
    for name in ("a", "b"):
        assert main(["train", "--output", str(tmp_path / name), "--quiet", *args]) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    # peak memory is the process's, which both runs share: not a result of the run
    assert a.pop("peak_rss_bytes") and b.pop("peak_rss_bytes")
    assert a == b and a["devices"] == [{"device": "cpu", "backend": "none"}]


def _no_output_left(path: Path) -> bool:
    return not path.exists() and not list(path.parent.glob(path.name + ".tmp-*"))


@pytest.mark.parametrize("overrides, culprit", [
    (["adv.epsilon=0.1"], "adv.epsilon: unknown config key"),
    (["adv.eps=-1"], "adv.eps"),
    (["adv.steps=0"], "adv.steps"),
    (["model.name=bert"], "model.name"),
    pytest.param(["scaling.use_gpu=true"], "scaling.use_gpu: no CUDA device here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
])
def test_bad_config_is_one_line_and_writes_nothing(prepared: Path, tmp_path: Path, overrides,
                                                   culprit, capsys) -> None:
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--output", str(out), f"data.source={prepared}", *overrides)
    assert code == 2
    line = error_line(err)
    assert line and line.startswith("advrec: error:") and culprit in line
    assert _no_output_left(out)


def test_missing_source_and_bad_run_dir(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope" / "u.data"
    code, _, err = run(capsys, "train", "--output", str(tmp_path / "run"), f"data.source={missing}")
    assert code == 2 and str(missing) in err and _no_output_left(tmp_path / "run")
    code, _, err = run(capsys, "evaluate", "--run", str(tmp_path), "--eps", "0.5")
    assert code == 2 and "not a run directory" in err
    code, _, err = run(capsys, "plot", str(tmp_path), "--output", str(tmp_path / "x.png"))
    assert code == 2 and "robustness.json" in err


def test_bad_cli_values_exit_non_zero(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "evaluate", "--run", str(tmp_path), "--eps", "0,-0.5")
    assert code == 2 and "--eps" in err
    code, _, err = run(capsys, "evaluate", "--run", str(tmp_path), "--attack", "cw")
    assert code == 2 and "--attack" in err


def test_prepare_bad_input_leaves_nothing(udata_small: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "log.csv"
    bad.write_text("user_id,item_id,rating\n1,2,4\n1,3,x\n")
    out = tmp_path / "ds"
    code, _, err = run(capsys, "prepare", "--input", str(bad), "--format", "csv", "--output", str(out))
    line = error_line(err)
    assert code == 2 and line and "rating" in line and _no_output_left(out)
    code, _, err = run(capsys, "prepare", "--input", str(bad), "--format", "csv", "--output", str(out),
                       "--user-col", "uid")
    assert code == 2 and "uid" in err and _no_output_left(out)
    # leave-one-out needs 3 interactions per user; a 1-interaction user has no test item
    one = tmp_path / "one.csv"
    one.write_text("user_id,item_id,timestamp\n1,1,1\n1,2,2\n1,3,3\n2,1,1\n")
    code, _, err = run(capsys, "prepare", "--input", str(one), "--format", "csv", "--output", str(out),
                       "--split", "loo")
    assert code == 2 and "'2'" in err and _no_output_left(out)


def test_demo_trains_and_attacks_both_twins(tmp_path: Path, capsys) -> None:
    # the newcomer's first command (`make demo`), shortened: a synthetic log, BPR and APR, both
    # attacked across eps, one table and one plot
    code, out, _ = run(capsys, "demo", "--output", str(tmp_path), "--epochs", "4", "--quiet")
    assert code == 0
    for name in ("bpr", "apr"):
        curve = json.loads((tmp_path / name / "robustness.json").read_text())
        assert curve["fgm"].keys() == curve["pgd"].keys() == {"0.0", "0.25", "0.5", "1.0"}
        assert curve["pgd"]["1.0"]["ndcg@10"] < curve["pgd"]["0.0"]["ndcg@10"]
    history = json.loads((tmp_path / "apr" / "history.json").read_text())
    assert [r["adversarial"] for r in history] == [False, False, True, True]  # warm-up, then FGM
    table = out.splitlines()
    assert any(line.split()[0] == "bpr" for line in table if line.strip())
    assert any(line.split()[0] == "apr" for line in table if line.strip())
    assert (tmp_path / "robustness.png").stat().st_size > 0


def test_the_console_script_runs_exit_handlers_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """`cli.run` (the `advrec` script) ends with os._exit after Python's exit handlers: they
    still run, output is flushed, and an error's code is the process's; an error right after a
    read (an empty CSV) exits 2 every time, never an abort (134) from the teardown."""
    (tmp_path / "empty.csv").write_text("")
    script = ("import atexit, sys; from advrec import cli; "
              "atexit.register(lambda: print('exit handler ran')); "
              "sys.argv = ['advrec', 'prepare', '--input', 'empty.csv', '--format', 'csv', "
              "'--output', 'out']; cli.run()")
    for _ in range(5):
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stdout == "exit handler ran\n"
        assert done.stderr == "advrec: error: empty.csv: empty file\n"
    assert not (tmp_path / "out").exists()


def test_error_line_leaves_out_only_what_ray_forwards_from_its_actors() -> None:
    # as CI once captured it: Ray Train's cleaner logged into a later test's stderr
    ray = ("\x1b[36m(PlacementGroupCleaner pid=23627)\x1b[0m Detected that the Ray Train "
           "controller actor (81ceac50) has exited.\n")
    mine = "advrec: error: config: tune.objectives: needs tune.search=optuna\n"
    assert error_line(ray + mine) == mine.rstrip("\n")
    assert error_line(mine + mine) is None and error_line(ray) is None
    assert error_line("(not an actor) advrec: error: x\n" + mine) is None


def test_beyond_accuracy_metrics_off_by_default_and_under_attack(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = [f"data.source={prepared}", "model.dim=8", "train.epochs=1", "eval.ks=[5]"]
    assert main(["train", "--output", str(run), "--quiet", *common]) == 0
    assert "coverage@5" not in json.loads((run / "metrics.json").read_text())["test"]
    assert main(["evaluate", "--run", str(run), "--attack", "fgm", "--eps", "0,1",
                 "--beyond", "--quiet"]) == 0
    curve = json.loads((run / "robustness.json").read_text())["fgm"]
    names = ("coverage", "gini", "entropy", "avgpop", "tail", "novelty", "ild")
    assert all(f"{n}@5" in point for point in curve.values() for n in names)
    # the attack changes the lists: at least one of them moves
    assert any(curve["0.0"][f"{n}@5"] != curve["1.0"][f"{n}@5"] for n in names)

    beyond = tmp_path / "beyond"
    assert main(["train", "--output", str(beyond), "--quiet", *common, "eval.beyond=true"]) == 0
    metrics = json.loads((beyond / "metrics.json").read_text())
    assert 0 < metrics["test"]["coverage@5"] <= 1 and 0 <= metrics["test"]["gini@5"] < 1
    assert metrics["test"]["ndcg@5"] == json.loads((run / "metrics.json").read_text())[
        "test"]["ndcg@5"]  # the same training: the extra metrics change nothing else
    history = json.loads((beyond / "history.json").read_text())
    assert "valid/ild@5" in history[0]


def test_evaluate_beyond_on_a_sampled_run_is_one_error(prepared: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={prepared}",
                 "model.dim=8", "train.epochs=1", "eval.protocol=sampled"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--beyond", "--quiet"]) != 0
    line = error_line(capsys.readouterr().err)
    assert line.startswith("advrec: error: --beyond: the run's eval.protocol=sampled")
    assert not (run / "robustness.json").exists()
