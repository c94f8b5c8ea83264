"""Checkpoints of the whole training state: a run stopped mid-epoch (a fault injected) continues
with `advrec train --resume` exactly as if it had never stopped, and the checkpoints kept are
the latest and the best epoch's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advrec.cli import main
from advrec.config import load_config
from advrec.data import prepare
from advrec.train import run_training
from histories import without_times

# MF under PGD with a random start after a clean warm-up (the generator, the warm-up reset of
# early stopping), and SASRec, whose dropout draws from torch's global generator
SETUPS = {
    "mf-pgd-warmup": ["model.name=mf", "model.dim=16", "adv.method=pgd", "adv.steps=2",
                      "adv.eps=0.5", "adv.relative=true", "adv.random_start=true",
                      "adv.start_epoch=2", "train.epochs=6", "train.lr=0.01",
                      "train.batch_size=256", "train.num_negatives=2"],
    # the training rows streamed by Ray Data: each epoch's shuffle and negatives come from
    # (seed, rank, epoch), so the restarted epoch draws what it drew the first time
    "mf-pgd-stream": ["model.name=mf", "model.dim=16", "adv.method=pgd", "adv.steps=2",
                      "adv.eps=0.5", "adv.relative=true", "adv.random_start=true",
                      "train.epochs=4", "train.lr=0.01", "train.batch_size=256",
                      "data.stream=true", "data.shuffle_buffer=1000"],
    # accumulate's δ memory, which the next epochs train on (and decay), is in the state
    "mf-accumulate": ["model.name=mf", "model.dim=16", "adv.method=fgm", "adv.eps=0.5",
                      "adv.schedule=accumulate", "adv.decay=0.5", "train.epochs=5",
                      "train.lr=0.01", "train.batch_size=256"],
    "sasrec-fgm-dropout": ["model.name=sasrec", "model.dim=16", "model.max_len=20",
                           "model.dropout=0.3", "adv.method=fgm", "adv.eps=0.1",
                           "adv.relative=true", "train.epochs=5", "train.lr=0.01",
                           "train.batch_size=32", "data.split=loo"],
}


@pytest.fixture(scope="module")
def prepared(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("resume")
    prepare(str(udata_small), "movielens", str(out / "random"), seed=0)
    prepare(str(udata_small), "movielens", str(out / "loo"), split="loo", seed=0)
    return {"random": str(out / "random"), "loo": str(out / "loo")}


def _overrides(setup: str, prepared: dict[str, str]) -> list[str]:
    split = "loo" if "data.split=loo" in SETUPS[setup] else "random"
    return [f"data.source={prepared[split]}", *SETUPS[setup]]


def _history(run: Path) -> list[dict]:
    """The run's epoch history without its wall-clock times."""
    return without_times(json.loads((run / "history.json").read_text()))


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_stopped_run_resumes_as_if_it_never_stopped(setup: str, prepared: dict[str, str],
                                                      tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    if "data.stream=true" in SETUPS[setup]:
        request.getfixturevalue("ray_local")  # Ray Data needs a Ray instance, even in-process
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert main(["train", "--output", str(whole), "--quiet", *_overrides(setup, prepared)]) == 0

    cfg = load_config(None, [*_overrides(setup, prepared), "train.fault_epoch=3"])
    with pytest.raises(RuntimeError, match="fault injected in epoch 3"):
        run_training(cfg, str(stopped), progress=False)
    # the failed run is kept with its checkpoint of epoch 2 (and the best epoch's, when that is
    # an earlier one), and nothing of a finished run
    assert not (stopped / "metrics.json").exists()
    latest = stopped / "checkpoints" / "epoch-000002.pt"
    best = torch.load(latest, weights_only=True)["early_stopping"]["epoch"]
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == sorted(
        {latest.name, f"epoch-{best:06d}.pt"})

    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    assert _history(stopped) == _history(whole)  # every epoch once, same losses and metrics
    assert [r["epoch"] for r in _history(stopped)] == list(range(cfg.train.epochs))
    resumed, uninterrupted = (json.loads((r / "metrics.json").read_text())
                              for r in (stopped, whole))
    assert resumed["best_epoch"] == uninterrupted["best_epoch"]
    for split in ("valid", "test"):
        assert resumed[split] == pytest.approx(uninterrupted[split], abs=1e-4)


def test_only_the_latest_and_the_best_checkpoints_are_kept(prepared: dict[str, str],
                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    # a learning rate so high that valid NDCG peaks early, then falls
    assert main(["train", "--output", str(run), "--quiet", f"data.source={prepared['random']}",
                 "model.name=mf", "model.dim=16", "train.epochs=8", "train.lr=0.3",
                 "train.patience=0"]) == 0
    best = json.loads((run / "metrics.json").read_text())["best_epoch"]
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == sorted({f"epoch-{best:06d}.pt", "epoch-000007.pt"})


def test_resume_bad_input(prepared: dict[str, str], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    def error(args: list[str]) -> str:
        assert main(args) == 2
        return capsys.readouterr().err.strip()

    run = tmp_path / "run"
    source = f"data.source={prepared['random']}"
    base = ["model.name=mf", "model.dim=8", "train.epochs=3"]
    assert error(["train", "--resume", str(tmp_path / "none")]).startswith(
        f"advrec: error: {tmp_path / 'none'}: not a run directory")
    with pytest.raises(RuntimeError):
        run_training(load_config(None, [source, *base, "train.fault_epoch=1"]), str(run),
                     progress=False)
    assert "holds an unfinished run; continue it with `advrec train --resume" in error(
        ["train", "--output", str(run), source, *base])
    assert "give no --config, --output or overrides" in error(
        ["train", "--resume", str(run), "train.epochs=5"])
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert error(["train", "--resume", str(run)]).endswith(
        "this run has finished; there is nothing to resume")
    # a fault before the first checkpoint leaves no run behind
    early = tmp_path / "early"
    with pytest.raises(RuntimeError):
        run_training(load_config(None, [source, *base, "train.fault_epoch=0"]), str(early),
                     progress=False)
    assert not early.exists()
