import math

import pytest
import torch

from advrec.metrics import metrics_from_hits, topk_hits


def test_metrics_match_a_hand_computed_ranking() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5],   # user A ranks 0,1,2,3,4
                           [0.1, 0.2, 0.3, 0.4, 0.5]])  # user B ranks 4,3,2,1,0
    relevant = torch.zeros(2, 5, dtype=torch.bool)
    relevant[0, [1, 3]] = True  # A: relevant at ranks 2 and 4
    relevant[1, 4] = True       # B: relevant at rank 1
    hits = topk_hits(scores, relevant, 3)
    assert hits.tolist() == [[False, True, False], [True, False, False]]
    m = metrics_from_hits(hits, relevant.sum(1), [1, 3])
    l3 = 1 / math.log2(3)
    expected = {
        "hit@1": [0, 1], "recall@1": [0, 1], "precision@1": [0, 1], "mrr@1": [0, 1], "ndcg@1": [0, 1],
        "hit@3": [1, 1], "recall@3": [0.5, 1], "precision@3": [1 / 3, 1 / 3], "mrr@3": [0.5, 1],
        "ndcg@3": [l3 / (1 + l3), 1],
    }
    assert set(m) == set(expected)
    for name, values in expected.items():
        assert m[name].tolist() == pytest.approx(values), name


def test_masked_items_never_rank() -> None:
    scores = torch.tensor([[5.0, -torch.inf, 1.0, 0.0]])
    relevant = torch.tensor([[False, True, True, False]])
    hits = topk_hits(scores, relevant, 2)
    assert hits.tolist() == [[False, True]]


def test_k_larger_than_the_catalogue() -> None:
    scores = torch.tensor([[0.2, 0.1]])
    relevant = torch.tensor([[False, True]])
    m = metrics_from_hits(topk_hits(scores, relevant, 10), relevant.sum(1), [10])
    assert m["recall@10"].item() == 1.0
    assert m["ndcg@10"].item() == pytest.approx(1 / math.log2(3))
    assert m["precision@10"].item() == pytest.approx(0.1)
