"""``adv.schedule`` (`advrec.train.schedules`): free replays equal FGM at one replay and step δ
from where it was left at more; fast starts inside the ball and steps 1.25·ε; its guard stops a
designed collapse; accumulate's δ of a row is k projected ascent steps after k lookups; bad
schedules are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advrec.adversarial import perturb
from advrec.adversarial.perturb import project
from advrec.cli import main
from advrec.config import build_config
from advrec.data import load_dataset
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.models.losses import batch_loss
from advrec.train import run_training
from advrec.train.loop import Training, make_objective, train_epoch
from advrec.train.optim import make_optimizer
from advrec.train.schedules import collapsed, training_attack
from advrec.train.tasks import make_loss, make_task
from synthetic import prepared_synth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepared_synth(tmp_path_factory.mktemp("schedules"), 30, 30, 400)


def _config(dataset: str, **adv) -> object:
    return build_config({"data": {"source": dataset}, "model": {"dim": 8},
                         "adv": {"method": "fgm", "eps": 0.5, **adv}})


def _objective(cfg, data):
    torch.manual_seed(0)
    model = build_model(cfg, data)
    return make_objective(cfg, model, make_loss(cfg)), make_optimizer(model, cfg.train)


def test_free_with_one_replay_is_standard_fgm_step_for_step(dataset: str) -> None:
    data = load_dataset(dataset)
    trained = []
    for cfg in (_config(dataset), _config(dataset, schedule="free", replays=1)):
        objective, optimizer = _objective(cfg, data)
        losses = train_epoch(objective, optimizer, make_task(cfg, data), 64, True,
                             torch.Generator().manual_seed(0), replays=cfg.adv.replays)
        trained.append((losses, objective.model.state_dict()))
    (standard, weights), (free, free_weights) = trained
    assert free == standard
    assert all(torch.equal(weights[k], free_weights[k]) for k in weights)


def test_a_free_replay_steps_delta_from_where_the_last_one_left_it(dataset: str) -> None:
    """Replay 1 trains on FGM's δ; its backward leaves ∂loss/∂δ on δ; replay 2 trains on
    project(δ + ε·g/‖g‖) around the (updated) rows, inside the ball."""
    cfg = _config(dataset, schedule="free", replays=2)
    data = load_dataset(dataset)
    objective, optimizer = _objective(cfg, data)
    batch = next(iter(make_task(cfg, data).batches(64, torch.Generator().manual_seed(0))))
    first = objective(batch, adversarial=True)
    # FGM's δ: ε along the clean loss's gradient at the user rows
    emb = {k: v.detach().requires_grad_(True) for k, v in objective.model.embed(batch).items()}
    clean = batch_loss(objective.loss_fn, objective.model.score(emb, batch), batch)
    g = torch.autograd.grad(clean, emb["user"])[0]
    fgm = 0.5 * g / g.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(first["delta"]["user"], fgm)
    optimizer.zero_grad()
    first["loss"].backward()
    optimizer.step()
    grad = first["delta"]["user"].grad
    assert grad is not None and grad.abs().sum() > 0
    second = objective(batch, adversarial=True, previous=first["delta"])
    moved = first["delta"]["user"].detach() + 0.5 * grad / grad.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(second["delta"]["user"], project(moved, 0.5, "l2"))
    assert not torch.allclose(second["delta"]["user"], first["delta"]["user"])
    assert (second["delta"]["item"].norm(dim=-1) <= 0.5 + 1e-5).all()


def test_free_divides_the_adversarial_epochs_by_the_replays(dataset: str,
                                                            tmp_path: Path) -> None:
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8},
                        "adv": {"method": "fgm", "schedule": "free", "replays": 3,
                                "start_epoch": 2},
                        "train": {"epochs": 9, "patience": 0}})
    assert cfg.adv.epochs_run(9) == 2 + 3 and cfg.adv.epochs_run(2) == 2
    run_training(cfg, str(tmp_path / "run"), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["adversarial"] for h in history] == [False, False, True, True, True]
    assert "eval_s" in history[-1]


@pytest.mark.parametrize("method", ["fgm", "fgsm"])
def test_fast_starts_inside_the_ball_and_steps_one_and_a_quarter_eps(dataset: str,
                                                                     method: str) -> None:
    cfg = _config(dataset, method=method, schedule="fast", guard=0)
    attack = training_attack(cfg.adv)
    norm = "l2" if method == "fgm" else "linf"
    assert (attack.method, attack.steps, attack.random_start, attack.norm) == ("pgd", 1, True,
                                                                               norm)
    assert attack.alpha == pytest.approx(1.25 * 0.5)
    data = load_dataset(dataset)
    objective, _ = _objective(cfg, data)
    batch = next(iter(make_task(cfg, data).batches(64, torch.Generator().manual_seed(0))))
    emb = {k: v.detach() for k, v in objective.model.embed(batch).items()}
    starts = []

    def grad_fn(delta):  # records the start the attack differentiates at
        starts.append({k: d.clone() for k, d in delta.items()})
        return objective._gradient(emb, {k: emb[k] + delta[k] for k in delta}, batch)

    delta = perturb(emb, grad_fn, attack, generator=torch.Generator().manual_seed(1))
    (start,) = starts  # one gradient: at the random start
    grad = grad_fn(start)
    for k in emb:
        size = start[k].norm(dim=-1) if norm == "l2" else start[k].abs().amax(-1)
        assert (size <= 0.5 + 1e-6).all() and (size > 0).all(), k
        g = grad[k]
        step = (1.25 * 0.5 * g / g.norm(dim=-1, keepdim=True) if norm == "l2"
                else 1.25 * 0.5 * g.sign())
        torch.testing.assert_close(delta[k], project(start[k] + step, 0.5, norm))


def test_the_collapse_guard_compares_with_the_best_adversarial_epoch() -> None:
    history = [{"adversarial": False, "robust/ndcg@10": 0.9},  # warm-up: not counted
               {"adversarial": True, "robust/ndcg@10": 0.4}, {"adversarial": True}]
    assert collapsed({"robust/ndcg@10": 0.19}, history, "ndcg@10", True, 0.5)
    assert not collapsed({"robust/ndcg@10": 0.21}, history, "ndcg@10", True, 0.5)
    assert not collapsed({"robust/ndcg@10": 0.01}, history, "ndcg@10", True, 0.0)  # off
    assert not collapsed({"robust/ndcg@10": 0.01}, history[:1], "ndcg@10", True, 0.5)
    lower = [{"adversarial": True, "robust/logloss": 0.3}]
    assert collapsed({"robust/logloss": 0.7}, lower, "logloss", False, 0.5)


def test_fast_stops_at_a_designed_collapse_keeping_an_epoch_before(
        dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """robust/ndcg@10 made to read 0.3, 0.4, 0.35, then 0.1 (a quarter of the best): the run
    stops at the fourth epoch, marked collapsed, and keeps an epoch before it."""
    readings = iter([0.3, 0.4, 0.35, 0.1, 0.4, 0.4])
    # the designed collapse: what each evaluation reads, and the best epoch's final reading
    monkeypatch.setattr(Training, "robust_valid", lambda self: {"ndcg@10": next(readings)})
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8},
                        "adv": {"method": "fgm", "eps": 0.5, "schedule": "fast"},
                        "train": {"epochs": 6, "patience": 0},
                        "eval": {"ks": [10], "robust_every": 1}})
    metrics = run_training(cfg, str(tmp_path / "run"), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h.get("collapsed", False) for h in history] == [False, False, False, True]
    assert history[-1]["stopped"] and metrics["best_epoch"] < 3


@pytest.mark.parametrize("model", ["mf", "sasrec"])
@pytest.mark.parametrize("batch_size", [64, 4])
def test_accumulate_moves_each_rows_delta_one_projected_step_per_lookup(
        dataset: str, tmp_path_factory: pytest.TempPathFactory, model: str,
        batch_size: int) -> None:
    """After k lookups (k training steps, the model updated in between), each row's δ in the
    memory equals k steps ``project(δ + ε·g/‖g‖)`` of whole-table δ (every table row its own,
    shared by all its lookups; SASRec's history and candidates are the same item rows), with g
    the training loss's gradient at that δ, computed here without the memory; rows never looked
    up stay zero, and every row stays inside its ball. A batch of 64 looks up more rows than
    the tables have (the memory steps whole tables), one of 4 fewer (the rows it finds)."""
    source = dataset if model == "mf" else prepared_synth(
        tmp_path_factory.mktemp("accumulate"), 30, 300, 400, split="loo")
    cfg = build_config({"data": {"source": source},
                        "model": {"name": model, "dim": 8, "max_len": 10},
                        "adv": {"method": "fgm", "eps": 0.5, "schedule": "accumulate",
                                "step_size": 0.3}})  # three steps leave the ball
    data = load_dataset(source)
    objective, optimizer = _objective(cfg, data)
    batch = next(iter(make_task(cfg, data).batches(batch_size,
                                                    torch.Generator().manual_seed(0))))
    rows = objective.model.rows(batch)
    expected = {name: torch.zeros(count, 8) for name, _, count in rows.values()}
    for _ in range(3):
        tables = {n: t.clone().requires_grad_(True) for n, t in expected.items()}
        emb = objective.model.embed(batch)
        adv = {k: emb[k] + tables[name][ids] for k, (name, ids, _) in rows.items()}
        loss = (batch_loss(objective.loss_fn, objective.model.score(emb, batch), batch)
                + batch_loss(objective.loss_fn, objective.model.score(adv, batch), batch))
        grads = dict(zip(tables, torch.autograd.grad(loss, list(tables.values()))))
        expected = {n: project(t + 0.3 * grads[n] / grads[n].norm(dim=-1, keepdim=True)
                               .clamp_min(1e-12), 0.5, "l2") for n, t in expected.items()}
        out = objective(batch, adversarial=True)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        objective.memory.step()
    for name, table in objective.memory.tables.items():
        torch.testing.assert_close(table, expected[name], atol=1e-5, rtol=1e-4)
        norms = table.norm(dim=-1)
        assert (norms <= 0.5 + 1e-5).all() and (norms > 0.4).any()
    seen = torch.unique(torch.cat([ids.reshape(-1) for n, ids, _ in rows.values()
                                   if n == "item"]))
    unseen = torch.ones(len(objective.memory.tables["item"]), dtype=torch.bool)
    unseen[seen] = False
    assert (objective.memory.tables["item"][unseen] == 0).all()


def test_accumulate_steps_a_tenth_of_eps_by_default(dataset: str) -> None:
    assert training_attack(_config(dataset, schedule="accumulate").adv).alpha == 0.05
    assert training_attack(_config(dataset, schedule="accumulate", method="pgd", steps=2,
                                    step_size=0.2).adv).alpha == 0.2


def test_decay_scales_the_memory_at_each_adversarial_epoch(dataset: str) -> None:
    cfg = _config(dataset, schedule="accumulate", decay=0.5)
    data = load_dataset(dataset)
    objective, optimizer = _objective(cfg, data)
    train_epoch(objective, optimizer, make_task(cfg, data), 64, True,
                torch.Generator().manual_seed(0), memory=objective.memory)
    before = {n: t.clone() for n, t in objective.memory.tables.items()}
    objective.memory.decay(cfg.adv.decay)
    assert all(torch.equal(objective.memory.tables[n], 0.5 * t) for n, t in before.items())


@pytest.mark.parametrize(("adv", "eval_", "message"), [
    ({"schedule": "slow"}, {}, r"adv\.schedule"),
    ({"schedule": "free", "replays": 0}, {}, r"adv\.replays"),
    ({"replays": 2}, {}, r"replays=2 applies to schedule=free only"),
    ({"schedule": "fast", "replays": 2}, {"robust_every": 1},
     r"replays=2 applies to schedule=free only"),
    ({"schedule": "free", "method": "random"}, {}, r"method=random has no such step"),
    ({"schedule": "fast", "method": "pgd"}, {"robust_every": 1},
     r"schedule=fast is FGSM/FGM from a random start .*method=pgd"),
    ({"schedule": "free", "mix": [{"method": "jsma"}]}, {}, r"adv\.mix has 1 more"),
    ({"schedule": "fast"}, {}, r"set eval\.robust_every=1 .* or adv\.guard=0"),
    ({"schedule": "accumulate", "method": "random"}, {},
     r"schedule=accumulate moves delta by ascent steps; method=random has no such step"),
    ({"schedule": "free", "decay": 0.5}, {}, r"decay=0\.5 applies to schedule=accumulate only"),
    ({"memory": "sharded"}, {}, r"memory=sharded applies to schedule=accumulate only"),
    ({"schedule": "accumulate", "memory": "sharded"}, {},
     r"adv\.memory=sharded shards delta as torchrec shards the tables: it applies to model"),
    ({"schedule": "accumulate", "memory": "rows"}, {}, r"adv\.memory: .*'worker' or 'sharded'"),
])
def test_bad_schedules_are_refused_in_one_line(dataset: str, adv: dict, eval_: dict,
                                               message: str) -> None:
    with pytest.raises(AdvrecError, match=message) as error:
        build_config({"data": {"source": dataset}, "adv": {"method": "fgm", **adv},
                      "eval": eval_})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("schedule, epochs", [(["adv.schedule=free", "adv.replays=2"], 2),
                                              (["adv.schedule=accumulate"], 4)])
def test_free_and_accumulate_train_on_two_ray_train_workers(
        dataset: str, ray_local: None, tmp_path: Path, schedule: list[str], epochs: int) -> None:
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={dataset}",
                 "model.dim=8", "adv.method=fgm", *schedule, "train.epochs=4",
                 "train.batch_size=128", "eval.ks=[10]", "scaling.num_workers=2"]) == 0
    history = json.loads((run / "history.json").read_text())
    # accumulate's first lookups train on δ = 0; its δ grows over the epochs
    assert len(history) == epochs and all(r["adv"] > r["clean"] for r in history[1:])
