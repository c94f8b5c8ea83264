"""The embedding tables of one side (users or items): its id and each of its feature fields.

Feature models (DeepFM, DCN-v2, two-tower, MMoE) describe a user or an item by several fields:
the id itself, categorical features (gender, occupation), bucketised numbers (age, year) and
multi-valued features (genres). `FieldEmbeddings` owns one table per field and the encoded feature
ids of every row (`advrec.data.features`), so a batch needs only user and item indices: looking a
user up returns one embedding per field. A multi-valued field is the mean of its tokens'
embeddings, so every field is one vector, and the adversary perturbs each field's vector.

The discrete attacker (``jsma-fields``, `advrec.adversarial.jsma_fields`) changes a field's
values instead: `FieldModel` names the feature fields (`FieldModel.feature_fields`; the ids are
none), gives a batch's values of each (`FieldModel.field_values`) and every value's row
(`FieldModel.field_catalogue`), and looks changed values up as `embed` would have
(`FieldModel.embed_fields`). A batch may also carry a user's changed profile (its user fields'
values under the fields' names): `embed` looks those up instead of the user's own, so a ranking
context can hold attacked profiles (`advrec.metrics.profile_attack`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrec.data.features import FeatureSet, Field
from advrec.models.base import Batch, Recommender, RowIds, TableRows, new_table


class FieldEmbeddings(nn.Module):
    """Tables ``<side><suffix>`` (the id) and ``<side>_<field><suffix>`` (each feature), all of
    width ``dim``. The suffix tells apart a second set of tables of the same fields (DeepFM's
    first-order weights, of width 1)."""

    def __init__(self, side: str, num_rows: int, features: FeatureSet | None, dim: int,
                 init: str = "xavier", init_std: float = 0.1, suffix: str = "") -> None:
        super().__init__()
        self.kind, self.side, self.dim = side, side + suffix, dim
        self.tables = nn.ModuleDict({self.side: new_table(self.side, num_rows, dim, init,
                                                          init_std)})
        self.single: list[str] = []
        self.multi: list[str] = []
        self.fields: dict[str, Field] = {}  # by table key
        if features is not None:
            if features.num_rows != num_rows:
                raise ValueError(f"{side} features have {features.num_rows} rows, not {num_rows}")
            for field in features.fields:
                key = f"{side}_{field.name}{suffix}".replace(".", "_")  # ModuleDict: no dots
                self.tables[key] = new_table(key, field.vocab_size, dim, init, init_std)
                self.fields[key] = field
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
        out.update({key: self.lookup(key, v) for key, v in self.values(ids).items()})
        return out

    def rows(self, ids: Tensor) -> dict[str, RowIds]:
        """Row indices (*S) -> which row each field key's (*S, d) vectors are
        (`Recommender.rows`): the id's and each single-valued field's table rows; a
        multi-valued field's vector is a mean of tokens, one per user or item (named
        ``<key>/<side>``)."""
        count = self.tables[self.side].num_embeddings
        out: dict[str, RowIds] = {self.side: (self.side, ids, count)}
        out.update({key: (key, v, self.tables[key].num_embeddings)
                    for key, v in self.values(ids).items() if key in self.single})
        out.update({key: (f"{key}/{self.kind}", ids, count) for key in self.multi})
        return out

    def values(self, ids: Tensor) -> dict[str, Tensor]:
        """Row indices (*S) -> each feature field's values: (*S) ids of a single-valued field,
        (*S, T) tokens of a multi-valued one (0 = none)."""
        out = {}
        if self.single:
            field_ids = self.single_ids[ids]  # (*S, F)
            out.update({key: field_ids[..., j] for j, key in enumerate(self.single)})
        out.update({key: getattr(self, f"ids_{key}")[ids] for key in self.multi})
        return out

    def lookup(self, key: str, values: Tensor) -> Tensor:
        """A feature field's rows (*S, d) for its ``values`` (as `values` gives them): the
        value's row, or the mean of the present tokens' rows (0 where a row has none)."""
        rows = self.tables[key](values)
        if key in self.single:
            return rows
        present = (values > 0).unsqueeze(-1).to(rows.dtype)
        return (rows * present).sum(-2) / present.sum(-2).clamp(min=1.0)

    def table_rows(self) -> dict[str, TableRows]:
        """What each table holds a row for (`Recommender.table_rows`): the side's ids, then
        each field's values."""
        return {self.side: (self.kind, None),
                **{key: (self.kind, field) for key, field in self.fields.items()}}

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

    Batch keys: ``user`` (B,) and ``item`` (B, C); optionally a user's profile, some of
    `user_fields` by name, (B,) ids or (B, T) tokens, looked up instead of the user's own values.
    `embed` returns each user field (B, d) and each item field (B, C, d).
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
        return {**self.user_embed(batch), **self._lookup(batch, "item")}

    def user_embed(self, batch: Batch) -> dict[str, Tensor]:
        """The user rows of `embed`, (B, d) each, from ``user`` (B,) and any profile values the
        batch carries (see the class)."""
        profile = {f: batch[f].unsqueeze(1) for f in self.user_fields() if f in batch}
        return {**self._lookup(batch, "user"), **self.embed_fields(profile)}

    def _lookup(self, batch: Batch, kind: str) -> dict[str, Tensor]:
        """Every field set of one side (``user`` or ``item``) looked up at the batch's ids."""
        return {k: v for s in self.field_sets() if s.kind == kind
                for k, v in s(batch[kind]).items()}

    def tables(self) -> dict[str, nn.Module]:
        return {**self.users.as_dict(), **self.items.as_dict()}

    def table_rows(self) -> dict[str, TableRows]:
        return {k: r for s in self.field_sets() for k, r in s.table_rows().items()}

    def rows(self, batch: Batch) -> dict[str, RowIds]:
        """Each field's rows (`FieldEmbeddings.rows`) of a batch of the users' own profiles
        (training's: no changed profile in it)."""
        return {k: r for s in self.field_sets() for k, r in s.rows(batch[s.kind]).items()}

    def fields(self, emb: dict[str, Tensor]) -> Tensor:
        """(B, C, F, d): every field of each (user, candidate) pair."""
        return stack_fields(emb, self.users.keys, self.items.keys)

    def field_sets(self) -> list[FieldEmbeddings]:
        """Every set of field tables: the users' and the items' (DeepFM adds its first-order
        weights'), each side's first one naming its fields."""
        return [self.users, self.items]

    def _feature_keys(self) -> dict[str, list[tuple[FieldEmbeddings, str]]]:
        """Each feature field, by its key in its side's first set, -> (set, key) of every set
        that looks it up (DeepFM's: its row, its first-order weight)."""
        out: dict[str, list[tuple[FieldEmbeddings, str]]] = {}
        for main in (self.users, self.items):
            sets = [s for s in self.field_sets() if s.kind == main.kind]
            for j, field in enumerate(main.keys[1:], start=1):
                out[field] = [(s, s.keys[j]) for s in sets]
        return out

    def user_fields(self) -> list[str]:
        """The users' feature fields (`feature_fields` keys): a user's profile."""
        return [f for f, pairs in self._feature_keys().items() if pairs[0][0].kind == "user"]

    def feature_fields(self) -> dict[str, list[str]]:
        """Each feature field of both sides -> the keys of `embed` looked up with its values.
        The ids are no feature field: another id is another user or item, not a changed input."""
        return {field: [k for _, k in pairs] for field, pairs in self._feature_keys().items()}

    def field_values(self, batch: Batch) -> dict[str, Tensor]:
        """Each feature field's values in the batch, a slot per (example, row of its side):
        (B, 1) for a user field, (B, C) for an item field, with a last dimension of T tokens
        for a multi-valued one (`FieldEmbeddings.values`)."""
        return {**self.users.values(batch["user"].unsqueeze(1)),
                **self.items.values(batch["item"])}

    def field_catalogue(self, field: str, device: torch.device) -> Tensor:
        """(V, D): every value's row of ``field`` (a `feature_fields` key), its keys' rows side
        by side (D their total width); by lookup, not ``.weight``: a sharded table has none."""
        pairs = self._feature_keys()[field]
        values = torch.arange(pairs[0][0].tables[pairs[0][1]].num_embeddings, device=device)
        return torch.cat([s.tables[k](values) for s, k in pairs], dim=-1)

    def field_rows(self, emb: dict[str, Tensor]) -> dict[str, Tensor]:
        """`embed`'s rows (or their gradients) of the feature fields' keys -> each field's
        (B, K, D): its keys' rows side by side, a user field's with K = 1."""
        out = {}
        for field, pairs in self._feature_keys().items():
            rows = torch.cat([emb[k] for _, k in pairs], dim=-1)
            out[field] = rows.unsqueeze(1) if pairs[0][0].kind == "user" else rows
        return out

    def key_rows(self, rows: dict[str, Tensor]) -> dict[str, Tensor]:
        """The inverse of `field_rows`: each field's (B, K, D) (some fields, or all) -> its keys'
        rows as `embed` returns them."""
        out = {}
        for field, pairs in self._feature_keys().items():
            if field not in rows:
                continue
            parts = rows[field].split([s.dim for s, _ in pairs], dim=-1)
            for (s, key), part in zip(pairs, parts):
                out[key] = part.squeeze(1) if s.kind == "user" else part
        return out

    def embed_fields(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """`embed`'s rows of the feature fields' keys, looked up (from the tables, so
        differentiably) with ``values`` (`field_values`' shapes, any token count), of some
        fields or all."""
        out = {}
        for field, pairs in self._feature_keys().items():
            if field not in values:
                continue
            for s, key in pairs:
                rows = s.lookup(key, values[field])
                out[key] = rows.squeeze(1) if s.kind == "user" else rows
        return out
