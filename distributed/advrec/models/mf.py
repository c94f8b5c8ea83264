"""BPR-MF (Rendle et al. 2009): a user and an item table, scored by the dot product."""

from __future__ import annotations

from torch import Tensor, nn

from advrec.models.base import Batch, Recommender, RowIds, new_table


class MF(Recommender):
    """Matrix factorisation: ``score(u, i) = <p_u, q_i>``."""

    def __init__(self, num_users: int, num_items: int, dim: int, init: str = "xavier",
                 init_std: float = 0.1) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.user = new_table("user", num_users, dim, init, init_std)
        self.item = new_table("item", num_items, dim, init, init_std)

    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """``user`` (B, d) and ``item`` (B, C, d)."""
        return {"user": self.user(batch["user"]), "item": self.item(batch["item"])}

    def rows(self, batch: Batch) -> dict[str, RowIds]:
        return {"user": ("user", batch["user"], self.num_users),
                "item": ("item", batch["item"], self.num_items)}

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, 1, d) x (B, C, d) -> (B, C) dot products."""
        return (emb["user"].unsqueeze(1) * emb["item"]).sum(-1)

    def tables(self) -> dict[str, nn.Module]:
        return {"user": self.user, "item": self.item}

    def dot_ranking(self, context: Batch) -> tuple[Tensor, Tensor]:
        """``user`` (B,) -> user rows (B, d) and every item row (N, d)."""
        users = context["user"]
        return self.user(users), self.item(self.every_item(users.device))

    def rank_scores(self, context: Batch, items: Tensor | None = None,
                    max_pairs: int = 1 << 14) -> Tensor:
        """``user`` (B,) and ``items`` (C,) (default all) -> (B, C) in one matrix product."""
        users = context["user"]
        # the items' rows by lookup, not .weight: a sharded table has no whole weight
        items = self.every_item(users.device) if items is None else items
        return self.user(users) @ self.item(items).T
