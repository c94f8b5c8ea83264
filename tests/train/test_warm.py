"""Warm start (`train.init_from`, `advrec train --init-from RUN`): a run begins from another
run's best weights on a dataset with new and missing users, items and feature values; rows are
matched by raw id and value, new ones keep this run's own initialisation."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from advrec import io
from advrec.cli import main
from advrec.config import RunConfig, build_config, dump_config
from advrec.data import load_dataset, prepare
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.train import read_run
from advrec.train.checkpoint import load_model, save_checkpoint, train_state_url
from advrec.train.optim import make_optimizer
from advrec.train.warm import check_init, table_keys, warm_start, warm_state
from synthetic import synthetic_log, write_atomic
from zoo_models import MODELS

FEATURES = {"numeric_features": ["age", "release_year"],
            "exclude_features": ["zip_code", "movie_title"]}


def _days(root: Path, seed: int, users: int, items: int, drop_user: int) -> str:
    """A prepared CTR dataset with side features: `advrec synth`'s log of ``users`` and
    ``items`` without the rows of one user (0-based ``drop_user``, so the later raw ids take
    other indices than in a log that has them)."""
    log = synthetic_log(root / "synth", users, items, 1000, seed=seed)
    kept = log.log.filter(pc.not_equal(log.log["user_id"], drop_user))
    atomic = write_atomic(type(log)(kept, log.users, log.items), root / "atomic")
    prepare(str(atomic), "recbole", str(root / "data"), label_threshold=4.0, seed=0)
    return str(root / "data")


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(yesterday, today): today has 10 more users and 20 more items (raw ids above
    yesterday's), lacks one of yesterday's users, and yesterday lacks another of today's."""
    root = tmp_path_factory.mktemp("days")
    return (_days(root / "yesterday", 0, 40, 80, drop_user=3),
            _days(root / "today", 1, 50, 100, drop_user=7))


def _config(data: str, name: str, seed: int = 0, **train: object) -> RunConfig:
    return build_config({"data": {"source": data, **FEATURES},
                         "model": {"name": name, "dim": 8, **MODELS[name]},
                         "train": {"seed": seed, **train}})


def _finished_run(root: Path, cfg: RunConfig) -> str:
    """A run directory as `advrec train` leaves it, of an untrained model (seed 1): what warm
    start reads of it (config, dataset, best model)."""
    data = load_dataset(cfg.data.source)
    torch.manual_seed(1)
    model = build_model(cfg, data)
    root.mkdir()
    (root / "config.yaml").write_text(dump_config(cfg))
    (root / "run.json").write_text(json.dumps({"dataset": cfg.data.source}))
    save_checkpoint(str(root / "checkpoint" / "model.pt"), model, cfg, epoch=0)
    (root / "metrics.json").write_text(json.dumps({"best_epoch": 0}))  # written last
    return str(root)


def _raw(url: str, side: str) -> list[str]:
    """The raw id of each index of ``side`` in a prepared dataset."""
    vocab = pq.read_table(Path(url) / f"{side}s.parquet").sort_by("index")
    return [str(v) for v in vocab["raw_id"].to_pylist()]


@pytest.mark.parametrize("name", ["mf", "sasrec", "deepfm"])
def test_warm_start_keeps_known_rows_and_draws_new_ones(name: str, days: tuple[str, str],
                                                        tmp_path: Path) -> None:
    yesterday, today = days
    run = _finished_run(tmp_path / "run", _config(yesterday, name))
    cfg, matched = check_init(_config(today, name).model_copy(
        update={"train": _config(today, name).train.model_copy(update={"init_from": run})}),
        today)
    old_model = load_model(str(Path(run) / "checkpoint" / "model.pt"),
                           _config(yesterday, name), load_dataset(yesterday))[0]
    data = load_dataset(today)
    torch.manual_seed(0)
    fresh = build_model(cfg, data).state_dict()  # this run's own initialisation
    state = warm_state(cfg, data)
    assert state.keys() == fresh.keys()
    old_state, keys = old_model.state_dict(), table_keys(build_model(cfg, data))
    for key, tensor in state.items():
        if key not in keys:  # dense layers: the run's, whole
            assert torch.equal(tensor, old_state[key]), key
            continue
        side, field = old_model.table_rows()[keys[key]]
        if field is None:
            new, old = _raw(today, side), _raw(yesterday, side)
        else:
            new_field = build_model(cfg, data).table_rows()[keys[key]][1]
            assert new_field is not None
            if field.vocab is None:  # numeric bins: bin for bin
                new = old = [str(b) for b in range(field.vocab_size)]
            else:  # row 0 is "missing" in both
                new, old = ["", *new_field.vocab], ["", *field.vocab]
        known = 0
        for row, value in enumerate(new):
            if value in old:  # bit for bit the run's row of that id or value
                assert torch.equal(tensor[row], old_state[key][old.index(value)]), (key, value)
                known += 1
            else:  # a fresh row, drawn as this run draws its tables
                assert torch.equal(tensor[row], fresh[key][row]), (key, value)
        assert known > 0, key
        if field is None:  # ids: both kinds of rows are there
            assert known < len(new), key
        if name == "sasrec":  # the padding row past the ids: zero, as the model's own
            assert len(tensor) == len(new) + 1 and not tensor[-1].any()
        if field is None:
            assert matched[side] == {"known": known, "new": len(new) - known}


@pytest.mark.parametrize("embeddings", ["dense", "torchrec"])
def test_init_from_starts_where_the_run_ended_and_trains_on_new_ids(
        embeddings: str, days: tuple[str, str], tmp_path: Path, capsys) -> None:
    """`advrec train --init-from` on the real CLI: on the same data a warm run starts from
    exactly the weights the run ended with (as a resumed run does), and trains from them (its
    tables sharded or not); on tomorrow's data it trains and says what it matched."""
    if embeddings == "torchrec":
        pytest.importorskip("torchrec")
    yesterday, today = days
    base = ["--quiet", "model.name=mf", "model.dim=8", "train.batch_size=256", "eval.ks=[10]"]
    ended = tmp_path / "a"
    assert main(["train", "--output", str(ended), f"data.source={yesterday}", *base,
                 "train.epochs=2"]) == 0
    cfg = build_config({"data": {"source": yesterday}, "model": {"name": "mf", "dim": 8},
                        "train": {"init_from": str(ended)}})
    weights = load_model(str(ended / "checkpoint" / "model.pt"), cfg,
                         load_dataset(yesterday))[0].state_dict()
    start = warm_state(cfg, load_dataset(yesterday))
    assert all(torch.equal(start[k], v) for k, v in weights.items())

    # one epoch of steps too small to matter: the run's weights come out, not a fresh draw
    warm = tmp_path / "warm"
    assert main(["train", "--output", str(warm), f"data.source={yesterday}", *base,
                 f"model.embeddings={embeddings}", "train.optimizer=sgd", "train.lr=1e-9",
                 "train.epochs=1", "--init-from", str(ended)]) == 0
    trained = load_model(str(warm / "checkpoint" / "model.pt"), read_run(str(warm))[0],
                         load_dataset(yesterday))[0].state_dict()
    for key, tensor in weights.items():
        torch.testing.assert_close(trained[key], tensor, rtol=0, atol=1e-6)

    capsys.readouterr()
    assert main(["train", "--output", str(tmp_path / "b"), f"data.source={today}", *base,
                 f"model.embeddings={embeddings}", "train.optimizer=adagrad", "train.lr=0.05",
                 "train.epochs=2", "--init-from", str(ended)]) == 0
    out = capsys.readouterr().out
    run = io.read_json(str(tmp_path / "b" / "run.json"))
    users, num_users = run["init_from"]["user"], load_dataset(today).num_users
    assert run["init_from"]["run"] == str(ended)
    assert users["known"] + users["new"] == num_users and 0 < users["new"] < num_users
    assert f"it knew {users['known']} of {num_users} users" in out
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["test"]["ndcg@10"] > 0


def _plain_log(day: str) -> str:
    """The day's log as `advrec synth` wrote it, without side features (hashed ids take none)."""
    return str(Path(day).parent / "synth" / "synth")


@pytest.mark.parametrize(("change", "culprit"), [
    ({"model": {"name": "neumf"}}, "a mf run; this config trains model.name=neumf"),
    ({"model": {"name": "mf", "dim": 16}}, "its model.dim is 8, this config's 16"),
])
def test_init_from_another_model_is_refused(change: dict, culprit: str, days: tuple[str, str],
                                            tmp_path: Path) -> None:
    yesterday, today = days
    run = _finished_run(tmp_path / "run", _config(yesterday, "mf"))
    cfg = build_config({"data": {"source": today},
                        "model": {"dim": 8, **change["model"]},
                        "train": {"init_from": run}})
    with pytest.raises(AdvrecError, match=culprit):
        check_init(cfg, today)


def test_init_from_an_unfinished_run_is_refused(days: tuple[str, str], tmp_path: Path) -> None:
    yesterday, today = days
    run = _finished_run(tmp_path / "run", _config(yesterday, "mf"))
    (Path(run) / "metrics.json").unlink()  # its best model may change yet
    cfg = build_config({"data": {"source": today}, "model": {"name": "mf", "dim": 8},
                        "train": {"init_from": run}})
    with pytest.raises(AdvrecError, match="the run has not finished"):
        check_init(cfg, today)


def test_init_from_refuses_ids_hashed_otherwise(days: tuple[str, str], tmp_path: Path) -> None:
    yesterday, today = days
    hashed = str(tmp_path / "hashed")
    prepare(_plain_log(today), "parquet", hashed, buckets={"user": 32})
    run = _finished_run(tmp_path / "run", _config(yesterday, "mf"))
    cfg = build_config({"data": {"source": hashed}, "model": {"name": "mf", "dim": 8},
                        "train": {"init_from": run}})
    with pytest.raises(AdvrecError, match="its user ids are not hashed, this dataset's hashed "
                                          "into 32 rows"):
        check_init(cfg, hashed)


def test_hashed_rows_match_row_for_row(days: tuple[str, str], tmp_path: Path) -> None:
    yesterday, today = days
    urls = []
    for day in (yesterday, today):
        urls.append(str(tmp_path / Path(day).parent.name))
        prepare(_plain_log(day), "parquet", urls[-1], buckets={"user": 32, "item": 64})
    run = _finished_run(tmp_path / "run", _config(urls[0], "mf"))
    cfg = build_config({"data": {"source": urls[1]}, "model": {"name": "mf", "dim": 8},
                        "train": {"init_from": run}})
    cfg, matched = check_init(cfg, urls[1])
    assert matched == {"user": {"known": 32, "new": 0}, "item": {"known": 64, "new": 0}}
    old = torch.load(Path(run) / "checkpoint" / "model.pt", weights_only=True)["model"]
    state = warm_state(cfg, load_dataset(urls[1]))
    assert torch.equal(state["user.weight"], old["user.weight"])
    assert torch.equal(state["item.weight"], old["item.weight"])


@pytest.mark.parametrize(("name", "sparse"), [("mf", False), ("neumf", True)])
def test_init_optimizer_carries_the_best_epochs_state_as_resuming_would(
        name: str, sparse: bool, days: tuple[str, str], tmp_path: Path) -> None:
    """With train.init_optimizer, on the same data the warm start holds exactly what resuming
    from the run's best epoch would load (weights and optimizer state); on new data the known
    ids' optimizer rows carry over and the new ones start at zero."""
    yesterday, today = days
    ended = tmp_path / "a"
    options = {"model": {"name": name, "dim": 8, **MODELS[name]},
               "train": {"epochs": 3, "batch_size": 256, "sparse_embeddings": sparse,
                         "patience": 5}}
    overrides = [f"{section}.{k}={json.dumps(v)}" for section, keys in options.items()
                 for k, v in keys.items()]
    assert main(["train", "--output", str(ended), "--quiet", f"data.source={yesterday}",
                 "eval.ks=[10]", *overrides]) == 0
    best = json.loads((ended / "metrics.json").read_text())["best_epoch"]
    saved = torch.load(train_state_url(str(ended), best), weights_only=True)
    for day in (yesterday, today):
        cfg = build_config({"data": {"source": day}, **options,
                            "train": {**options["train"], "init_from": str(ended),
                                      "init_optimizer": True}})
        cfg = check_init(cfg, day)[0]
        data = load_dataset(day)
        model = build_model(cfg, data)
        optimizer = make_optimizer(model, cfg.train)
        warm_start(cfg, data, model, optimizer)
        state = optimizer.state_dict()
        parts = state["parts"] if sparse else [state]
        saved_parts = saved["optimizer"]["parts"] if sparse else [saved["optimizer"]]
        if day == yesterday:  # resuming's state, bit for bit
            assert all(torch.equal(v, saved["model"][k]) for k, v in model.state_dict().items())
            for part, then in zip(parts, saved_parts, strict=True):
                assert part["state"].keys() == then["state"].keys()
                for i, entry in part["state"].items():
                    for key, value in entry.items():  # SparseAdam's step is an int
                        assert torch.equal(torch.as_tensor(value),
                                           torch.as_tensor(then["state"][i][key])), key
            continue
        # today: the user table's first moments, row for row by raw id
        table = dict(model.named_parameters())["user.weight" if name == "mf" else
                                               "user_gmf.weight"]
        tables = optimizer.parts[0] if sparse else optimizer  # sparse: the tables' part first
        index = [id(p) for g in tables.param_groups for p in g["params"]].index(id(table))
        moment = parts[0]["state"][index]["exp_avg"]
        old_moment = saved_parts[0]["state"][index]["exp_avg"]
        new_raw, old_raw = _raw(today, "user"), _raw(yesterday, "user")
        for row, raw in enumerate(new_raw):
            expected = old_moment[old_raw.index(raw)] if raw in old_raw else torch.zeros(8)
            assert torch.equal(moment[row], expected), raw
