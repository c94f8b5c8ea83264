"""DCN-v2 (Wang et al., WWW 2021): explicit feature crosses beside a deep network.

The field embeddings (`advrec.models.fields`) are concatenated into ``x0`` (B, C, F·d). Each cross
layer computes ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l`` with a full-rank ``W_l``; an MLP runs on
``x0`` in parallel, and a linear head reads both. Embed/score split: the adversary perturbs every
field's embedding, and PGD re-runs only the crosses and the MLP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrec.data.features import FeatureSet
from advrec.models.base import Batch, mlp
from advrec.models.fields import FieldModel


class CrossNetwork(nn.Module):
    """``layers`` DCN-v2 cross layers over inputs of width ``width``."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, x0: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2(FieldModel):
    """``logit = head([Cross(x0) ; MLP(x0)])`` with ``x0`` the concatenated field embeddings."""

    def __init__(self, num_users: int, num_items: int, features: dict[str, FeatureSet | None],
                 dim: int, cross_layers: int, mlp_layers: list[int], dropout: float = 0.0,
                 init: str = "xavier", init_std: float = 0.1) -> None:
        super().__init__(num_users, num_items, features, dim, init, init_std)
        width = self.num_fields * dim
        self.cross = CrossNetwork(width, cross_layers)
        self.deep, deep_width = mlp(width, mlp_layers, dropout)
        self.head = nn.Linear(width + deep_width, 1)

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, C) logits from the fields (B, C, F, d)."""
        x0 = self.fields(emb).flatten(-2)  # (B, C, F·d)
        return self.head(torch.cat([self.cross(x0), self.deep(x0)], dim=-1)).squeeze(-1)
