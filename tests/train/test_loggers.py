"""Run tracking (`train.loggers`): TensorBoard event files and an MLflow run (a local file store)
hold every epoch's numbers; a bad logger is one line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import Event

from advrec.cli import main
from advrec.config import load_config
from advrec.errors import AdvrecError
from errors import error_line


def _scalars(events: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``events``: tag -> [(step, value)],
    read from the TFRecord framing (length, CRC, event, CRC) with tensorboardX's protobuf."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(events.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def _history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


def test_tensorboard_holds_every_epoch(tiny_log: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={tiny_log}", "model.dim=8",
                 "train.epochs=3", "adv.method=fgm", "adv.start_epoch=1", "eval.ks=[5]",
                 "train.loggers=[tensorboard]"]) == 0
    scalars = _scalars(run / "tensorboard")
    for key in ("loss", "clean", "valid/ndcg@5", "train_s"):
        steps, values = zip(*scalars[key.replace("@", "_at_")])
        assert list(steps) == [e["epoch"] for e in _history(run)], key
        assert list(values) == pytest.approx([e[key] for e in _history(run)], rel=1e-6), key
    assert [step for step, _ in scalars["adv"]] == [1, 2]  # adversarial epochs only


def test_mlflow_holds_every_epoch(tiny_log: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database otherwise
    run = tmp_path / "apr"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={tiny_log}", "model.dim=8",
                 "train.epochs=2", "adv.eps=0.3", "eval.ks=[5]", "train.loggers=[mlflow]"]) == 0
    client = mlflow.tracking.MlflowClient(store)
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert found.data.tags["mlflow.runName"] == "apr" and found.data.params["adv.eps"] == "0.3"
    history = _history(run)
    for key in ("loss", "valid/ndcg@5"):
        logged = sorted((m.step, m.value) for m in
                        client.get_metric_history(found.info.run_id, key.replace("@", "_at_")))
        assert [step for step, _ in logged] == [e["epoch"] for e in history], key
        assert [v for _, v in logged] == pytest.approx([e[key] for e in history]), key


@pytest.mark.parametrize("loggers, culprit", [("[wandb]", "train.loggers"),
                                              ("[tensorboard, tensorboard]", "listed twice")])
def test_a_bad_logger_is_one_error(loggers: str, culprit: str) -> None:
    with pytest.raises(AdvrecError, match=culprit):
        load_config(None, ["data.source=log", f"train.loggers={loggers}"])


def test_an_unreachable_mlflow_is_one_line(tiny_log: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mlflow")
    # a file store MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE says otherwise
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={tiny_log}", "model.dim=8",
                 "train.epochs=1", "train.loggers=[mlflow]"]) == 2
    line = error_line(capsys.readouterr().err)
    assert line is not None and line.startswith(
        f"advrec: error: train.loggers: mlflow at file:{tmp_path / 'mlruns'}: ")
    assert "MLFLOW_ALLOW_FILE_STORE" in line and not run.exists()
