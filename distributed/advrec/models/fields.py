"""The embedding tables of one side (users or items): its id and each of its feature fields.

Feature models (DeepFM, DCN-v2, two-tower, MMoE) describe a user or an item by several fields:
the id itself, categorical features (gender, occupation), bucketised numbers (age, year) and
multi-valued features (genres). `FieldEmbeddings` owns one table per field and the encoded feature
ids of every row (`advrec.data.features`), so a batch needs only user and item indices: looking a
user up returns one embedding per field. A multi-valued field is the mean of its tokens'
embeddings, so every field is one vector, and the adversary perturbs each field's vector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrec.data.features import FeatureSet
from advrec.models.base import Batch, Recommender, new_table


class FieldEmbeddings(nn.Module):
    """Tables ``<side><suffix>`` (the id) and ``<side>_<field><suffix>`` (each feature), all of
    width ``dim``. The suffix tells apart a second set of tables of the same fields (DeepFM's
    first-order weights, of width 1)."""

    def __init__(self, side: str, num_rows: int, features: FeatureSet | None, dim: int,
                 init: str = "xavier", init_std: float = 0.1, suffix: str = "") -> None:
        super().__init__()
        self.side = side + suffix
        self.tables = nn.ModuleDict({self.side: new_table(self.side, num_rows, dim, init,
                                                          init_std)})
        self.single: list[str] = []
        self.multi: list[str] = []
        if features is not None:
            if features.num_rows != num_rows:
                raise ValueError(f"{side} features have {features.num_rows} rows, not {num_rows}")
            for field in features.fields:
                key = f"{side}_{field.name}{suffix}".replace(".", "_")  # ModuleDict: no dots
                self.tables[key] = new_table(key, field.vocab_size, dim, init, init_std)
                (self.single if field.kind == "single" else self.multi).append(key)
            # the encoded ids travel with the model (not its checkpoint: they come from the data)
            self.register_buffer("single_ids", features.single, persistent=False)
            for key, ids in zip(self.multi, features.multi.values()):
                self.register_buffer(f"ids_{key}", ids, persistent=False)

    @property
    def keys(self) -> list[str]:
        """The field keys, in output order: the id, then the single fields, then the multi ones."""
        return [self.side, *self.single, *self.multi]

    def forward(self, ids: Tensor) -> dict[str, Tensor]:
        """Row indices (*S) -> one (*S, d) embedding per field key."""
        out = {self.side: self.tables[self.side](ids)}
        if self.single:
            field_ids = self.single_ids[ids]  # (*S, F)
            for j, key in enumerate(self.single):
                out[key] = self.tables[key](field_ids[..., j])
        for key in self.multi:
            tokens = getattr(self, f"ids_{key}")[ids]  # (*S, T), 0 = padding
            present = (tokens > 0).unsqueeze(-1).to(out[self.side].dtype)
            summed = (self.tables[key](tokens) * present).sum(-2)
            out[key] = summed / present.sum(-2).clamp(min=1.0)  # rows without a token stay 0
        return out

    def as_dict(self) -> dict[str, nn.Module]:
        """The tables by key (each a distinct table)."""
        return {key: self.tables[key] for key in self.keys}  # type: ignore[misc]


def stack_fields(emb: dict[str, Tensor], user_keys: list[str], item_keys: list[str]) -> Tensor:
    """User fields (B, d) and item fields (B, C, d) -> (B, C, F, d), user fields broadcast over C."""
    items = torch.stack([emb[k] for k in item_keys], dim=-2)  # (B, C, F_i, d)
    users = torch.stack([emb[k] for k in user_keys], dim=-2)  # (B, F_u, d)
    users = users.unsqueeze(1).expand(-1, items.shape[1], -1, -1)
    return torch.cat([users, items], dim=-2)


class FieldModel(Recommender):
    """Base of the feature models: user and item `FieldEmbeddings`; `embed` looks up every field.

    Batch keys: ``user`` (B,) and ``item`` (B, C). `embed` returns each user field (B, d) and
    each item field (B, C, d).
    """

    def __init__(self, num_users: int, num_items: int, features: dict[str, FeatureSet | None],
                 dim: int, init: str = "xavier", init_std: float = 0.1) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.users = FieldEmbeddings("user", num_users, features.get("user"), dim, init, init_std)
        self.items = FieldEmbeddings("item", num_items, features.get("item"), dim, init, init_std)

    @property
    def num_fields(self) -> int:
        return len(self.users.keys) + len(self.items.keys)

    def embed(self, batch: Batch) -> dict[str, Tensor]:
        return {**self.users(batch["user"]), **self.items(batch["item"])}

    def tables(self) -> dict[str, nn.Module]:
        return {**self.users.as_dict(), **self.items.as_dict()}

    def fields(self, emb: dict[str, Tensor]) -> Tensor:
        """(B, C, F, d): every field of each (user, candidate) pair."""
        return stack_fields(emb, self.users.keys, self.items.keys)
