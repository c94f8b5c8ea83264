"""NeuMF (He et al. 2017): a GMF branch and an MLP branch with separate tables, fused linearly."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrec.models.base import Batch, Recommender, RowIds, mlp, new_table


class NeuMF(Recommender):
    """``score = h^T [p^G_u * q^G_i ; MLP([p^M_u ; q^M_i])]``."""

    def __init__(self, num_users: int, num_items: int, dim: int, mlp_layers: list[int],
                 dropout: float = 0.0, init: str = "xavier", init_std: float = 0.1) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.user_gmf = new_table("user_gmf", num_users, dim, init, init_std)
        self.item_gmf = new_table("item_gmf", num_items, dim, init, init_std)
        self.user_mlp = new_table("user_mlp", num_users, dim, init, init_std)
        self.item_mlp = new_table("item_mlp", num_items, dim, init, init_std)
        self.mlp, width = mlp(2 * dim, mlp_layers, dropout)
        self.head = nn.Linear(dim + width, 1)

    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """``user_gmf``, ``user_mlp`` (B, d) and ``item_gmf``, ``item_mlp`` (B, C, d)."""
        u, i = batch["user"], batch["item"]
        return {
            "user_gmf": self.user_gmf(u), "user_mlp": self.user_mlp(u),
            "item_gmf": self.item_gmf(i), "item_mlp": self.item_mlp(i),
        }

    def rows(self, batch: Batch) -> dict[str, RowIds]:
        u, i = batch["user"], batch["item"]
        return {"user_gmf": ("user_gmf", u, self.num_users),
                "user_mlp": ("user_mlp", u, self.num_users),
                "item_gmf": ("item_gmf", i, self.num_items),
                "item_mlp": ("item_mlp", i, self.num_items)}

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, C) logits: GMF product (B, C, d) and MLP output (B, C, h) into a linear head."""
        item_mlp = emb["item_mlp"]
        gmf = emb["user_gmf"].unsqueeze(1) * emb["item_gmf"]
        user_mlp = emb["user_mlp"].unsqueeze(1).expand(-1, item_mlp.shape[1], -1)
        mlp = self.mlp(torch.cat([user_mlp, item_mlp], dim=-1))
        return self.head(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def tables(self) -> dict[str, nn.Module]:
        return {"user_gmf": self.user_gmf, "item_gmf": self.item_gmf,
                "user_mlp": self.user_mlp, "item_mlp": self.item_mlp}
