"""advrec replaces only what it wrote, and only once the new output is whole: the rule of
`advrec.io.check_output` (datasets, synthetic logs, runs), a finished run kept when its
replacement fails, an interrupted replacement resumed, and the rule on S3.

The CLI's side of the same rule, one case per hostile input, is in tests/test_hostile.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import s3fs

from advrec import io
from advrec.cli import main
from advrec.config import load_config
from advrec.data import prepare, synth
from advrec.data.prepare import DATASET
from advrec.errors import AdvrecError
from advrec.train import run_training
from advrec.train.driver import RUN
from synthetic import prepared_synth


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small synthetic log, prepared."""
    return prepared_synth(tmp_path_factory.mktemp("outputs"), 60, 40, 1200)


def _tree(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
            if f.is_file()}


def test_the_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    io.check_output(str(tmp_path / "empty"), DATASET)  # nothing to lose
    io.check_output(str(tmp_path / "new" / "deeper"), DATASET)
    # a meta.json of something else is not a dataset advrec wrote
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"name": "not advrec"}')
    with pytest.raises(AdvrecError, match="other: exists and is not a prepared dataset"):
        io.check_output(str(tmp_path / "other"), DATASET)
    (tmp_path / "other" / "meta.json").write_text('["format_version"]')  # JSON, not an object
    with pytest.raises(AdvrecError, match="is not a prepared dataset"):
        io.check_output(str(tmp_path / "other"), DATASET)
    # the working directory and every directory above it, even an empty one or a run
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    for output in (".", "..", str(tmp_path), "../../a"):
        with pytest.raises(AdvrecError, match="holds the working directory"):
            io.check_output(output, RUN)
    io.check_output("../c", RUN)  # a sibling is fine
    # apart from the inputs, through links too
    (tmp_path / "link").symlink_to(tmp_path / "other")
    for output, source in ((tmp_path / "link", tmp_path / "other"),
                           (tmp_path / "link" / "x", tmp_path / "other"),
                           (tmp_path / "link", tmp_path / "other" / "meta.json")):
        with pytest.raises(AdvrecError, match="overlaps the input"):
            io.check_output(str(output), DATASET, inputs=(str(source),))


def test_a_dataset_replaces_a_dataset_and_a_log_a_log(tmp_path: Path) -> None:
    log, out = str(tmp_path / "log"), str(tmp_path / "out")
    synth(60, 40, 1200, log, seed=1)
    synth(60, 40, 1100, log, seed=2)  # its own log: replaced
    assert json.loads((tmp_path / "log" / "_synth.json").read_text())["interactions"] == 1100
    prepare(log, "parquet", out, split="random:0.8,0.1,0.1")
    prepare(log, "parquet", out, split="random:0.6,0.2,0.2")  # its own dataset: replaced
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["split"]["ratios"] == [
        0.6, 0.2, 0.2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "out"]  # nothing beside them
    with pytest.raises(AdvrecError, match="is not a synthetic log"):
        synth(60, 40, 1200, out)
    synth(60, 40, 1200, str(tmp_path / "log2"))
    with pytest.raises(AdvrecError, match="log2: exists and is not a prepared dataset"):
        prepare(log, "parquet", str(tmp_path / "log2"))


def test_a_finished_run_is_kept_until_its_replacement_has_finished(data: str,
                                                                    tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = [f"data.source={data}", "model.dim=8", "train.epochs=3", "train.batch_size=256",
            "eval.ks=[5]"]
    assert main(["train", "--output", str(run), "--quiet", *base]) == 0
    old = _tree(run)

    # a fault in epoch 0: the old run stays whole, and nothing of the new one is left
    with pytest.raises(RuntimeError, match="fault injected in epoch 0"):
        run_training(load_config(None, [*base, "train.fault_epoch=0"]), str(run),
                     progress=False)
    assert _tree(run) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    # a fault after a checkpoint: the old run stays whole, the new one waits beside it, and
    # resuming it finishes the replacement
    with pytest.raises(RuntimeError, match="fault injected in epoch 2"):
        run_training(load_config(None, [*base, "model.dim=4", "train.fault_epoch=2"]), str(run),
                     progress=False)
    assert _tree(run) == old
    (stopped,) = tmp_path.glob("run.tmp-*")
    assert json.loads((stopped / "run.json").read_text())["replaces"] == str(run)
    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert "dim: 4" in (run / "config.yaml").read_text()
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())] == [0, 1, 2]


def test_the_rule_on_s3(s3_store: str, data: str) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe("advrec/mine/notes.txt", b"mine")
    with pytest.raises(AdvrecError, match="s3://advrec/mine: exists and is not a prepared"):
        prepare(data.replace("/data", "/log"), "parquet", "s3://advrec/mine")
    assert fs.cat("advrec/mine/notes.txt") == b"mine"
    out = "s3://advrec/outputs/data"
    prepare(data.replace("/data", "/log"), "parquet", out, split="random:0.8,0.1,0.1")
    prepare(data.replace("/data", "/log"), "parquet", out, split="random:0.6,0.2,0.2")
    fs.invalidate_cache()
    assert json.loads(fs.cat("advrec/outputs/data/meta.json"))["split"]["ratios"] == [
        0.6, 0.2, 0.2]
    assert not any(".tmp-" in p for p in fs.find("advrec"))  # every write was committed


def test_a_failed_run_in_an_empty_directory_leaves_it_empty(data: str, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    cfg = load_config(None, [f"data.source={data}", "model.dim=8", "train.batch_size=256",
                             "train.fault_epoch=0"])
    with pytest.raises(RuntimeError, match="fault injected in epoch 0"):
        run_training(cfg, str(tmp_path / "run"), progress=False)
    assert list((tmp_path / "run").iterdir()) == []  # no config.yaml, no run.json
