"""Two-tower retrieval (Yi et al., RecSys 2019): a user tower and an item tower, in-batch softmax.

Each tower concatenates its side's field embeddings (the id and the side features,
`advrec.models.fields`), runs an MLP and L2-normalises the result; a logit is the cosine of the
two vectors over a temperature. Training is an in-batch softmax: every other positive of the
batch is a negative. Popular items are in-batch negatives more often than the uniform softmax
assumes, so each logit is corrected by ``-log Q(item)``, the item's sampling frequency (log-Q
correction). Retrieval then ranks all items by the uncorrected logit.

Embed/score split: `embed` looks up both sides' fields, `score` runs the towers, so the adversary
perturbs both towers' input embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advrec.data.features import FeatureSet
from advrec.models.base import Batch, mlp
from advrec.models.fields import FieldModel


def in_batch_logits(users: Tensor, items: Tensor, item_ids: Tensor,
                    log_q: Tensor | None) -> Tensor:
    """In-batch logits (B, B) with each row's own item first.

    Args:
        users: (B, D) user vectors, already scaled (cosine / temperature).
        items: (B, D) the batch's positive item vectors.
        item_ids: (B,) their ids: another row's copy of a user's own item is no negative, so it
            gets -inf ("accidental hit").
        log_q: (B,) log sampling frequency of each item, subtracted from its column; or None.

    Returns:
        (B, B): row i holds user i against items i, i+1, ..., i-1 (mod B), so column 0 is the
        positive, as every loss expects.
    """
    logits = users @ items.T  # (B, B): user i, item j
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    size = logits.shape[0]
    arange = torch.arange(size, device=logits.device)
    return logits.gather(1, (arange.unsqueeze(1) + arange.unsqueeze(0)) % size)


class TwoTower(FieldModel):
    """``logit(u, i) = cos(tower_u(fields_u), tower_i(fields_i)) / temperature``."""

    def __init__(self, num_users: int, num_items: int, features: dict[str, FeatureSet | None],
                 dim: int, mlp_layers: list[int], temperature: float = 0.05, logq: bool = True,
                 dropout: float = 0.0, init: str = "xavier", init_std: float = 0.1) -> None:
        super().__init__(num_users, num_items, features, dim, init, init_std)
        self.temperature, self.logq = temperature, logq
        # the towers end linear: a final ReLU would confine the vectors to the positive orthant
        self.user_tower, _ = mlp(len(self.users.keys) * dim, mlp_layers, dropout, linear_out=True)
        self.item_tower, _ = mlp(len(self.items.keys) * dim, mlp_layers, dropout, linear_out=True)

    def user_vectors(self, emb: dict[str, Tensor]) -> Tensor:
        """(B, D) unit user vectors, divided by the temperature."""
        x = torch.cat([emb[k] for k in self.users.keys], dim=-1)
        return F.normalize(self.user_tower(x), dim=-1) / self.temperature

    def item_vectors(self, emb: dict[str, Tensor]) -> Tensor:
        """(..., D) unit item vectors."""
        x = torch.cat([emb[k] for k in self.items.keys], dim=-1)
        return F.normalize(self.item_tower(x), dim=-1)

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, C) logits of the candidates; with ``log_q`` in the batch (training), the in-batch
        logits (B, B) of `in_batch_logits`."""
        users, items = self.user_vectors(emb), self.item_vectors(emb)  # (B, D), (B, C, D)
        if "log_q" in batch:
            return in_batch_logits(users, items[:, 0], batch["item"][:, 0],
                                   batch["log_q"] if self.logq else None)
        return (users.unsqueeze(1) * items).sum(-1)

    def rank_scores(self, context: Batch, items: Tensor | None = None,
                    max_pairs: int = 1 << 14) -> Tensor:
        """``user`` (B,), and any profile values (`FieldModel`), and ``items`` (C,) (default
        all) -> (B, C): the item tower runs once over the items."""
        users = self.user_vectors(self.user_embed(context))
        items = self.every_item(users.device) if items is None else items
        return users @ self.item_vectors(self.items(items)).T
