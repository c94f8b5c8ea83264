import math

import pytest
import torch

from advrec.config import EvalConfig
from advrec.metrics import evaluate


def _scores() -> torch.Tensor:
    # user 0 prefers 0 > 1 > 2 > 5 > 3 > 4; user 1 prefers 5 > 1 > 2 > 0 > 3 > 4
    return torch.tensor([[9.0, 8.0, 7.0, 5.0, 4.0, 6.0],
                         [6.0, 8.0, 7.0, 5.0, 4.0, 9.0]])


def test_full_ranking_masks_train_and_valid_items(tiny, fixed_model) -> None:
    model = fixed_model(_scores())
    m = evaluate(model, tiny, "test", EvalConfig(ks=[1, 3]))
    # user 0: train {0,1} and valid {2} masked -> ranking 5, 3, 4: hits at ranks 2 and 3
    # user 1: train {5} masked -> ranking 1, 2, 0, 3, 4: the test item 0 at rank 3
    l2, l3, l4 = 1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)
    ndcg_u0 = (l3 + l4) / (l2 + l3)
    assert m["hit@1"] == 0.0
    assert m["hit@3"] == 1.0
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert m["ndcg@3"] == pytest.approx((ndcg_u0 + l4 / l2) / 2)


def test_valid_split_masks_only_train_and_skips_users_without_items(tiny, fixed_model) -> None:
    m = evaluate(fixed_model(_scores()), tiny, "valid", EvalConfig(ks=[1], batch_users=1))
    # only user 0 has a valid item (2); train {0,1} masked -> item 2 ranks first
    assert m["hit@1"] == 1.0 and m["ndcg@1"] == 1.0


def test_chunking_does_not_change_the_result(tiny, fixed_model) -> None:
    model = fixed_model(_scores())
    one = evaluate(model, tiny, "test", EvalConfig(ks=[1, 3], batch_users=1))
    all_ = evaluate(model, tiny, "test", EvalConfig(ks=[1, 3], batch_users=1024))
    assert one == pytest.approx(all_)


def test_sampled_protocol(tiny, fixed_model) -> None:
    best = torch.full((2, 6), -1.0)
    best[0, [3, 4]] = 1.0  # test items score highest
    best[1, 0] = 1.0
    cfg = EvalConfig(ks=[1], protocol="sampled", num_negatives=3)
    assert evaluate(fixed_model(best), tiny, "test", cfg)["hit@1"] == 1.0
    assert evaluate(fixed_model(-best), tiny, "test", cfg)["hit@1"] == 0.0
