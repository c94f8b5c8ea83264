import pytest
import torch
import torch.nn.functional as F

from advrec.adversarial import Attack
from advrec.config import EvalConfig
from advrec.metrics import evaluate, robustness_curve, shifted_tables, table_attack
from advrec.models import LOSSES, MF
from advrec.train.tasks import PairTask


def training_batches(data, batch_size: int, seed: int):
    """All training pairs in order, each with one negative fixed by ``seed`` (APR's protocol)."""
    generator = torch.Generator().manual_seed(seed)
    return list(PairTask(data, 1).batches(batch_size, generator, shuffle=False))


@pytest.fixture
def data(make_dataset):
    g = torch.Generator().manual_seed(0)
    pairs = {(int(u), int(i)) for u, i in zip(torch.randint(8, (60,), generator=g),
                                              torch.randint(12, (60,), generator=g))}
    pairs = sorted(pairs)
    # user 9 exists but has no training interaction: its row must not move
    return make_dataset(10, 13, train=pairs[:-8], valid=pairs[-8:-4], test=pairs[-4:])


def test_fgm_follows_apr_protocol_by_hand(data) -> None:
    torch.manual_seed(0)
    model = MF(10, 13, 4)
    batches = training_batches(data, batch_size=7, seed=3)  # several batches, summed
    delta = table_attack(model, batches, LOSSES["bpr"], Attack("fgm", 0.5))

    # the same gradient by hand: BPR summed over every (u, i, j) triple, on leaf tables
    P = model.user.weight.detach().clone().requires_grad_(True)
    Q = model.item.weight.detach().clone().requires_grad_(True)
    items = torch.cat([b["item"] for b in batches])
    users = torch.cat([b["user"] for b in batches])
    x = (P[users] * (Q[items[:, 0]] - Q[items[:, 1]])).sum(-1)
    (-F.logsigmoid(x)).sum().backward()
    for name, grad in (("user", P.grad), ("item", Q.grad)):
        expected = 0.5 * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        torch.testing.assert_close(delta[name], expected)
    assert delta["user"][9].abs().sum() == 0
    trained = data.train.user.unique()
    assert torch.allclose(delta["user"][trained].norm(dim=1), torch.tensor(0.5))


def test_training_batches_pair_each_interaction_with_a_true_negative(data) -> None:
    batches = training_batches(data, batch_size=5, seed=0)
    users = torch.cat([b["user"] for b in batches])
    items = torch.cat([b["item"] for b in batches])
    assert torch.equal(users, data.train.user) and torch.equal(items[:, 0], data.train.item)
    positives = set(zip(data.train.user.tolist(), data.train.item.tolist()))
    assert not any((u, j) in positives for u, j in zip(users.tolist(), items[:, 1].tolist()))


def loss_under(model, batches, delta):
    """The summed training BPR loss over ``batches`` with ``delta`` added to the tables."""
    with shifted_tables(model, delta), torch.no_grad():
        return sum(LOSSES["bpr"](model(b)) * b["user"].numel() for b in batches)


def test_pgd_hurts_the_training_loss_at_least_as_much_as_fgm(data) -> None:
    torch.manual_seed(0)
    model = MF(10, 13, 4)
    batches = training_batches(data, batch_size=64, seed=0)

    fgm = loss_under(model, batches, table_attack(model, batches, LOSSES["bpr"], Attack("fgm", 0.3)))
    pgd = loss_under(model, batches, table_attack(model, batches, LOSSES["bpr"], Attack("pgd", 0.3, steps=10)))
    clean = loss_under(model, batches, {})
    assert clean < fgm <= pgd + 1e-5


def test_shifted_tables_restores_the_weights(data) -> None:
    model = MF(10, 13, 4)
    before = model.user.weight.detach().clone()
    with shifted_tables(model, {"user": torch.ones_like(before)}):
        assert torch.allclose(model.user.weight, before + 1)
    assert torch.equal(model.user.weight, before)


def test_curve_at_eps_zero_is_the_clean_evaluation(data) -> None:
    torch.manual_seed(0)
    model = MF(10, 13, 4)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = EvalConfig(ks=[5], attacks=["fgm", "pgd"], eps=[0.0, 0.5], steps=3)
    curve = robustness_curve(model, PairTask(data, 1), LOSSES["bpr"], cfg,
                             training_batches(data, 16, 0), progress=False)
    clean = evaluate(model, data, "test", cfg)
    assert curve["fgm"]["0.0"] == clean == curve["pgd"]["0.0"]
    assert set(curve["pgd"]) == {"0.0", "0.5"}
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_relative_attack_moves_each_row_by_eps_times_its_norm(data) -> None:
    torch.manual_seed(0)
    model = MF(10, 13, 4)
    delta = table_attack(model, training_batches(data, 16, 0), LOSSES["bpr"],
                         Attack("fgm", 0.2, relative=True))
    for name, table in model.tables().items():
        moved = delta[name].norm(dim=-1) > 0  # rows some training interaction touches
        assert moved.any()
        torch.testing.assert_close(delta[name].norm(dim=-1)[moved],
                                   0.2 * table.weight.detach().norm(dim=-1)[moved])


@pytest.mark.parametrize("steps", [1, 3])
def test_jsma_moves_l0_coordinates_of_the_trained_rows_and_raises_the_loss(data, steps) -> None:
    torch.manual_seed(0)
    model = MF(10, 13, 8)
    batches = training_batches(data, batch_size=16, seed=0)

    delta = table_attack(model, batches, LOSSES["bpr"], Attack("jsma", 0.3, steps=steps, l0=2))
    assert loss_under(model, batches, delta) > loss_under(model, batches, {})
    trained = data.train.user.unique()
    assert ((delta["user"][trained] != 0).sum(-1) == 2).all()
    assert delta["user"][trained].abs().amax() == pytest.approx(0.3)
    assert delta["user"][9].abs().sum() == 0  # no training interaction, no gradient: unmoved
    assert ((delta["item"] != 0).sum(-1) <= 2).all()
