"""Adaptive ε (``adv.adaptive``): VAT's and PamaCF's per-user budgets against their formulas, the
perturbation of every row at its user's budget, the objective's adversarial loss against one
computed by hand, the same loss with torchrec-sharded tables, every user-id model training with
both, and a VAT run on 2 Ray Train workers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from advrec.adversarial import AdversarialObjective, Attack, select_targets
from advrec.adversarial.adaptive import pamacf_weights, vat_weights
from advrec.cli import main
from advrec.config import build_config
from advrec.data import load_dataset, prepare
from advrec.models import LOSSES, MF, NeuMF, build_model
from advrec.models.losses import batch_loss
from advrec.train.loop import attack_from_config, make_objective
from advrec.train.tasks import make_loss, make_task
from zoo_models import MODELS

RHO = 0.3  # adv.eps, the papers' ρ


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("num_users", [10, 10**6], ids=["scatter", "unique"])
def test_vat_gives_a_user_with_a_lower_loss_a_larger_eps(num_users: int) -> None:
    # users 7, 3 and 9 with per-example losses summing to 1, 2 and 3 (user 3 twice in the
    # batch): VAT sums a user's losses and compares with the mean over the batch's users (2);
    # a small user table groups them by a scatter, a large one by torch.unique, alike
    users = torch.tensor([3, 7, 9, 3])
    losses = torch.tensor([0.5, 1.0, 3.0, 1.5])
    got = vat_weights(users, losses, lam=2.0, num_users=num_users)
    want = [2 * _sigmoid(2 / 2 - 1), 2 * _sigmoid(2 / 1 - 1), 2 * _sigmoid(2 / 3 - 1),
            2 * _sigmoid(2 / 2 - 1)]
    torch.testing.assert_close(got, torch.tensor(want))
    assert got[1] > got[0] > got[2]  # loss 1 < 2 < 3: budget 1.46 > 1 > 0.83 (times ε)
    assert got[0] == pytest.approx(1.0)  # a user at the mean gets ε itself (λ = 2)
    assert got[0] == got[3]  # one user, one budget
    # λ scales the budget; a zero loss (a perfect fit) gets the most, and stays finite
    torch.testing.assert_close(vat_weights(users, losses, lam=1.0, num_users=num_users), got / 2)
    perfect = vat_weights(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]), lam=2.0,
                          num_users=num_users)
    assert perfect[0] == pytest.approx(2.0) and perfect[1] == pytest.approx(2 * _sigmoid(-0.5))


def test_pamacf_gives_a_user_with_a_larger_embedding_a_larger_eps() -> None:
    # ‖e‖² of 1 and 4 over a mean of 2.5 (examples counted, as in PamaCF's code); a model with
    # two user tables (NeuMF) sums both rows' squared norms
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    got = pamacf_weights([rows], lam=2.0)
    torch.testing.assert_close(got, torch.tensor([2 * _sigmoid(1 / 2.5 - 1),
                                                  2 * _sigmoid(4 / 2.5 - 1)]))
    assert got[1] > 1.0 > got[0]
    split = pamacf_weights([rows[:, :1], rows[:, 1:]], lam=2.0)
    torch.testing.assert_close(split, got)


def _batch(num_users: int, num_items: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    users = torch.randint(num_users, (24,), generator=g)
    users[:4] = 0  # a user with several examples in the batch
    return {"user": users, "item": torch.randint(num_items, (24, 3), generator=g)}


def _hand_weights(adaptive: str, model: torch.nn.Module, batch: dict) -> list[float]:
    """Each example's λ·σ(r − 1) from the papers' definitions, in plain Python loops."""
    with torch.no_grad():
        emb = model.embed(batch)
        logits = model.score(emb, batch)
    users = batch["user"].tolist()
    if adaptive == "vat":
        per_row = F.softplus(logits[:, 1:] - logits[:, :1]).mean(1).tolist()  # BPR by hand
        per_user: dict[int, float] = {}
        for u, loss in zip(users, per_row):
            per_user[u] = per_user.get(u, 0.0) + loss
        mean = sum(per_user.values()) / len(per_user)
        return [2 * _sigmoid(mean / per_user[u] - 1) for u in users]
    sq = [sum(float(emb[k][b].pow(2).sum()) for k in emb if k.startswith("user"))
          for b in range(len(users))]
    mean = sum(sq) / len(sq)
    return [2 * _sigmoid(s / mean - 1) for s in sq]


@pytest.mark.parametrize("adaptive", ["vat", "pamacf"])
@pytest.mark.parametrize("model_cls", [MF, NeuMF])
def test_the_adversarial_loss_is_at_each_users_own_eps(adaptive: str, model_cls: type) -> None:
    # FGM (APR's attack, as both papers): δ of every row of example b, the user's and its
    # items', is ρ·w_b along its gradient; the objective's adversarial loss equals the one
    # computed by hand from that δ
    torch.manual_seed(0)
    model = MF(20, 30, 8) if model_cls is MF else NeuMF(20, 30, 8, [16])
    batch = _batch(20, 30)
    objective = AdversarialObjective(model, LOSSES["bpr"], Attack("fgm", RHO), lam=1.0,
                                     adaptive=adaptive)
    got = objective(batch, adversarial=True)["adv"]

    weights = torch.tensor(_hand_weights(adaptive, model, batch))
    emb = {k: v.detach().requires_grad_(True) for k, v in model.embed(batch).items()}
    grads = torch.autograd.grad(LOSSES["bpr"](model.score(emb, batch)), list(emb.values()))
    shifted = {}
    for (k, row), g in zip(emb.items(), grads):
        radius = RHO * weights.view(-1, *([1] * (g.dim() - 1)))
        shifted[k] = row + radius * g / g.norm(dim=-1, keepdim=True)
    want = LOSSES["bpr"](model.score(shifted, batch))
    torch.testing.assert_close(got, want.detach())
    uniform = AdversarialObjective(model, LOSSES["bpr"], Attack("fgm", RHO), lam=1.0)
    assert not torch.allclose(got, uniform(batch, adversarial=True)["adv"])


@pytest.mark.parametrize("adaptive", ["vat", "pamacf"])
def test_an_attack_in_adv_mix_is_at_each_users_own_eps(adaptive: str) -> None:
    """adv.method=none with FGM in adv.mix: the config is taken, and the mix's attack is sized
    per user as adv's own would be (the same adversarial loss), not at the uniform ε."""
    torch.manual_seed(0)
    model = MF(20, 30, 8)
    batch = _batch(20, 30)
    base = {"data": {"source": "unused"}, "model": {"name": "mf", "dim": 8}}
    mixed = build_config({**base, "adv": {"adaptive": adaptive,
                                          "mix": [{"method": "fgm", "eps": RHO}]}})
    got = make_objective(mixed, model, LOSSES["bpr"])(batch, adversarial=True)["adv"]
    alone = AdversarialObjective(model, LOSSES["bpr"], Attack("fgm", RHO), lam=1.0,
                                 adaptive=adaptive)
    torch.testing.assert_close(got, alone(batch, adversarial=True)["adv"])
    uniform = AdversarialObjective(model, LOSSES["bpr"], Attack("fgm", RHO), lam=1.0)
    assert not torch.allclose(got, uniform(batch, adversarial=True)["adv"])


@pytest.mark.parametrize("method", ["fgm", "random", "pgd", "jsma"])
@pytest.mark.parametrize("adaptive", ["vat", "pamacf"])
def test_each_rows_perturbation_has_its_users_norm(method: str, adaptive: str) -> None:
    torch.manual_seed(0)
    model = NeuMF(20, 30, 8, [16])
    batch = _batch(20, 30)
    objective = AdversarialObjective(model, LOSSES["bpr"], Attack(method, RHO, steps=5),
                                     lam=1.0, adaptive=adaptive, adaptive_lambda=3.0)
    emb = model.embed(batch)
    keys = select_targets(list(emb), "all")
    rows = batch_loss(LOSSES["bpr"], model.score(emb, batch), batch, rows=True)
    delta = objective._delta(emb, keys, None, batch, torch.Generator().manual_seed(0),
                             objective.attack, objective._scales(emb, keys, batch, rows))
    budget = RHO * torch.tensor(_hand_weights(adaptive, model, batch)) * 1.5  # λ = 3, not 2
    assert budget.max() > 1.2 * budget.min()  # the users' budgets differ
    for key in keys:
        # (B,) user rows, (B, C) item rows; JSMA's changed coordinates each move by the budget
        norms = delta[key].abs().amax(-1) if method == "jsma" else delta[key].norm(dim=-1)
        expected = budget.view(-1, *([1] * (norms.dim() - 1))).expand_as(norms)
        if method == "pgd":  # projected onto each row's ball
            assert (norms <= expected * (1 + 1e-5)).all(), key
        else:  # FGM's step, JSMA's and random noise take the whole budget
            torch.testing.assert_close(norms, expected, rtol=1e-5, atol=1e-6)


def test_per_row_losses_average_to_the_batch_loss() -> None:
    # VAT reads the per-row losses; their mean is what every model trains on
    logits = torch.randn(6, 4)
    labels = (torch.rand(6, 4) > 0.5).float()
    for name, fn in LOSSES.items():
        lab = labels if name == "bce" else None
        rows = fn(logits, lab, rows=True)
        assert rows.shape == (6,)
        torch.testing.assert_close(rows.mean(), fn(logits, lab))


@pytest.fixture(scope="module")
def prepared(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("adaptive") / "data")
    prepare(str(udata_small), "movielens", out, seed=0)
    return out


@pytest.mark.parametrize("adaptive", ["vat", "pamacf"])
def test_sharded_tables_give_the_same_adversarial_loss(adaptive: str, prepared: str) -> None:
    # torchrec hands the adversary the looked-up rows, as nn.Embedding does: each user's ε and
    # so the objective are the same
    pytest.importorskip("torchrec")
    from advrec.train.sharding import process_group, shard

    data = load_dataset(prepared)

    def config(embeddings: str) -> object:
        return build_config({
            "data": {"source": prepared}, "model": {"dim": 8, "embeddings": embeddings},
            "adv": {"method": "fgm", "eps": RHO, "adaptive": adaptive},
            "train": {"optimizer": "sgd"}})

    def objective(model: torch.nn.Module, cfg: object) -> AdversarialObjective:
        return AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0,
                                    adaptive=cfg.adv.adaptive)

    dense_cfg, sharded_cfg = config("dense"), config("torchrec")
    torch.manual_seed(0)
    dense = build_model(dense_cfg, data)
    batch = next(iter(make_task(dense_cfg, data).batches(256, torch.Generator().manual_seed(0))))
    want = objective(dense, dense_cfg)(batch, adversarial=True)
    uniform = AdversarialObjective(dense, make_loss(dense_cfg), attack_from_config(dense_cfg.adv),
                                   lam=1.0)(batch, adversarial=True)
    assert want["adv"].item() != pytest.approx(uniform["adv"].item(), rel=1e-4)
    with process_group():
        model = build_model(sharded_cfg, data, sharded=True)
        wrapped = shard(objective(model, sharded_cfg), model, sharded_cfg, torch.device("cpu"))
        model.load_state_dict(dense.state_dict())
        got = wrapped(batch, adversarial=True)
    assert got["adv"].item() == pytest.approx(want["adv"].item(), rel=1e-6)


@pytest.mark.parametrize("name", [m for m in MODELS if m != "sasrec"])
def test_every_user_model_trains_with_adaptive_eps(name: str, ctr_small: str,
                                                   feature_options: dict) -> None:
    # one step of each user-id model of the zoo under both defences: ε varies by user, the
    # adversarial term is finite and above the clean one, and the step lowers nothing to NaN
    data = load_dataset(ctr_small)
    for adaptive in ("vat", "pamacf"):
        cfg = build_config({"data": {"source": ctr_small, **feature_options},
                            "model": {"name": name, "dim": 8, **MODELS[name]},
                            "adv": {"method": "fgm", "eps": 0.5, "adaptive": adaptive}})
        torch.manual_seed(0)
        model = build_model(cfg, data)
        objective = AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0,
                                         adaptive=adaptive)
        batch = next(iter(make_task(cfg, data).batches(64, torch.Generator().manual_seed(0))))
        emb = model.embed(batch)
        keys = select_targets(list(emb), "all")
        rows = batch_loss(make_loss(cfg), model.score(emb, batch), batch, rows=True)
        scales = objective._scales(emb, keys, batch, rows)
        user_scale = scales[select_targets(keys, "user")[0]].flatten()
        assert user_scale.shape == batch["user"].shape and user_scale.std() > 0, adaptive
        out = objective(batch, adversarial=True)
        assert torch.isfinite(out["loss"]) and out["adv"] > out["clean"], (name, adaptive)
        out["loss"].backward()


def test_vat_trains_on_two_ray_train_workers(prepared: str, ray_local: None,
                                             tmp_path: Path) -> None:
    # each worker sizes its users' ε from its own batch (no communication in the attack)
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={prepared}",
                 "model.dim=16", "adv.method=fgm", "adv.eps=0.5", "adv.adaptive=vat",
                 "train.epochs=2", "train.lr=0.01", "train.batch_size=256", "eval.ks=[10]",
                 "scaling.num_workers=2"]) == 0
    history = json.loads((run / "history.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(history) == 2 and all(r["adversarial"] for r in history)
    assert history[-1]["clean"] < history[0]["clean"]
    assert all(r["adv"] > r["clean"] for r in history)
    assert metrics["test"]["ndcg@10"] > 0
