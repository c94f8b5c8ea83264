"""What a model trains on and scores from: user-item pairs, or per-user item sequences.

A task turns a prepared dataset into training batches (with sampled negatives) and gives the
evaluation its *context* for a set of users: ``{"user": (B,)}`` for user-id models (MF,
NeuMF), ``{"seq": (B, L)}`` for sequential models (SASRec). Everything else (the objective, the
adversary, evaluation, the robustness attack) is the same for both.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from advrec.config import RunConfig
from advrec.data.dataset import Dataset, Interactions
from advrec.data.negatives import NegativeSampler
from advrec.models.base import Batch


class PairTask:
    """(user, positive item) pairs, each with ``num_negatives`` sampled negatives."""

    def __init__(self, data: Dataset, num_negatives: int) -> None:
        self.data, self.num_negatives = data, num_negatives
        self.sampler = NegativeSampler(data.train.user, data.train.item, data.num_items)

    def batches(self, batch_size: int, generator: torch.Generator,
                shuffle: bool = True) -> Iterator[Batch]:
        """``user`` (B,) and ``item`` (B, 1 + n): the positive, then the negatives."""
        train = self.data.train
        n = train.user.numel()
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for idx in order.split(batch_size):
            users = train.user[idx]
            negatives = self.sampler.sample(users, self.num_negatives, generator)
            yield {"user": users, "item": torch.cat([train.item[idx].unsqueeze(1), negatives], 1)}

    def context(self, users: Tensor, split: str) -> Batch:
        return {"user": users}


def histories(parts: list[Interactions], num_users: int, length: int, pad: int) -> Tensor:
    """Each user's last ``length`` items over ``parts`` (in that order, each sorted by user and
    time), left-padded with ``pad``: (num_users, length)."""
    user = torch.cat([p.user for p in parts])
    item = torch.cat([p.item for p in parts])
    order = torch.sort(user, stable=True).indices  # keeps the parts' order within a user
    user, item = user[order], item[order]
    counts = torch.bincount(user, minlength=num_users)
    start = counts.cumsum(0) - counts
    from_end = counts[user] - 1 - (torch.arange(user.numel()) - start[user])  # 0 = latest
    keep = from_end < length
    out = torch.full((num_users, length), pad, dtype=torch.long)
    out[user[keep], length - 1 - from_end[keep]] = item[keep]
    return out


class SequenceTask:
    """One time-ordered training sequence per user and epoch (SASRec): at every position the
    target is the next item, scored against ``num_negatives`` sampled negatives."""

    def __init__(self, data: Dataset, max_len: int, num_negatives: int) -> None:
        self.data, self.max_len, self.num_negatives = data, max_len, num_negatives
        self.pad = data.num_items
        self.sampler = NegativeSampler(data.train.user, data.train.item, data.num_items)
        # max_len + 1 items give max_len (input, next item) positions
        train = histories([data.train], data.num_users, max_len + 1, self.pad)
        self.users = torch.nonzero((train != self.pad).sum(1) >= 2).squeeze(1)
        self.inputs, self.targets = train[self.users, :-1], train[self.users, 1:]
        self.contexts = {
            "valid": histories([data.train], data.num_users, max_len, self.pad),
            "test": histories([data.train, data.valid], data.num_users, max_len, self.pad),
        }

    def batches(self, batch_size: int, generator: torch.Generator,
                shuffle: bool = True) -> Iterator[Batch]:
        """``seq`` (B, L), ``item`` (B, L, 1 + n) and ``mask`` (B, L) of positions with a target."""
        n = self.users.numel()
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for idx in order.split(batch_size):
            seq, target = self.inputs[idx], self.targets[idx]
            users = self.users[idx]
            negatives = self.sampler.sample(users, seq.shape[1] * self.num_negatives, generator)
            negatives = negatives.view(*seq.shape, self.num_negatives)
            yield {"seq": seq, "item": torch.cat([target.unsqueeze(-1), negatives], -1),
                   "mask": (seq != self.pad) & (target != self.pad)}

    def context(self, users: Tensor, split: str) -> Batch:
        """The history before ``split``'s items: train for valid, train + valid for test."""
        return {"seq": self.contexts[split][users]}


Task = PairTask | SequenceTask


def make_task(cfg: RunConfig, data: Dataset) -> Task:
    if cfg.model.name == "sasrec":
        return SequenceTask(data, cfg.model.max_len, cfg.train.num_negatives)
    return PairTask(data, cfg.train.num_negatives)
