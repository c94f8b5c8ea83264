"""Tiny hand-made datasets and a model with fixed scores, for exact metric checks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advrec.data.dataset import Dataset, Interactions
from advrec.models.base import Batch, Recommender


def interactions(pairs: list[tuple[int, int]]) -> Interactions:
    users, items = zip(*pairs) if pairs else ((), ())
    return Interactions(user=torch.tensor(users, dtype=torch.long),
                        item=torch.tensor(items, dtype=torch.long))


def _make_dataset(num_users: int, num_items: int, train, valid, test) -> Dataset:
    return Dataset(url="", num_users=num_users, num_items=num_items, meta={},
                   train=interactions(train), valid=interactions(valid), test=interactions(test))


class FixedScores(Recommender):
    """score(u, i) = S[u, i] through one (users * items, 1) table, so every path agrees."""

    def __init__(self, scores: Tensor) -> None:
        super().__init__()
        self.num_users, self.num_items = scores.shape
        self.table = nn.Embedding(scores.numel(), 1)
        with torch.no_grad():
            self.table.weight.copy_(scores.reshape(-1, 1))

    def embed(self, batch: Batch) -> dict[str, Tensor]:
        return {"item": self.table(batch["user"].unsqueeze(1) * self.num_items + batch["item"])}

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        return emb["item"].squeeze(-1)

    def tables(self) -> dict[str, nn.Embedding]:
        return {"item": self.table}


@pytest.fixture
def tiny() -> Dataset:
    """2 users, 6 items. User 0: train {0, 1}, valid {2}, test {3, 4}. User 1: train {5}, test {0}."""
    return _make_dataset(2, 6, train=[(0, 0), (0, 1), (1, 5)], valid=[(0, 2)],
                        test=[(0, 3), (0, 4), (1, 0)])


@pytest.fixture
def fixed_model() -> type[FixedScores]:
    """The `FixedScores` model class, for tests to build with their own score matrices."""
    return FixedScores


@pytest.fixture
def make_dataset():
    """Build a `Dataset` from (user, item) pair lists: ``make_dataset(U, I, train, valid, test)``."""
    return _make_dataset
