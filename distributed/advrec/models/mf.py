"""BPR-MF (Rendle et al. 2009): a user and an item table, scored by the dot product."""

from __future__ import annotations

from torch import Tensor, nn

from advrec.models.base import Batch, Recommender, init_embedding


class MF(Recommender):
    """Matrix factorisation: ``score(u, i) = <p_u, q_i>``."""

    def __init__(self, num_users: int, num_items: int, dim: int, init: str = "xavier",
                 init_std: float = 0.1) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        for table in (self.user, self.item):
            init_embedding(table, init, init_std)

    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """``user`` (B, d) and ``item`` (B, C, d)."""
        return {"user": self.user(batch["user"]), "item": self.item(batch["item"])}

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, 1, d) x (B, C, d) -> (B, C) dot products."""
        return (emb["user"].unsqueeze(1) * emb["item"]).sum(-1)

    def tables(self) -> dict[str, nn.Embedding]:
        return {"user": self.user, "item": self.item}

    def rank_scores(self, context: Batch, max_pairs: int = 1 << 14) -> Tensor:
        """``user`` (B,) -> (B, num_items) in one matrix product."""
        return self.user(context["user"]) @ self.item.weight.T
