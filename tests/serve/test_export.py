"""`advrec export`: the exported ranker, reloaded, reproduces `advrec recommend`'s lists; the
tables are the model's rows under the raw ids; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from advrec.cli import main
from advrec.data import load_dataset
from advrec.train import load_model, read_run
from advrec.train.checkpoint import model_url
from advrec.train.tasks import NEXT, make_task
from errors import error_line
from recs import read_lists, train_run


def _load(export: Path) -> torch.nn.Module:
    manifest = json.loads((export / "manifest.json").read_text())
    if manifest["format"] == "torchscript":
        return torch.jit.load(str(export / manifest["ranker"]))
    return torch.export.load(str(export / manifest["ranker"])).module()


def _exported_lists(export: Path, run: Path, k: int) -> dict[str, list[str]]:
    """Every user's top-k raw items by the reloaded ranker, the user's items left out."""
    cfg, dataset = read_run(str(run))
    data = load_dataset(dataset)
    (_, tensor), = make_task(cfg, data).context(torch.arange(data.num_users), NEXT).items()
    with torch.no_grad():
        scores = _load(export)(tensor)
    for split in ("known", "train", "valid", "test"):
        part = data.split(split)
        scores[part.user, part.item] = -torch.inf
    best, items = torch.topk(scores, k, dim=1)
    users = pq.read_table(export / "users.parquet").sort_by("index")["raw_id"].to_pylist()
    raw = pq.read_table(export / "items.parquet").sort_by("index")["raw_id"].to_pylist()
    lists = {str(users[u]): [str(raw[i]) for i, s in zip(items[u].tolist(), best[u]) if s > -torch.inf]
             for u in range(data.num_users)}
    return {u: items for u, items in lists.items() if items}


@pytest.mark.parametrize("model, fmt", [("mf", "torchscript"), ("mf", "export"),
                                        ("sasrec", "torchscript"), ("sasrec", "export"),
                                        ("neumf", "torchscript"), ("twotower", "torchscript")])
def test_the_reloaded_ranker_gives_recommends_lists(tiny_log: Path, tmp_path: Path,
                                                    model: str, fmt: str) -> None:
    extra = ("model.max_len=10", "data.split=loo") if model == "sasrec" else ()
    run = train_run(tiny_log, tmp_path / "run", f"model.name={model}", *extra)
    export, recs = tmp_path / "export", tmp_path / "recs.parquet"
    assert main(["export", "--run", str(run), "--format", fmt, "--output", str(export)]) == 0
    assert main(["recommend", "--run", str(run), "--k", "5", "--output", str(recs),
                 "--quiet"]) == 0
    assert _exported_lists(export, run, 5) == read_lists(recs)

    # every table: the model's rows, under the raw ids for the id tables
    cfg, dataset = read_run(str(run))
    trained, _ = load_model(model_url(str(run)), cfg, load_dataset(dataset))
    manifest = json.loads((export / "manifest.json").read_text())
    assert set(manifest["tables"]) == set(trained.tables())
    for name, table in trained.tables().items():
        saved = pq.read_table(export / manifest["tables"][name]["file"])
        vectors = torch.tensor(saved["vector"].to_pylist())
        assert torch.equal(vectors, table.weight.detach()), name
    item = pq.read_table(export / "tables/item.parquet") if "item" in manifest["tables"] else None
    if item is not None:
        raw = pq.read_table(export / "items.parquet").sort_by("index")["raw_id"]
        assert item["id"].to_pylist()[:len(raw)] == [str(r) for r in raw.to_pylist()]
    assert manifest["model"] == model and manifest["advrec_export"] == 1


def test_bad_input_is_one_line(tiny_log: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    run = train_run(tiny_log, tmp_path / "run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--output", str(tmp_path / "mine")]) != 0
    assert error_line(capsys.readouterr().err) == (
        f"advrec: error: {tmp_path / 'mine'}: exists and is not an advrec export (no advrec "
        "manifest.json); advrec replaces only outputs it wrote: choose another output or "
        "delete it")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    (run / "checkpoint" / "model.pt").unlink()
    assert main(["export", "--run", str(run), "--output", str(tmp_path / "e")]) != 0
    assert "no checkpoint/model.pt" in error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("e*"))


def test_torch_export_of_neumf_says_to_use_torchscript(tiny_log: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = train_run(tiny_log, tmp_path / "run", "model.name=neumf")
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--format", "export", "--output",
                 str(tmp_path / "e")]) != 0
    line = error_line(capsys.readouterr().err)
    assert line.startswith("advrec: error: --format export: torch.export cannot export "
                           "model.name=neumf's ranker with a free batch size")
    assert line.endswith("--format torchscript can") and not list(tmp_path.glob("e*"))
