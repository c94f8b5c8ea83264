"""Uniform negative sampling that rejects a user's known positives, vectorised over the batch."""

from __future__ import annotations

import torch
from torch import Tensor


class NegativeSampler:
    """Samples items a user has not interacted with.

    Known positives are kept as sorted keys ``user * num_items + item``; a candidate is checked
    with one ``searchsorted`` and resampled when it hits a positive. After ``rounds`` rounds the
    few remaining collisions (a user owning most items) are kept rather than loop forever.
    """

    def __init__(self, users: Tensor, items: Tensor, num_items: int, rounds: int = 8) -> None:
        """``users``, ``items`` (nnz,): the known positive pairs (duplicates are harmless)."""
        self.keys = torch.sort(users.long() * num_items + items.long()).values
        self.num_items = num_items
        self.rounds = rounds

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """Bool tensor shaped like ``items``: whether (user, item) is a known positive."""
        if self.keys.numel() == 0:
            return torch.zeros_like(items, dtype=torch.bool)
        keys = users.unsqueeze(-1) * self.num_items + items if items.dim() > users.dim() \
            else users * self.num_items + items
        pos = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == keys

    def sample(self, users: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B,) users -> (B, n) negative items."""
        items = torch.randint(self.num_items, (users.shape[0], n), generator=generator)
        for _ in range(self.rounds):
            bad = self.is_positive(users, items)
            count = int(bad.sum())
            if count == 0:
                break
            items[bad] = torch.randint(self.num_items, (count,), generator=generator)
        return items
