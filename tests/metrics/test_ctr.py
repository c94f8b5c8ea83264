import math

import pytest
import torch

from advrec.errors import AdvrecError
from advrec.metrics.ctr import auc, ctr_metrics, gauc, logloss


def pairwise_auc(scores: list[float], labels: list[int]) -> float:
    """O(N^2) reference: the share of (positive, negative) pairs ranked right, ties as 1/2."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def loop_gauc(scores: list[float], labels: list[int], groups: list[int]) -> float:
    """Reference gAUC: a loop over groups, weights = group size, one-class groups skipped."""
    total = weight = 0.0
    for g in set(groups):
        idx = [i for i, gi in enumerate(groups) if gi == g]
        ys = [labels[i] for i in idx]
        if 0 < sum(ys) < len(ys):
            total += len(idx) * pairwise_auc([scores[i] for i in idx], ys)
            weight += len(idx)
    return total / weight


def test_auc_hand_computed() -> None:
    # Pairs (pos, neg): (0.35, 0.1) right, (0.35, 0.4) wrong, (0.8, *) right -> 3/4.
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(torch.tensor([0.9, 0.1]), torch.tensor([1, 0])) == 1.0
    assert auc(torch.tensor([0.9, 0.1]), torch.tensor([0, 1])) == 0.0


def test_auc_ties_count_half() -> None:
    assert auc(torch.full((6,), 0.3), torch.tensor([0, 1, 0, 1, 1, 0])) == pytest.approx(0.5)
    # One tied (pos, neg) pair out of four: (1 + 1 + 0.5 + 1) / 4.
    scores, labels = torch.tensor([0.2, 0.5, 0.5, 0.9]), torch.tensor([0, 0, 1, 1])
    assert auc(scores, labels) == pytest.approx(0.875)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_reference_with_ties(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 200
    scores = torch.randint(0, 15, (n,), generator=gen).float() / 7  # few values: many ties
    labels = torch.randint(0, 2, (n,), generator=gen)
    expected = pairwise_auc(scores.tolist(), labels.tolist())
    assert auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    # Bool and float labels give the same value.
    assert auc(scores, labels.bool()) == pytest.approx(expected, abs=1e-12)
    assert auc(scores, labels.float()) == pytest.approx(expected, abs=1e-12)


def test_gauc_hand_computed_weights_and_single_class_groups() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.9, 0.2, 0.7, 0.3, 0.6])
    labels = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 0])
    groups = torch.tensor([7, 7, 7, 7, 3, 3, 5, 5, 5])
    # Group 7: AUC 0.75 over 4 examples; group 3: AUC 1 over 2; group 5: AUC 1 over 3.
    expected = (4 * 0.75 + 2 * 1.0 + 3 * 1.0) / 9
    assert gauc(scores, labels, groups) == pytest.approx(expected)
    # A group with one class only (id 9, positives only) changes neither sum nor weights.
    scores2 = torch.cat([scores, torch.tensor([0.0, 0.05])])
    labels2 = torch.cat([labels, torch.tensor([1, 1])])
    groups2 = torch.cat([groups, torch.tensor([9, 9])])
    assert gauc(scores2, labels2, groups2) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_gauc_matches_loop_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 300
    scores = torch.randint(0, 10, (n,), generator=gen).float()  # ties within and across groups
    labels = (torch.rand(n, generator=gen) < 0.3).long()
    groups = torch.randint(0, 40, (n,), generator=gen) * 13 - 100  # sparse, negative ids
    expected = loop_gauc(scores.tolist(), labels.tolist(), groups.tolist())
    assert gauc(scores, labels, groups) == pytest.approx(expected, abs=1e-12)
    # Shuffling the examples does not change it.
    perm = torch.randperm(n, generator=gen)
    assert gauc(scores[perm], labels[perm], groups[perm]) == pytest.approx(expected, abs=1e-12)


def test_gauc_with_one_group_is_auc() -> None:
    gen = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(50, generator=gen), torch.randint(0, 2, (50,), generator=gen)
    assert gauc(scores, labels, torch.zeros(50, dtype=torch.long)) == pytest.approx(
        auc(scores, labels))


def test_logloss_matches_hand_formula() -> None:
    logits = torch.tensor([2.0, -1.0, 0.0, 3.5])
    labels = torch.tensor([1, 0, 1, 0])

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    expected = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(sig(0.0))
                 + math.log(1 - sig(3.5))) / 4
    assert logloss(logits, labels) == pytest.approx(expected)


def test_logloss_is_finite_for_confident_logits() -> None:
    value = logloss(torch.tensor([200.0, -200.0]), torch.tensor([0.0, 1.0]))
    assert value == pytest.approx(200.0)


def test_ctr_metrics_keys_and_values() -> None:
    logits = torch.tensor([-2.2, -0.4, -0.6, 1.4])
    labels = torch.tensor([0, 0, 1, 1])
    groups = torch.tensor([1, 1, 1, 1])
    m = ctr_metrics(logits, labels, groups)
    assert set(m) == {"auc", "logloss", "gauc"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["auc"] == pytest.approx(0.75)
    assert m["auc"] == pytest.approx(auc(torch.sigmoid(logits), labels))
    assert m["gauc"] == pytest.approx(0.75)
    assert m["logloss"] == pytest.approx(logloss(logits, labels))


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.2, 0.3], [1, 1, 1], "both classes"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "both classes"),
        ([], [], "both classes"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "labels must be 0 or 1"),
        ([0.1, 0.2, 0.3], [0.0, 0.5, 1.0], "labels must be 0 or 1"),
        ([0.1, 0.2, 0.3], [0, 1], "same shape"),
        ([0.1, float("nan"), 0.3], [0, 1, 0], "NaN"),
    ],
)
def test_auc_errors(scores: list[float], labels: list[float], match: str) -> None:
    with pytest.raises(AdvrecError, match=match) as err:
        auc(torch.tensor(scores), torch.tensor(labels))
    assert "\n" not in str(err.value)


def test_gauc_errors() -> None:
    scores, labels = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0, 1, 0, 1])
    with pytest.raises(AdvrecError, match="no group has both classes"):
        gauc(scores, labels, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(AdvrecError, match="groups must have the shape"):
        gauc(scores, labels, torch.tensor([0, 1]))
    with pytest.raises(AdvrecError, match="labels must be 0 or 1"):
        gauc(scores, torch.tensor([0, 1, 3, 1]), torch.tensor([0, 0, 0, 0]))
    with pytest.raises(AdvrecError, match="NaN"):
        gauc(torch.tensor([0.1, float("nan"), 0.3, 0.4]), labels, torch.tensor([0, 0, 0, 0]))


def test_logloss_errors() -> None:
    with pytest.raises(AdvrecError, match="same shape"):
        logloss(torch.tensor([0.1, 0.2]), torch.tensor([1.0]))
    with pytest.raises(AdvrecError, match="non-empty"):
        logloss(torch.tensor([]), torch.tensor([]))
