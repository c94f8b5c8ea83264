"""JSMA in embedding space (``adv.method=jsma``): at most ``l0`` coordinates of each row change,
the most salient ones, each by the whole ε; iteratively, each round on the gradient at the
current perturbation; in training and in `advrec evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advrec.adversarial import Attack, perturb, rank_salient
from advrec.cli import main
from advrec.config import build_config
from advrec.errors import AdvrecError
from advrec.models import MF, NeuMF
from advrec.train import run_training
from embedding_loss import batch_loss
from synthetic import prepared_synth

WIDTH = 24  # the default l0 is then 2


def _quadratic():
    """x and the gradient of ``Σ (x + δ − w)² · (1, 2, …, d)``, known by hand; it moves with δ,
    so every round of the attack sees a new one."""
    g = torch.Generator().manual_seed(1)
    x = {"user": torch.randn(6, WIDTH, generator=g), "item": torch.randn(6, 3, WIDTH, generator=g)}
    w = {k: torch.randn(v.shape, generator=g) for k, v in x.items()}
    weights = torch.arange(1, WIDTH + 1)

    def grad_fn(delta):
        return {k: 2 * (x[k] + delta[k] - w[k]) * weights for k in x}
    return x, grad_fn


@pytest.mark.parametrize("steps", [1, 3, 8])
@pytest.mark.parametrize("l0", [None, 1, 5])
@pytest.mark.parametrize("relative", [False, True])
def test_at_most_l0_coordinates_per_row_each_moved_by_eps(steps: int, l0: int | None,
                                                          relative: bool) -> None:
    x, grad_fn = _quadratic()
    eps = 0.3
    delta = perturb(x, grad_fn, Attack("jsma", eps, steps=steps, relative=relative, l0=l0))
    budget = 2 if l0 is None else l0
    for k, d in delta.items():
        changed = d != 0
        # the gradient is nowhere zero here, so the whole budget is spent, and no more
        assert (changed.sum(-1) == budget).all(), (k, changed.sum(-1))
        radius = (eps * x[k].norm(dim=-1, keepdim=True) if relative
                  else torch.full((*d.shape[:-1], 1), eps))
        # each changed coordinate sits on the L-inf box's face: the whole ε, in either sign
        torch.testing.assert_close(d.abs(), changed * radius)


@pytest.mark.parametrize("steps", [1, 4])
def test_the_changed_coordinates_are_the_most_salient_of_a_linear_loss(steps: int) -> None:
    # loss = Σ c·x: its gradient is c wherever δ is, so the l0 largest |c| of each row are
    # the ones changed, each by ε·sign(c), however many rounds
    g = torch.Generator().manual_seed(2)
    c = torch.randn(8, WIDTH, generator=g)
    delta = perturb({"user": torch.randn(8, WIDTH, generator=g)}, lambda d: {"user": c},
                    Attack("jsma", 0.4, steps=steps, l0=5))["user"]
    top = torch.zeros_like(c, dtype=torch.bool).scatter_(-1, c.abs().topk(5).indices, True)
    torch.testing.assert_close(delta, torch.where(top, 0.4 * c.sign(), 0.0))


def test_each_round_ranks_on_the_gradient_at_the_current_perturbation() -> None:
    # loss = 3a + 2b + 2.5c − 10ac at x = 0, l0 = 2, ε = 1. At δ = 0 the gradient is
    # (3, 2, 2.5): one round moves a and c up. Two rounds: a first, then c's gradient is
    # 2.5 − 10 = −7.5, the most salient, and c moves down, which hurts far more.
    def loss(z):
        a, b, c = z[..., 0], z[..., 1], z[..., 2]
        return (3 * a + 2 * b + 2.5 * c - 10 * a * c).sum()

    def grad_fn(delta):
        d = delta["user"].clone().requires_grad_(True)
        return {"user": torch.autograd.grad(loss(d), d)[0]}

    x = {"user": torch.zeros(1, 3)}
    once = perturb(x, grad_fn, Attack("jsma", 1.0, steps=1, l0=2))["user"]
    twice = perturb(x, grad_fn, Attack("jsma", 1.0, steps=2, l0=2))["user"]
    torch.testing.assert_close(once, torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(twice, torch.tensor([[1.0, 0.0, -1.0]]))
    assert loss(twice) > loss(once)


def test_rounds_share_the_budget_and_a_round_adding_nothing_costs_no_gradient() -> None:
    # l0 = 2 over 5 rounds: ceil(t·2/5) = 1, 1, 2, 2, 2 changed after round t, so the gradient
    # is taken at rounds 1 and 3 only (round 1's is the clean one when the caller has it)
    x, grad_fn = _quadratic()
    calls = []
    counted = lambda d: calls.append(sum(int((v != 0).sum()) for v in d.values())) or grad_fn(d)
    attack = Attack("jsma", 0.3, steps=5, l0=2)
    delta = perturb(x, counted, attack)
    rows = 6 + 6 * 3
    assert calls == [0, rows]  # at δ = 0, then with one coordinate changed in every row
    calls.clear()
    again = perturb(x, counted, attack, init_grad=grad_fn({k: torch.zeros_like(v)
                                                           for k, v in x.items()}))
    assert calls == [rows]
    torch.testing.assert_close(again, delta)


def test_l0_of_the_whole_row_in_one_round_is_fgsm() -> None:
    x, grad_fn = _quadratic()
    torch.testing.assert_close(perturb(x, grad_fn, Attack("jsma", 0.3, l0=WIDTH)),
                               perturb(x, grad_fn, Attack("fgsm", 0.3)))


def test_l0_above_the_rows_is_an_error_and_narrower_rows_change_all_theirs() -> None:
    # DeepFM's first-order weights are rows of width 1 beside its fields of model.dim
    x = {"user": torch.randn(4, 8), "user_linear": torch.randn(4, 1)}
    grad_fn = lambda d: {k: torch.ones_like(v) for k, v in x.items()}
    delta = perturb(x, grad_fn, Attack("jsma", 0.5, l0=3))
    assert ((delta["user"] != 0).sum(-1) == 3).all()
    torch.testing.assert_close(delta["user_linear"], torch.full((4, 1), 0.5))
    with pytest.raises(AdvrecError, match=r"^l0=9 is above the attacked rows' dimension 8"):
        perturb(x, grad_fn, Attack("jsma", 0.5, l0=9))


def test_rank_salient_puts_excluded_entries_last() -> None:
    saliency = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.0, 0.2, 0.3, 0.1]])
    excluded = torch.tensor([[False, True, False, False], [False, False, True, False]])
    assert rank_salient(saliency, 2).tolist() == [[1, 3], [2, 1]]
    assert rank_salient(saliency, 4, excluded).tolist() == [[3, 2, 0, 1], [1, 3, 0, 2]]


@pytest.mark.parametrize("model_cls", [MF, NeuMF])
@pytest.mark.parametrize("steps", [1, 3])
def test_jsma_raises_a_models_loss(model_cls, steps: int) -> None:
    torch.manual_seed(0)
    model = MF(30, 40, 16) if model_cls is MF else NeuMF(30, 40, 16, [16, 8])
    emb, loss_at, grad_fn, _ = batch_loss(model)
    clean = loss_at({k: torch.zeros_like(v) for k, v in emb.items()})
    attacked = perturb(emb, grad_fn, Attack("jsma", 0.5, steps=steps, relative=True, l0=3))
    assert loss_at(attacked) > clean
    assert all(((d != 0).sum(-1) <= 3).all() for d in attacked.values())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepared_synth(tmp_path_factory.mktemp("jsma"), 30, 30, 400)


def test_training_with_jsma_runs_and_evaluate_gives_its_curve(dataset: str, tmp_path: Path) -> None:
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8},
                        "adv": {"method": "jsma", "eps": 0.5, "steps": 2, "l0": 2,
                                "relative": True},
                        "train": {"epochs": 2, "batch_size": 64},
                        "eval": {"ks": [5], "robust_every": 1, "robust_attack": "jsma"}})
    run = tmp_path / "run"
    metrics = run_training(cfg, str(run), progress=False)
    history = json.loads((run / "history.json").read_text())
    assert all(h["adv"] > 0 for h in history)  # the adversarial loss was computed every epoch
    assert "robust/ndcg@5" in history[-1] and 0 <= metrics["robust_valid"]["ndcg@5"] <= 1

    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "jsma", "--eps",
                 "0,1,4", "--steps", "2", "--l0", "3"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    assert sorted(curve) == ["jsma"] and sorted(curve["jsma"], key=float) == ["0.0", "1.0", "4.0"]
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert curve["jsma"]["0.0"]["ndcg@5"] == pytest.approx(test["ndcg@5"])
    # the attack moved the tables (that it raises the training loss is
    # tests/metrics/test_robustness.py's; on a random log the ranking may move either way)
    assert curve["jsma"]["4.0"] != curve["jsma"]["0.0"]
