"""What an attack on users' real inputs (their histories, their profiles) aims at, in ranking.

Untargeted, it raises the full-softmax cross-entropy of each user's held-out items of the split
(the sum over them), lowering their rank among all items; targeted, it lowers that of the target
items instead (raises their log-probability), promoting them. The cross-entropy rather than the
raw logit: a raw score can be raised by lifting every item's score, a rank only by beating the
others'. `advrec.metrics.history_attack` and `advrec.metrics.profile_attack` differentiate it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advrec.data.dataset import Dataset
from advrec.metrics.evaluate import csr_rows


class RankingGoal:
    """The loss an attacker raises for a chunk of users: against their held-out items of a split
    (``targets`` None), or toward ``targets`` (T,) item indices."""

    def __init__(self, data: Dataset, targets: Tensor | None = None) -> None:
        self.data, self.targets = data, targets
        self._held_out: dict[str, tuple[Tensor, Tensor]] = {}  # a split's CSR, sorted once

    def loss(self, logits: Tensor, users: Tensor, split: str) -> Tensor:
        """The scalar to raise, from ``logits`` (B, N) of every item for ``users`` (B,)."""
        device = logits.device
        if self.targets is None:
            if split not in self._held_out:
                self._held_out[split] = self.data.positives(split)
            rows, items = csr_rows(*self._held_out[split], users.cpu())
            sign = 1.0
        else:
            rows = torch.arange(users.numel()).repeat_interleave(self.targets.numel())
            items, sign = self.targets.cpu().repeat(users.numel()), -1.0
        return sign * F.cross_entropy(logits[rows.to(device)], items.to(device), reduction="sum")
