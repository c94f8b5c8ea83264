"""JSMA on item histories (jsma-items): swapping a few items of each SASRec history, in
evaluation (`advrec evaluate --attack jsma-items`) and in training (`adv.method=jsma-items`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from advrec.adversarial import AdversarialObjective, Attack
from advrec.adversarial.jsma_items import swap_items
from advrec.adversarial.objective import one_position
from advrec.cli import main
from advrec.config import load_config
from advrec.data import prepare
from advrec.errors import AdvrecError
from advrec.metrics.history_attack import next_item_grad
from advrec.models import LOSSES
from advrec.models.losses import batch_loss
from advrec.models.sasrec import SASRec
from advrec.report import read_robustness
from advrec.train import run_training

N, D, L = 12, 8, 6  # items, dimension, history length


def _histories(generator: torch.Generator, users: int = 16) -> torch.Tensor:
    """(users, L) random histories of 1 to L items, left-padded with N."""
    seq = torch.randint(N, (users, L), generator=generator)
    lengths = torch.randint(1, L + 1, (users,), generator=generator)
    seq[torch.arange(L) < (L - lengths).unsqueeze(1)] = N
    return seq


def _linear_case():
    """A history model whose loss is linear in the history rows: user b's loss is
    Σ_p w_p · e_{seq[b, p]} · c_b. Linear, the first-order gain g_p·(e_j − e_i) of a swap is
    exactly what it changes the loss by, so the substitute is brute force's at any position.
    The position is brute force's too when ‖g_p‖ = w_p ‖c_b‖ orders the positions as their best
    gains do: here the weights grow 10× a position, and no history holds its user's most
    damaging item (at a position that holds it no swap gains, and JSMA, which ranks positions
    by the gradient's norm alone, spends that round on it: `swap_items` leaves it as it is)."""
    g = torch.Generator().manual_seed(3)
    catalogue = torch.randn(N, D, generator=g, dtype=torch.float64)
    table = torch.cat([catalogue, torch.zeros(1, D, dtype=torch.float64)])  # padding row: 0
    weights = 10.0 ** torch.arange(L, dtype=torch.float64)  # (L,)
    seq = _histories(g)
    c = torch.randn(seq.shape[0], D, generator=g, dtype=torch.float64)
    best = (c @ catalogue.T).argmax(1, keepdim=True)  # (B, 1) each user's most damaging item
    seq = torch.where(seq == best, (best + 1) % N, seq)

    def losses(s: torch.Tensor) -> torch.Tensor:  # (B,)
        return torch.einsum("bpd,p,bd->b", table[s], weights, c)

    def grad_fn(s: torch.Tensor) -> torch.Tensor:
        rows = table[s].requires_grad_(True)
        return torch.autograd.grad(torch.einsum("bpd,p,bd->", rows, weights, c), rows)[0]

    return seq, catalogue, losses, grad_fn


def test_budget_one_swaps_the_position_and_item_brute_force_finds() -> None:
    seq, catalogue, losses, grad_fn = _linear_case()
    attacked = swap_items(seq, grad_fn, catalogue, N, budget=1)
    clean = losses(seq)

    def swapped(b: int, p: int, j: int) -> torch.Tensor:
        s = seq.clone()
        s[b, p] = j
        return s

    for b in range(seq.shape[0]):
        # brute force: every real position, every other item, re-scored
        gains = {(p, j): float(losses(swapped(b, p, j))[b] - clean[b])
                 for p in range(L) if seq[b, p] != N for j in range(N) if j != seq[b, p]}
        (p, j), best = max(gains.items(), key=lambda kv: kv[1])
        assert best > 0
        expected = seq[b].clone()
        expected[p] = j
        assert attacked[b].tolist() == expected.tolist()


def test_budget_zero_changes_nothing_and_grad_fn_is_never_called() -> None:
    seq, catalogue, _, _ = _linear_case()

    def never(s: torch.Tensor) -> torch.Tensor:
        raise AssertionError("budget 0 needs no gradient")

    assert torch.equal(swap_items(seq, never, catalogue, N, budget=0), seq)


def test_greedy_one_fresh_gradient_per_round_the_first_given() -> None:
    seq, catalogue, _, grad_fn = _linear_case()
    seen: list[torch.Tensor] = []

    def counting(s: torch.Tensor) -> torch.Tensor:
        seen.append(s.clone())
        return grad_fn(s)

    three = swap_items(seq, counting, catalogue, N, budget=3, init_grad=grad_fn(seq))
    assert len(seen) == 2  # rounds 2 and 3, each at the history as the round before left it
    assert not torch.equal(seen[0], seq) and not torch.equal(seen[1], seen[0])
    assert torch.equal(swap_items(seq, grad_fn, catalogue, N, budget=3), three)


def _sasrec() -> SASRec:
    torch.manual_seed(0)
    return SASRec(num_users=16, num_items=N, dim=D, max_len=L, layers=1, heads=1,
                  dropout=0.0).eval()


def _next_item_losses(model: SASRec, seq: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B,) the cross-entropy of ``items`` (B,) as the next item after each history."""
    with torch.no_grad():
        return F.cross_entropy(model.rank_scores({"seq": seq}), items, reduction="none")


@pytest.mark.parametrize("budget", [1, 2, 3, L + 2])
def test_swaps_stay_on_real_positions_at_most_budget_and_raise_the_loss(budget: int) -> None:
    model = _sasrec()
    g = torch.Generator().manual_seed(1)
    seq, truth = _histories(g), torch.randint(N, (16,), generator=g)
    catalogue = model.all_items(torch.device("cpu")).detach()
    grad_fn = next_item_grad(model, catalogue, lambda logits: F.cross_entropy(
        logits, truth, reduction="sum"))
    attacked = swap_items(seq, grad_fn, catalogue, N, budget)
    changed = attacked != seq
    assert not changed[seq == N].any()  # padding never touched, never put in
    assert (attacked[seq != N] < N).all()
    assert (changed.sum(1) <= budget).all() and changed.any()
    assert (changed.sum(1) <= (seq != N).sum(1)).all()
    assert (_next_item_losses(model, attacked, truth) - _next_item_losses(model, seq, truth)
            ).mean() > 0


def test_similarity_keeps_every_substitute_close_to_the_item_it_replaces() -> None:
    model = _sasrec()
    g = torch.Generator().manual_seed(2)
    seq, truth = _histories(g), torch.randint(N, (16,), generator=g)
    catalogue = model.all_items(torch.device("cpu")).detach()
    grad_fn = next_item_grad(model, catalogue, lambda logits: F.cross_entropy(
        logits, truth, reduction="sum"))
    attacked = swap_items(seq, grad_fn, catalogue, N, 2, similarity=0.3)
    changed = attacked != seq
    assert changed.any()
    cosine = F.cosine_similarity(catalogue[attacked[changed]], catalogue[seq[changed]], dim=-1)
    assert (cosine >= 0.3).all()
    free = swap_items(seq, grad_fn, catalogue, N, 2)
    assert not torch.equal(free, attacked)  # the constraint bound some substitute


def test_targeted_raises_the_targets_score() -> None:
    model = _sasrec()
    seq = _histories(torch.Generator().manual_seed(4))
    catalogue = model.all_items(torch.device("cpu")).detach()
    target = torch.tensor([5])
    grad_fn = next_item_grad(model, catalogue, lambda logits: -F.cross_entropy(
        logits, target.repeat(16), reduction="sum"))
    attacked = swap_items(seq, grad_fn, catalogue, N, 2)
    before, after = (model.rank_scores({"seq": s}).detach() for s in (seq, attacked))
    # its log-probability and its rank among the items rise
    lift = after.log_softmax(-1)[:, 5] - before.log_softmax(-1)[:, 5]
    assert lift.mean() > 0 and (lift > 0).float().mean() > 0.5
    rank = [(s > s[:, 5:6]).sum(1).float().mean() for s in (before, after)]
    assert rank[1] < rank[0]


@pytest.mark.parametrize("negatives", ["sampled", "all"])
def test_the_objective_adds_lambda_times_the_loss_of_the_swapped_history(negatives: str) -> None:
    model = _sasrec().train()
    g = torch.Generator().manual_seed(5)
    seq = _histories(g)
    target = torch.where(seq == N, N, torch.randint(N, seq.shape, generator=g))
    batch = {"seq": seq, "mask": (seq != N) & (target != N)}
    if negatives == "all":  # every item a candidate: the full softmax
        batch["target"], loss = target, LOSSES["softmax"]
    else:  # the next item, then one sampled negative
        negative = torch.randint(N, seq.shape, generator=g)
        batch["item"], loss = torch.stack([target.clamp(max=N - 1), negative], -1), LOSSES["bce"]
    objective = AdversarialObjective(model, loss, Attack("jsma-items", 0.0, budget=2), lam=0.5)
    out = objective(batch, adversarial=True)
    assert out["adv"] > out["clean"]  # dropout 0: the swaps raised the training loss
    torch.testing.assert_close(out["loss"], out["clean"] + 0.5 * out["adv"])
    # L(x') is the whole model's loss on the swapped history, embedded from scratch here (the
    # objective reuses the candidates' rows of the clean pass)
    candidates = model.embed(batch)["item"].detach()

    def grad_fn(history: torch.Tensor) -> torch.Tensor:
        rows = model.item(history).detach().requires_grad_(True)
        logits = model.score({"item_seq": rows, "item": candidates}, {**batch, "seq": history})
        return torch.autograd.grad(batch_loss(loss, logits, batch), rows)[0]

    swapped = {**batch, "seq": swap_items(seq, grad_fn, model.all_items(seq.device), N, 2)}
    assert (swapped["seq"] != seq).any()
    torch.testing.assert_close(out["adv"], batch_loss(loss, model(swapped), swapped).detach())
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_one_position_keeps_one_masked_position_per_history_drawn_uniformly() -> None:
    g = torch.Generator().manual_seed(0)
    seq = _histories(g, users=64)
    mask = seq != N
    mask[0] = False  # a history with no position to count
    counts = torch.zeros(L)
    for seed in range(200):
        one = one_position({"seq": seq, "mask": mask}, torch.Generator().manual_seed(seed))
        kept = one["mask"]
        assert not (kept & ~mask).any() and kept.sum(1).tolist() == [0] + [1] * 63
        counts += kept[seq[:, 0] != N].sum(0)  # the histories that fill every position
    # every position of a full history is drawn about as often (1 / L each)
    assert (counts / counts.sum() - 1 / L).abs().max() < 0.05


def test_positions_one_swaps_before_one_position_and_trains_on_its_loss() -> None:
    # adv.positions=one: each history's swaps raise one random position's next-item loss, and
    # L(x') is that position's loss on the swapped history (the items after it cannot matter)
    model = _sasrec().train()
    g = torch.Generator().manual_seed(5)
    seq = _histories(g)
    target = torch.where(seq == N, N, torch.randint(N, seq.shape, generator=g))
    negative = torch.randint(N, seq.shape, generator=g)
    batch = {"seq": seq, "mask": (seq != N) & (target != N),
             "item": torch.stack([target.clamp(max=N - 1), negative], -1)}
    attack = Attack("jsma-items", 0.0, budget=2, positions="one")
    objective = AdversarialObjective(model, LOSSES["bce"], attack, lam=1.0)
    out = objective(batch, adversarial=True, generator=torch.Generator().manual_seed(9))
    goal = one_position(batch, torch.Generator().manual_seed(9))
    candidates = model.embed(batch)["item"].detach()

    def grad_fn(history: torch.Tensor) -> torch.Tensor:
        rows = model.item(history).detach().requires_grad_(True)
        logits = model.score({"item_seq": rows, "item": candidates}, {**goal, "seq": history})
        return torch.autograd.grad(batch_loss(LOSSES["bce"], logits, goal), rows)[0]

    swapped = {**goal, "seq": swap_items(seq, grad_fn, model.all_items(seq.device), N, 2)}
    changed = swapped["seq"] != seq
    assert changed.any()
    position = goal["mask"].float().argmax(1, keepdim=True)  # (B, 1) each history's one
    assert not (changed & (torch.arange(L) > position)).any()
    torch.testing.assert_close(out["adv"], batch_loss(LOSSES["bce"], model(swapped),
                                                      swapped).detach())
    assert out["adv"] > batch_loss(LOSSES["bce"], model(goal), goal)  # the swaps raised it


@pytest.fixture(scope="module")
def loo(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("jsma-items") / "loo"
    prepare(str(udata_small), "movielens", str(out), split="loo", seed=0)
    return str(out)


@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_training_against_jsma_items_and_its_budget_curves(loo: str, protocol: str,
                                                           tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.source={loo}", "model.name=sasrec", "model.dim=16",
                             "model.max_len=20", "adv.method=jsma-items", "adv.budget=2",
                             "train.epochs=2", "train.batch_size=32", "train.loss=bce",
                             "eval.ks=[10]", "eval.batch_users=40", f"eval.protocol={protocol}"])
    run = tmp_path / "run"
    run_training(cfg, str(run), progress=False)
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2 and all(h["adv"] > 0 for h in history)

    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "fgm,jsma-items",
                 "--eps", "0,0.5", "--budget", "0,1,3"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    assert sorted(curve) == ["fgm", "jsma-items"] and sorted(curve["fgm"]) == ["0.0", "0.5"]
    points = curve["jsma-items"]["budget"]
    assert sorted(points) == ["0", "1", "3"]
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert points["0"]["ndcg@10"] == pytest.approx(test["ndcg@10"])  # the run's protocol
    assert points["3"]["ndcg@10"] < points["0"]["ndcg@10"]

    raw = ["50", "181"]
    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "jsma-items",
                 "--budget", "0,2", "--target-items", ",".join(raw)]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    targeted = curve["jsma-items:targeted"]
    assert targeted["targets"] == raw and sorted(targeted["budget"]) == ["0", "2"]
    assert curve["jsma-items"]["budget"] == points  # the untargeted curve is kept
    hit = [targeted["budget"][b]["target/hr@50"] for b in ("0", "2")]
    assert hit[1] > hit[0]  # the targets' hit rate rose
    assert main(["plot", str(run), "--output", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 0


@pytest.mark.parametrize("section, valid", [
    ({"budget": {"0": {"ndcg@5": 0.3}, "2": {"ndcg@5": 0.1}}}, True),
    ({"budget": {"0": {"ndcg@5": 0.3}}, "targets": ["7"]}, True),
    ({"budget": {"1.5": {"ndcg@5": 0.3}}}, False),  # a budget counts items
    ({"budget": {}}, False),
    ({"budget": {"1": {"ndcg@5": 0.3}}, "eps": 3}, False),
])
def test_robustness_json_takes_budget_curves_beside_eps_curves(section: dict, valid: bool,
                                                               tmp_path: Path) -> None:
    (tmp_path / "robustness.json").write_text(json.dumps(
        {"fgm": {"0.0": {"ndcg@5": 0.3}}, "jsma-items": section}))
    if valid:
        assert read_robustness(str(tmp_path), ["ndcg@5"])["jsma-items"] == section
    else:
        with pytest.raises(AdvrecError, match="not a robustness curve"):
            read_robustness(str(tmp_path))


def test_two_ray_train_workers_train_against_it_and_share_its_curve(
        loo: str, tmp_path: Path, ray_local: None) -> None:
    # training: the objective (swaps included) under DDP on 2 Ray Train workers; evaluation:
    # each worker attacks and ranks its share of the users (in the sampled protocol every
    # worker scores every chunk, its own rows or a stand-in), and the curve is one process's
    shared = tmp_path / "shared"
    assert main(["train", "--output", str(shared), "--quiet", f"data.source={loo}",
                 "model.name=sasrec", "model.dim=16", "model.max_len=20",
                 "adv.method=jsma-items", "train.epochs=1", "train.batch_size=32",
                 "train.loss=bce", "eval.ks=[10]", "eval.batch_users=30",
                 "eval.protocol=sampled", "scaling.num_workers=2"]) == 0
    assert json.loads((shared / "history.json").read_text())[0]["adv"] > 0
    alone = tmp_path / "alone"
    shutil.copytree(shared, alone)
    for where, workers in ((shared, "2"), (alone, "0")):
        assert main(["evaluate", "--run", str(where), "--quiet", "--attack", "jsma-items",
                     "--budget", "0,2", "--target-items", "50", "--workers", workers]) == 0
    two, one = (json.loads((where / "robustness.json").read_text())["jsma-items:targeted"]
                for where in (shared, alone))
    for budget in ("0", "2"):
        for metric in ("ndcg@10", "hit@10", "target/hr@50"):
            assert two["budget"][budget][metric] == pytest.approx(
                one["budget"][budget][metric], abs=1e-6), (budget, metric)
