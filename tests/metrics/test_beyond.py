"""Beyond-accuracy metrics (`eval.beyond`): a hand-computed case, RecBole's formulas on the same
lists, and the config's bad input (the CLI's `advrec train` and `advrec evaluate --beyond`:
tests/test_cli.py)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from advrec.config import EvalConfig, load_config
from advrec.errors import AdvrecError
from advrec.metrics import evaluate
from advrec.metrics.ranking import topk_items
from advrec.models.mf import MF

ITEMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])  # q_0 .. q_3


def _mf(users: torch.Tensor, items: torch.Tensor) -> MF:
    model = MF(users.shape[0], items.shape[0], users.shape[1])
    with torch.no_grad():
        model.user.weight.copy_(users)
        model.item.weight.copy_(items)
    return model


def test_a_hand_computed_case(make_dataset) -> None:
    # user scores: u0 2, 1, 3, -2; u1 1, 2, 3, -1; u2 -1, 0.5, -0.5, 1. Training (masked, and the
    # popularity): u0-3, u1-3, u2-0, so the top-2 lists are [2, 0], [2, 1], [3, 1]
    model = _mf(torch.tensor([[2.0, 1.0], [1.0, 2.0], [-1.0, 0.5]]), ITEMS)
    data = make_dataset(3, 4, train=[(0, 3), (1, 3), (2, 0)], valid=[],
                        test=[(0, 1), (1, 0), (2, 2)])
    m = evaluate(model, data, "test", EvalConfig(ks=[1, 2], beyond=True, tail_ratio=0.25))
    # recommendations per item at k=2: 1, 2, 2, 1 of 6; at k=1 ([2], [2], [3]): 0, 0, 2, 1 of 3
    assert m["coverage@2"] == 1.0 and m["coverage@1"] == 0.5
    assert m["gini@2"] == pytest.approx((-3 * 1 - 1 * 1 + 1 * 2 + 3 * 2) / 6 / 4)
    assert m["gini@1"] == pytest.approx((1 * 1 + 3 * 2) / 3 / 4)
    assert m["entropy@2"] == pytest.approx(
        -(2 * (1 / 6) * math.log(1 / 6) + 2 * (1 / 3) * math.log(1 / 3)) / 4)
    # popularity 1, 0, 0, 2: the tail (a quarter of 4 items) is item 1, the first of the least
    # popular; self-information log2(4 / (users + 1)): 1, 2, 2, log2(4/3)
    assert m["avgpop@2"] == pytest.approx(((0 + 1) / 2 + 0 + (2 + 0) / 2) / 3)
    assert m["tail@2"] == pytest.approx((0 + 1 / 2 + 1 / 2) / 3)
    assert m["novelty@2"] == pytest.approx(((2 + 1) / 2 + 2 + (math.log2(4 / 3) + 2) / 2) / 3)
    # cosines: (q2, q0) and (q2, q1) 1/sqrt(2), (q3, q1) 0
    assert m["ild@2"] == pytest.approx((2 * (1 - 1 / math.sqrt(2)) + 1) / 3)
    assert m["ild@1"] == 0.0
    assert m["ndcg@2"] == evaluate(model, data, "test", EvalConfig(ks=[1, 2]))["ndcg@2"]

    # K above a user's unseen items: each list ends there ([2, 0, 1], [2, 1, 0], [3, 1, 2]),
    # the masked item never counted
    m = evaluate(model, data, "test", EvalConfig(ks=[4], beyond=True, tail_ratio=0.25))
    assert m["coverage@4"] == 1.0
    assert m["gini@4"] == pytest.approx((-3 * 1 - 1 * 2 + 1 * 3 + 3 * 3) / 9 / 4)
    assert m["avgpop@4"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    assert m["tail@4"] == pytest.approx(1 / 3)


def _recbole(lists: np.ndarray, counts: dict[int, int], num_items: int,
             tail_ratio: float) -> dict[str, float]:
    """RecBole 1.2's ItemCoverage, GiniIndex, ShannonEntropy, AveragePopularity and
    TailPercentage (recbole/evaluator/metrics.py), on top-k ``lists`` (U, k) and training
    ``counts`` (item -> interactions)."""
    seen = Counter(lists.flatten().tolist())
    total = lists.size
    ordered = np.array(sorted(seen.values()))
    idx = np.arange(num_items - len(ordered) + 1, num_items + 1)
    entropy = sum(-c / total * np.log(c / total) for c in seen.values()) / len(seen)
    popular = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))
    tail = {i for i, _ in popular[:max(int(len(popular) * tail_ratio), 1)]}
    return {"coverage": len(np.unique(lists)) / num_items,
            "gini": float(np.sum((2 * idx - num_items - 1) * ordered) / total / num_items),
            "entropy": float(entropy),
            "avgpop": float(np.mean([[counts.get(i, 0) for i in row] for row in lists])),
            "tail": float(np.mean([[i in tail for i in row] for row in lists]))}


def test_recboles_formulas_on_the_same_lists(make_dataset) -> None:
    generator = torch.Generator().manual_seed(0)
    users, items, k = 40, 30, 5
    # every item has training interactions (RecBole ranks only those for its tail), and each
    # user a test item
    train = [(u, i) for u in range(users) for i in range(items)
             if torch.rand(1, generator=generator) < 0.15 or i == u % items]
    train = list(dict.fromkeys(train))
    test = [(u, (u * 7 + 3) % items) for u in range(users) if (u, (u * 7 + 3) % items) not in train]
    data = make_dataset(users, items, train=train, valid=[], test=test)
    model = _mf(torch.randn(users, 4, generator=generator), torch.randn(items, 4, generator=generator))
    m = evaluate(model, data, "test", EvalConfig(ks=[k], beyond=True, tail_ratio=0.2))

    # the same lists, by hand: every item but the user's training ones
    evaluated = sorted({u for u, _ in test})
    scores = model.user.weight[evaluated] @ model.item.weight.T
    for row, u in enumerate(evaluated):
        scores[row, [i for v, i in train if v == u]] = -torch.inf
    lists = topk_items(scores.detach(), k).numpy()
    counts = Counter(i for _, i in train)
    for name, value in _recbole(lists, counts, items, 0.2).items():
        assert m[f"{name}@{k}"] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("overrides, culprit", [
    (["eval.beyond=true", "eval.protocol=sampled"], "beyond"),
    (["eval.beyond=true", "model.name=deepfm"], "eval.beyond: model.name=deepfm"),
    (["eval.tail_ratio=0"], "eval.tail_ratio"),
    (["train.monitor=gini@20"], "train.monitor"),  # reported with eval.beyond only
])
def test_bad_config(overrides: list[str], culprit: str) -> None:
    with pytest.raises(AdvrecError, match=culprit):
        load_config(None, ["data.source=log.csv", *overrides])


def test_beyond_metrics_can_be_monitored_and_gini_goes_down() -> None:
    def monitor(name: str) -> tuple[str, bool]:
        return load_config(None, ["data.source=log.csv", "eval.beyond=true",
                                  f"train.monitor={name}"]).monitor()

    assert monitor("gini@10") == ("gini@10", False) and monitor("avgpop@20")[1] is False
    assert monitor("coverage@20")[1] and monitor("ild@10")[1]
