"""T-HR@K and T-NDCG@K against a hand-computed case: masked positives, users who interacted with
a target left out of its average, fake users never counted; and the target items read from a
targets.json through the dataset's item vocabulary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from advrec.config import build_config
from advrec.data.dataset import Dataset, Interactions
from advrec.errors import AdvrecError
from advrec.metrics.target import (
    TargetItems,
    TargetMetrics,
    check_targets_reported,
    read_targets,
    target_hits,
)
from advrec.models.base import Batch, Recommender
from synthetic import prepared_synth


class FixedScores(Recommender):
    """Ranks every item by a fixed score matrix (users, items), whatever it is asked."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def rank_scores(self, context: Batch, max_pairs: int = 1 << 14) -> torch.Tensor:
        return self.scores[context["user"]].clone()


def _pairs(pairs: list[tuple[int, int]]) -> Interactions:
    users, items = zip(*pairs)
    return Interactions(user=torch.tensor(users), item=torch.tensor(items))


@pytest.fixture
def poisoned() -> Dataset:
    """3 genuine users and one fake (user 3), 6 items, targets 4 and 5.

    User 0: train {0, 1}, valid {2}. User 1: train {5} (so not counted for target 5). User 2:
    train {2}, test {4} (not counted for target 4). User 3, fake: train {4, 5}.
    """
    return Dataset(url="", num_users=4, num_items=6,
                   meta={"num_users": 4, "poison": {"genuine_users": 3, "fake_users": 1,
                                                    "targets": [4, 5]}},
                   train=_pairs([(0, 0), (0, 1), (1, 5), (2, 2), (3, 4), (3, 5)]),
                   valid=_pairs([(0, 2)]), test=_pairs([(2, 4)]))


SCORES = torch.tensor([[9.0, 8.0, 7.0, 5.0, 4.0, 6.0],
                       [6.0, 8.0, 7.0, 5.0, 4.0, 9.0],
                       [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                       [0.0, 0.0, 0.0, 0.0, 9.0, 9.0]])  # the fake ranks both targets first


def _context(users: torch.Tensor, split: str) -> Batch:
    return {"user": users}


TARGETS = TargetItems("targets.json", ["i4", "i5"], [4, 5])


def test_test_split_hand_computed(poisoned: Dataset) -> None:
    metrics = TargetMetrics(poisoned, TARGETS, k=3)
    assert metrics.users.tolist() == [2, 2]  # target 4: users 0, 1; target 5: users 0, 2
    # test masks train and valid. User 0 ranks 5, 3, 4 (0, 1, 2 masked): target 4 at rank 2
    # (ndcg 1/log2(4)), target 5 at rank 0. User 1 ranks 1, 2, 0, 3, 4: target 4 at rank 4,
    # a miss at k=3. User 2 ranks 5, 4, 3, 1, 0: target 5 at rank 0 (its target 4 not counted)
    got = metrics(FixedScores(SCORES), "test", _context, batch_users=2)
    hr = ((1 + 0) / 2 + (1 + 1) / 2) / 2
    ndcg = ((1 / math.log2(4) + 0) / 2 + (1 + 1) / 2) / 2
    assert got == pytest.approx({"hr@3": hr, "ndcg@3": ndcg})
    assert got["hr@3"] == pytest.approx(0.75) and got["ndcg@3"] == pytest.approx(0.625)


def test_valid_split_masks_train_only(poisoned: Dataset) -> None:
    # user 0 ranks 2, 5, 3, 4 (valid item 2 not masked): target 5 at rank 1, target 4 at 3
    got = TargetMetrics(poisoned, TARGETS, k=3)(FixedScores(SCORES), "valid", _context, 1)
    assert got == pytest.approx({"hr@3": (0 + 1) / 2,
                                 "ndcg@3": (0 + (1 / math.log2(3) + 1) / 2) / 2})


def test_chunks_and_shards_of_users_do_not_change_the_result(poisoned: Dataset) -> None:
    metrics = TargetMetrics(poisoned, TARGETS, k=3)
    whole = metrics(FixedScores(SCORES), "test", _context, batch_users=1024)
    assert metrics(FixedScores(SCORES), "test", _context, batch_users=1) == pytest.approx(whole)


def test_target_hits_per_user_and_target() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, -torch.inf], [0.3, 0.2, 0.1, 0.0]])
    out = target_hits(scores, torch.tensor([2, 0]), k=2)
    # row 0 ranks 1, 2, 0: target 2 at rank 1, target 0 at rank 2 (a miss); row 1 ranks 0 first
    assert out["hr"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert out["ndcg"].flatten().tolist() == pytest.approx([1 / math.log2(3), 0.0, 0.0, 1.0])


def test_a_target_every_genuine_user_had_is_an_error(poisoned: Dataset) -> None:
    everyone = TargetItems("t.json", ["i0"], [0])
    data = Dataset(url="", num_users=4, num_items=6, meta=poisoned.meta,
                   train=_pairs([(0, 0), (1, 0), (2, 0), (3, 1)]), valid=poisoned.valid,
                   test=poisoned.test)
    with pytest.raises(AdvrecError, match=r"t.json: target item 'i0': every genuine user"):
        TargetMetrics(data, everyone, k=3)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepared_synth(tmp_path_factory.mktemp("targets"), 30, 40, 400)


def test_raw_ids_map_through_the_item_vocabulary(clean: str, tmp_path: Path) -> None:
    vocab = pq.read_table(f"{clean}/items.parquet").to_pylist()
    chosen = [vocab[7], vocab[3]]
    path = tmp_path / "targets.json"
    path.write_text(json.dumps({"items": [r["raw_id"] for r in chosen], "attack": "random"}))
    got = read_targets(str(path), clean)
    assert got.indices == [7, 3] and got.items == [vocab[7]["raw_id"], vocab[3]["raw_id"]]


@pytest.mark.parametrize("spec, culprit", [
    ({"items": ["no-such-item"]}, "item 'no-such-item' is not an item of"),
    ({"items": []}, "not a targets.json"),
    ({"items": [True]}, "not a targets.json"),
    ([1, 2], "not a targets.json"),
])
def test_bad_targets_are_one_line_naming_the_culprit(clean: str, tmp_path: Path, spec,
                                                     culprit: str) -> None:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(AdvrecError, match=culprit) as err:
        read_targets(str(path), clean)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_raw_id_twice_is_an_error(clean: str, tmp_path: Path) -> None:
    raw = pq.read_table(f"{clean}/items.parquet")["raw_id"][0].as_py()
    path = tmp_path / "targets.json"
    path.write_text(json.dumps({"items": [raw, raw]}))
    with pytest.raises(AdvrecError, match="is listed twice"):
        read_targets(str(path), clean)


def test_target_hr_is_minimised_and_needs_targets(clean: str) -> None:
    cfg = build_config({"data": {"source": clean}, "tune": {"metric": "target/hr@50"}})
    assert cfg.tune_metric() == ("target/hr@50", "min")
    cfg = build_config({"data": {"source": clean}, "eval": {"target_k": 10},
                        "tune": {"metric": "target/ndcg@10"}})
    assert cfg.tune_metric() == ("target/ndcg@10", "min")
    with pytest.raises(AdvrecError, match="tune.metric: 'target/ndcg@10' needs target items"):
        check_targets_reported(cfg, None, clean)
    check_targets_reported(cfg, TARGETS, clean)  # with targets it is reported
