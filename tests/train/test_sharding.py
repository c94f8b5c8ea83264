"""Tables sharded across workers with torchrec (``model.embeddings=torchrec``): a fused table
update happens once per step whatever the adversarial terms, each of 2 Ray Train workers holds
its own shards of the tables and of the δ memory only while adversarial training lowers the loss, a checkpoint saved by 2 workers evaluates
the same in one process, a stopped run resumes as if it never stopped, and bad input is named."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("torchrec")

from advrec import io
from advrec.adversarial import AdversarialObjective
from advrec.adversarial.memory import ShardedDeltaMemory
from advrec.cli import main
from advrec.config import build_config
from advrec.data import load_dataset, prepare
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.serve.recommend import vocabulary
from advrec.train import load_model, read_run, run_training
from advrec.train.checkpoint import load_train_state
from advrec.train.loop import attack_from_config, make_objective
from advrec.train.sharding import process_group, shard
from advrec.train.tasks import make_loss, make_task
from conftest import SMALL
from histories import without_times
from zoo_models import MODELS


@pytest.fixture(scope="module")
def prepared(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("sharding") / "data")
    prepare(str(udata_small), "movielens", out, seed=0)
    return out


def _config(dataset: str, embeddings: str, **sections: dict) -> object:
    return build_config({
        "data": {"source": dataset},
        "model": {"name": "mf", "dim": 8, "embeddings": embeddings, **sections.get("model", {})},
        "adv": {"method": "pgd", "eps": 0.5, "steps": 3, **sections.get("adv", {})},
        "train": {"optimizer": "sgd", "lr": 0.5, "reg": 0.1, **sections.get("train", {})}})


def _whole(table: torch.Tensor) -> torch.Tensor:
    """A table of a state dict: one worker's ShardedTensor holds it whole."""
    return table.local_shards()[0].tensor if hasattr(table, "local_shards") else table


def test_fused_tables_update_each_row_once_per_step(prepared: str) -> None:
    # torchrec issue #2729: a fused optimizer steps in every backward that reaches its table.
    # The objective's clean, adversarial (PGD from the clean gradient) and L2 terms share one
    # backward, and the attack differentiates the looked-up rows only, so one step equals one
    # plain SGD step on the summed gradient: no row is updated twice, none is skipped.
    data = load_dataset(prepared)
    dense_cfg, sharded_cfg = _config(prepared, "dense"), _config(prepared, "torchrec")
    torch.manual_seed(0)
    dense = build_model(dense_cfg, data)
    start = {k: v.clone() for k, v in dense.state_dict().items()}
    batch = next(iter(make_task(dense_cfg, data).batches(256, torch.Generator().manual_seed(0))))

    def objective(model: torch.nn.Module, cfg: object) -> AdversarialObjective:
        return AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0,
                                    reg=0.1)

    out = objective(dense, dense_cfg)(batch, adversarial=True)
    optimizer = torch.optim.SGD(dense.parameters(), lr=0.5)
    out["loss"].backward()
    optimizer.step()

    with process_group():
        model = build_model(sharded_cfg, data, sharded=True)
        wrapped = shard(objective(model, sharded_cfg), model, sharded_cfg, torch.device("cpu"))
        model.load_state_dict(start)
        twin = wrapped(batch, adversarial=True)
        twin["loss"].backward()  # the tables step here; there is no other optimizer
        after = {k: _whole(v) for k, v in model.state_dict().items()}
    assert twin["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    for key, weight in dense.state_dict().items():
        assert not torch.allclose(weight, start[key])  # the step moved the rows of the batch
        torch.testing.assert_close(after[key], weight, rtol=1e-5, atol=1e-6)


def test_a_table_the_model_lacks_is_named(prepared: str) -> None:
    cfg = _config(prepared, "torchrec", model={"sharding": {"usr": "table_wise"}})
    with process_group():
        model = build_model(cfg, load_dataset(prepared), sharded=True)
        objective = AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0)
        with pytest.raises(AdvrecError, match=r"model.sharding: 'usr' is no table of "
                                              r"model.name=mf \(its tables: user, item\)"):
            shard(objective, model, cfg, torch.device("cpu"))


@pytest.mark.parametrize(("override", "message"), [
    ("model.sharding={user: rowwise}", "model.sharding.user: Input should be 'table_wise'"),
    ("model.sharding={user: row_wise}", "user: row_wise is CUDA-only in torchrec"),
    ("train.table_optimizer=adam", "adam tables are GPU-only in FBGEMM"),
    ("eval.robust_every=1", "measure robustness with `advrec evaluate`"),
])
def test_bad_sharding_config_is_one_line(prepared: str, override: str, message: str,
                                         tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--output", str(tmp_path / "run"), "--quiet",
                 f"data.source={prepared}", "model.embeddings=torchrec",
                 "train.optimizer=sgd", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_torchrec_missing_says_how_to_install_it(prepared: str, tmp_path: Path) -> None:
    script = ("import sys; sys.modules['torchrec'] = None; from advrec.cli import main; "
              f"sys.exit(main(['train', '--output', {str(tmp_path / 'run')!r}, '--quiet', "
              f"'data.source={prepared}', 'model.embeddings=torchrec', "
              "'train.optimizer=sgd']))")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "model.embeddings=torchrec needs torchrec: run `make torchrec`" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_stopped_sharded_run_resumes_as_if_it_never_stopped(prepared: str,
                                                             tmp_path: Path) -> None:
    # the tables, their fused optimizer's state and the best epoch's tables are saved sharded
    overrides = [f"data.source={prepared}", "model.embeddings=torchrec", "model.dim=8",
                 "train.optimizer=adagrad", "train.lr=0.05", "train.epochs=5",
                 "adv.method=pgd", "adv.steps=2", "adv.start_epoch=1"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert main(["train", "--output", str(whole), "--quiet", *overrides]) == 0
    with pytest.raises(RuntimeError, match="fault injected in epoch 3"):
        main(["train", "--output", str(stopped), "--quiet", *overrides, "train.fault_epoch=3"])
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == [
        "epoch-000002", "epoch-000002.pt"]
    # the best epoch's weights are spilled to the run, not held twice in memory: the one the
    # checkpoint refers to is there for the resumed run, and a finished run has none left
    state = torch.load(stopped / "checkpoints/epoch-000002.pt", weights_only=True)
    best = state["early_stopping"]["epoch"]
    assert [p.name for p in (stopped / "best").iterdir()] == [f"epoch-{best:06d}"]
    assert not (whole / "best").exists()
    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    assert not (stopped / "best").exists()
    history = [json.loads((r / "history.json").read_text()) for r in (stopped, whole)]
    assert without_times(history[0]) == without_times(history[1])
    resumed, uninterrupted = (json.loads((r / "metrics.json").read_text())
                              for r in (stopped, whole))
    assert resumed["test"] == pytest.approx(uninterrupted["test"], abs=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_with_sharded_tables(name: str, ctr_small: str,
                                                feature_options: dict, tmp_path: Path) -> None:
    # the zoo's embed/score split under torchrec: PGD training and (lockstep) evaluation run,
    # and the run's tables load into one process's dense model with its test metrics
    options = [f"model.{k}={json.dumps(v)}" for k, v in MODELS[name].items()]
    features = [f"data.{k}={json.dumps(v)}" for k, v in feature_options.items()]
    run = tmp_path / name
    assert main(["train", "--output", str(run), "--quiet", f"data.source={ctr_small}",
                 *features, f"model.name={name}", "model.dim=8", *options,
                 "model.embeddings=torchrec", "train.optimizer=adagrad", "train.lr=0.05",
                 "train.epochs=2", "train.batch_size=512", "adv.method=pgd", "adv.steps=2",
                 "adv.eps=0.1", "eval.ks=[10]"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    cfg, dataset = read_run(str(run))
    data = load_dataset(dataset)
    model, _ = load_model(str(run / "checkpoint/model.pt"), cfg, data)
    test = make_task(cfg, data).evaluate(model, "test", cfg.eval)
    assert test == pytest.approx(metrics["test"], abs=1e-6)


def test_hashed_users_train_in_a_bounded_sharded_table(udata_small: Path,
                                                       tmp_path: Path) -> None:
    # SMALL's users hashed into 16 rows: the table has 16 rows, the collisions are reported
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={udata_small}",
                 f"data.cache_dir={tmp_path / 'cache'}", "data.user_buckets=16",
                 "model.embeddings=torchrec", "model.dim=8", "train.optimizer=sgd",
                 "train.epochs=2", "adv.method=fgm"]) == 0
    _, dataset = read_run(str(run))
    hashing = io.read_json(f"{dataset}/meta.json")["hashing"]["user"]
    users = SMALL["users"]
    assert (hashing["buckets"], hashing["ids"]) == (16, users)
    assert hashing["collision_rate"] == 1 - hashing["rows_used"] / users > 0.7
    metrics = json.loads((run / "metrics.json").read_text())
    num_items = load_dataset(dataset).num_items
    assert metrics["table_bytes"] == [(16 + num_items) * 8 * 4]  # one worker: both tables
    assert metrics["test"]["ndcg@10"] > 0


def test_two_workers_each_hold_their_shards_and_one_process_evaluates_their_checkpoint(
        prepared: str, s3_store: str, ray_local: None, tmp_path: Path) -> None:
    run = f"s3://advrec/sharded-{uuid.uuid4().hex[:8]}"  # on the S3 endpoint
    # accumulate's δ memory sharded with the tables: each worker holds half of each δ table
    cfg = _config(prepared, "torchrec",
                  model={"dim": 16, "sharding": {"user": "table_wise", "item": "column_wise"}},
                  adv={"method": "fgm", "schedule": "accumulate", "memory": "sharded"},
                  train={"optimizer": "adagrad", "lr": 0.05, "reg": 0.0, "epochs": 3,
                         "patience": 0})
    cfg.scaling.num_workers = 2
    metrics = run_training(cfg, run, progress=False)

    data = load_dataset(prepared)
    history = io.read_json(f"{run}/history.json")
    # one worker holds the user table (table-wise), each worker 8 of the item table's 16
    # columns (column-wise), and nothing else
    row = 16 * 4  # float32 rows of dim 16
    half = data.num_items * row // 2
    assert sorted(metrics["table_bytes"]) == [half, data.num_users * row + half]
    assert history[-1]["loss"] < history[0]["loss"]  # adversarial training learns
    assert all(r["adversarial"] for r in history)
    memory = load_train_state(run)["memory"]  # every worker's block of every δ table
    for name, rows in (("user", data.num_users), ("item", data.num_items)):
        blocks = [m[name] for m in memory]
        assert [len(b) for b in blocks] == [-(-rows // 2)] * 2
        whole = torch.cat(blocks)
        assert (whole[:rows].norm(dim=-1) > 0).float().mean() > 0.9  # nearly every row moved
        assert whole[rows:].abs().sum() == 0  # the padding row, if any, never

    # the tables saved in shards by 2 workers load whole into one process's dense model
    model, _ = load_model(f"{run}/checkpoint/model.pt", cfg, data)
    assert all(isinstance(t, torch.nn.Embedding) for t in model.tables().values())
    test = make_task(cfg, data).evaluate(model, "test", cfg.eval)
    assert test == pytest.approx(metrics["test"], abs=1e-6)

    # and `advrec recommend` ranks from that checkpoint, in object storage: the dense model's
    # own top 5, every split's items left out
    recs = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", run, "--k", "5", "--workers", "0", "--output", str(recs),
                 "--quiet"]) == 0
    with torch.no_grad():
        scores = model.rank_scores({"user": torch.arange(data.num_users)})
    for split in ("train", "valid", "test"):
        scores[data.split(split).user, data.split(split).item] = -torch.inf
    best = torch.topk(scores, 5, dim=1).indices
    users, items = vocabulary(prepared, "user"), vocabulary(prepared, "item")
    rows = pq.read_table(recs).to_pylist()
    assert [(r["user"], r["item"]) for r in rows] == [
        (users[u].as_py(), items[i].as_py()) for u in range(data.num_users)
        for i in best[u].tolist()]



def test_a_table_too_narrow_to_shard_is_named(ctr_small: str, feature_options: dict) -> None:
    cfg = build_config({"data": {"source": ctr_small, **feature_options},
                        "model": {"name": "deepfm", "dim": 8, "embeddings": "torchrec",
                                  "sharding": {"user_linear": "table_wise"}},
                        "train": {"optimizer": "sgd"}})
    with process_group():
        model = build_model(cfg, load_dataset(ctr_small), sharded=True)
        objective = AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0)
        with pytest.raises(AdvrecError, match="model.sharding: 'user_linear' is 1 wide, which "
                                              "FBGEMM cannot shard, so it stays dense"):
            shard(objective, model, cfg, torch.device("cpu"))


@pytest.mark.parametrize("schedule", [{"schedule": "free", "replays": 2},
                                      {"schedule": "accumulate"},
                                      {"schedule": "accumulate", "memory": "sharded"}])
def test_schedules_step_sharded_tables_as_dense_ones(prepared: str, schedule: dict) -> None:
    # free's replays (one fused table step per replay's backward) and accumulate's δ memory
    # (its gradient from the backward that steps the tables; per worker, or sharded, here over
    # a process group of one) on the same batch twice, from the same weights: the same losses,
    # tables and δ as with dense tables, a memory per worker and plain SGD
    data = load_dataset(prepared)
    adv = {"method": "fgm", **schedule}
    dense_cfg = _config(prepared, "dense", adv={k: v for k, v in adv.items() if k != "memory"})
    sharded_cfg = _config(prepared, "torchrec", adv=adv)
    torch.manual_seed(0)
    dense = build_model(dense_cfg, data)
    start = {k: v.clone() for k, v in dense.state_dict().items()}
    batch = next(iter(make_task(dense_cfg, data).batches(256, torch.Generator().manual_seed(0))))

    def train(objective: torch.nn.Module, memory, step) -> list[float]:
        losses, previous = [], None
        for _ in range(2):
            out = objective(batch, adversarial=True, previous=previous)
            out["loss"].backward()
            step()
            if memory is not None:
                memory.step()
            previous = out.get("delta")
            losses += [out["clean"].item(), out["adv"].item()]
        return losses

    objective = make_objective(dense_cfg, dense, make_loss(dense_cfg))
    optimizer = torch.optim.SGD(dense.parameters(), lr=0.5)

    def sgd() -> None:
        optimizer.step()
        optimizer.zero_grad()

    expected = train(objective, objective.memory, sgd)
    with process_group():
        model = build_model(sharded_cfg, data, sharded=True)
        twin = make_objective(sharded_cfg, model, make_loss(sharded_cfg))
        assert isinstance(twin.memory, ShardedDeltaMemory) == ("memory" in schedule)
        wrapped = shard(twin, model, sharded_cfg, torch.device("cpu"))
        model.load_state_dict(start)
        losses = train(wrapped, twin.memory, lambda: None)  # the tables step in the backward
        after = {k: _whole(v) for k, v in model.state_dict().items()}
    assert losses == pytest.approx(expected, rel=1e-6)
    assert expected[3] != pytest.approx(expected[1])  # δ moved between the two
    for key, weight in dense.state_dict().items():
        torch.testing.assert_close(after[key], weight, rtol=1e-5, atol=1e-6)
    if objective.memory is not None:
        for name, table in objective.memory.tables.items():
            torch.testing.assert_close(twin.memory.tables[name], table, rtol=1e-5, atol=1e-6)
