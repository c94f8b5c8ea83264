import dataclasses
import json
from pathlib import Path

import pytest
import torch

from advrec.cli import main
from advrec.data.dataset import Dataset, Interactions, load_dataset
from advrec.errors import AdvrecError
from advrec.metrics.ctr import ctr_metrics
from advrec.models.base import Recommender
from advrec.train import read_run
from advrec.train.tasks import LabelledTask, PairTask, SequenceTask, histories

P = 9  # the padding id of a 9-item catalogue


def _inter(pairs: list[tuple[int, int]]) -> Interactions:
    u, i = zip(*pairs)
    return Interactions(user=torch.tensor(u), item=torch.tensor(i))


@pytest.fixture
def data() -> Dataset:
    # user 0: train 1 2 3 4, valid 5, test 6; user 1: train 7 8, valid 0, test 2; user 2: train 3
    return Dataset(url="", num_users=3, num_items=9, meta={},
                   train=_inter([(0, 1), (0, 2), (0, 3), (0, 4), (1, 7), (1, 8), (2, 3)]),
                   valid=_inter([(0, 5), (1, 0)]), test=_inter([(0, 6), (1, 2)]))


def test_histories_keep_the_latest_items_left_padded(data: Dataset) -> None:
    h = histories([data.train, data.valid], 3, 3, P)
    assert h.tolist() == [[3, 4, 5], [7, 8, 0], [P, P, 3]]


def test_sequence_batches_shift_by_one_and_mask_padding(data: Dataset) -> None:
    task = SequenceTask(data, max_len=3, num_negatives=2)
    batch = next(task.batches(8, torch.Generator().manual_seed(0), shuffle=False))
    # user 2 has a single training item: no (input, next item) pair, so no sequence
    assert batch["seq"].tolist() == [[1, 2, 3], [P, P, 7]]
    assert batch["item"][..., 0].tolist() == [[2, 3, 4], [P, 7, 8]]
    assert batch["mask"].tolist() == [[True, True, True], [False, False, True]]
    assert batch["item"].shape == (2, 3, 3)
    negatives = batch["item"][..., 1:]
    trained = {0: {1, 2, 3, 4}, 1: {7, 8}}
    assert all(int(j) not in trained[u] for u, row in zip((0, 1), negatives) for j in row.flatten())
    assert task.context(torch.tensor([0, 1]), "valid")["seq"].tolist() == [[2, 3, 4], [P, 7, 8]]
    assert task.context(torch.tensor([0, 1]), "test")["seq"].tolist() == [[3, 4, 5], [7, 8, 0]]


def test_sequence_batches_for_a_full_softmax_carry_targets_not_candidates(data: Dataset) -> None:
    task = SequenceTask(data, max_len=3, num_negatives="all")
    batch = next(task.batches(8, torch.Generator().manual_seed(0), shuffle=False))
    assert "item" not in batch
    assert batch["target"].tolist() == [[2, 3, 4], [P, 7, 8]]
    assert batch["mask"].tolist() == [[True, True, True], [False, False, True]]


def test_pair_batches_cover_every_interaction_once(data: Dataset) -> None:
    task = PairTask(data, num_negatives=3)
    batches = list(task.batches(3, torch.Generator().manual_seed(0)))
    pairs = sorted((int(u), int(i)) for b in batches for u, i in zip(b["user"], b["item"][:, 0]))
    assert pairs == sorted(zip(data.train.user.tolist(), data.train.item.tolist()))
    assert all(b["item"].shape[1] == 4 for b in batches)


@pytest.mark.parametrize("loss", [["train.loss=bce"],
                                  ["train.loss=softmax", "train.num_negatives=all"]])
def test_sasrec_trains_adversarially_end_to_end(udata_small: Path, tmp_path: Path,
                                               loss: list[str]) -> None:
    run = tmp_path / "run"
    code = main(["train", "--output", str(run), "--quiet", f"data.source={udata_small}",
                 "data.format=movielens", "data.split=loo", f"data.cache_dir={tmp_path / 'c'}",
                 "model.name=sasrec", "model.dim=16", "model.max_len=20", "model.heads=2",
                 "adv.method=pgd", "adv.steps=2", "adv.eps=0.2", "train.epochs=12",
                 "train.lr=0.01", "train.batch_size=32", "eval.ks=[10,50]", *loss])
    assert code == 0
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["clean"] < history[0]["clean"]
    assert all(h["adv"] >= h["clean"] for h in history)  # the attack hurts on every epoch
    metrics = json.loads((run / "metrics.json").read_text())
    # a random ranking has the test item in its top 50 for 50/num_items of the users (1 in 30
    # here): 12 epochs learn several times that
    num_items = load_dataset(read_run(str(run))[1]).num_items
    assert metrics["test"]["hit@50"] > 3 * 50 / num_items
    assert main(["evaluate", "--run", str(run), "--attack", "fgm", "--eps", "0,0.5",
                 "--quiet"]) == 0
    robust = json.loads((run / "robustness.json").read_text())
    assert robust["fgm"]["0.0"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"])
    assert robust["fgm"]["0.5"]["ndcg@50"] < robust["fgm"]["0.0"]["ndcg@50"]


def test_in_batch_pairs_carry_each_items_log_frequency(data: Dataset) -> None:
    task = PairTask(data, num_negatives=5, in_batch=True)
    batch = next(task.batches(8, torch.Generator().manual_seed(0), shuffle=False))
    assert batch["item"].shape == (7, 1)  # no sampled negatives: the batch's items are the others
    # item 3 is 2 of the 7 training positives; N + 1 in the denominator keeps unseen items finite
    counts = {1: 1, 2: 1, 3: 2, 4: 1, 7: 1, 8: 1}
    expected = [torch.log(torch.tensor(counts[i] / 8.0)) for i in batch["item"][:, 0].tolist()]
    torch.testing.assert_close(batch["log_q"], torch.stack(expected))


class _Lookup(Recommender):
    """Scores a (user, item) pair as ``table[user, item]``, one value per task."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table  # (users, items) or (users, items, tasks)

    def forward(self, batch):  # (B, C) or (B, C, T)
        return self.table[batch["user"].unsqueeze(1), batch["item"]]


def _labelled() -> Dataset:
    def part(rows):
        u, i, y, r = (torch.tensor(c) for c in zip(*rows))
        return Interactions(user=u, item=i, label=y.float(), rating=r.float())
    rows = [(0, 0, 1, 5), (0, 1, 0, 2), (1, 0, 0, 3), (1, 2, 1, 4), (2, 1, 1, 4), (2, 2, 0, 1)]
    return Dataset(url="mem", num_users=3, num_items=3, meta={},
                   train=part(rows), valid=part(rows[:4]), test=part(rows[2:]))


def test_labelled_task_evaluates_clicks_and_ratings() -> None:
    data = _labelled()
    scores = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(0))
    test = data.test
    ctr = LabelledTask(data, ("click",)).evaluate(_Lookup(scores[..., 0]), "test", None)
    assert ctr == ctr_metrics(scores[test.user, test.item, 0], test.label, test.user)
    both = LabelledTask(data, ("click", "rating")).evaluate(_Lookup(scores), "test", None)
    assert both["click/auc"] == ctr["auc"] and both["click/gauc"] == ctr["gauc"]
    rmse = (scores[test.user, test.item, 1] - test.rating).pow(2).mean().sqrt()
    assert both["rating/rmse"] == pytest.approx(float(rmse))
    batch = next(LabelledTask(data, ("click", "rating")).batches(
        4, torch.Generator().manual_seed(0), shuffle=False))
    assert batch["item"].shape == (4, 1) and batch["label"].shape == (4, 1, 2)
    assert batch["label"][:, 0].tolist() == [[1, 5], [0, 2], [0, 3], [1, 4]]


def test_labelled_task_without_labels_says_how_to_get_them(data: Dataset) -> None:
    with pytest.raises(AdvrecError, match="data.label_threshold"):
        LabelledTask(data, ("click",))


@pytest.mark.parametrize("make", [
    lambda d, s: PairTask(d, 1, shard=s),
    lambda d, s: LabelledTask(d, ("click",), shard=s),
])
def test_shards_split_the_rows_with_equal_batch_counts(data: Dataset, make) -> None:
    data = dataclasses.replace(data, **{
        name: dataclasses.replace(part, label=(part.item % 2).float())
        for name, part in (("train", data.train), ("valid", data.valid), ("test", data.test))})
    seen, counts = [], []
    for rank in range(3):
        task = make(data, (rank, 3))
        batches = list(task.batches(2, torch.Generator().manual_seed(rank)))
        counts.append(len(batches))
        pairs = [(u, i) for b in batches for u, i in zip(b["user"].tolist(),
                                                         b["item"][:, 0].tolist())]
        assert len(pairs) == 3  # ceil(7 rows / 3 workers), the short shard padded
        seen.append(set(pairs))
    assert counts == [2, 2, 2]  # DDP: every worker steps as often
    assert set.union(*seen) == set(zip(data.train.user.tolist(), data.train.item.tolist()))
    assert sum(len(s) for s in seen) == 7  # disjoint: each row trains on one worker


def test_sequence_shards_split_the_users(data: Dataset) -> None:
    shards = [SequenceTask(data, max_len=3, num_negatives=1, shard=(r, 2)) for r in range(2)]
    firsts = [next(t.batches(8, torch.Generator().manual_seed(0), shuffle=False))["seq"][:, -1]
              for t in shards]
    # users 0 and 1 have sequences; one each, in user order
    assert [f.tolist() for f in firsts] == [[3], [7]]


def test_one_shard_keeps_the_single_worker_order(data: Dataset) -> None:
    whole = next(PairTask(data, 1).batches(7, torch.Generator().manual_seed(5)))
    assert torch.equal(whole["user"], data.train.user[torch.randperm(
        7, generator=torch.Generator().manual_seed(5))])
