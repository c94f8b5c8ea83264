"""DeepFM (Guo et al., IJCAI 2017): a factorisation machine and an MLP over the same fields.

Every field of a (user, item) pair (ids and side features, `advrec.models.fields`) has one
embedding and one first-order weight (a width-1 table per field, ``*_linear``: a per-user,
per-item, per-genre... bias). The FM part sums the first-order weights and the pairwise inner
products of the field embeddings; the deep part is an MLP over the embeddings' concatenation.
Embed/score split: `embed` looks up the fields, `score` is FM + MLP, so the adversary perturbs
every field's embedding and weight.
"""

from __future__ import annotations

from torch import Tensor, nn

from advrec.data.features import FeatureSet
from advrec.models.base import Batch, mlp
from advrec.models.fields import FieldEmbeddings, FieldModel, stack_fields


def fm_interaction(x: Tensor) -> Tensor:
    """Σ_{f<g} <x_f, x_g> over fields (..., F, d) -> (...), as ½((Σ_f x_f)² - Σ_f x_f²)."""
    return 0.5 * (x.sum(-2).pow(2) - x.pow(2).sum(-2)).sum(-1)


class DeepFM(FieldModel):
    """``logit = FM(fields) + MLP(concat(fields))``."""

    def __init__(self, num_users: int, num_items: int, features: dict[str, FeatureSet | None],
                 dim: int, mlp_layers: list[int], dropout: float = 0.0, init: str = "xavier",
                 init_std: float = 0.1) -> None:
        super().__init__(num_users, num_items, features, dim, init, init_std)
        self.user_linear = FieldEmbeddings("user", num_users, features.get("user"), 1, "normal",
                                           1e-4, suffix="_linear")
        self.item_linear = FieldEmbeddings("item", num_items, features.get("item"), 1, "normal",
                                           1e-4, suffix="_linear")
        self.deep, width = mlp(self.num_fields * dim, mlp_layers, dropout)
        self.head = nn.Linear(width, 1)  # its bias is the FM's global bias

    def tables(self) -> dict[str, nn.Module]:
        return {**super().tables(), **self.user_linear.as_dict(), **self.item_linear.as_dict()}

    def field_sets(self) -> list[FieldEmbeddings]:
        """The fields' embeddings, then their first-order weights: a changed value changes both,
        and `embed` looks both up (each user field (B, d) and weight (B, 1); each item field
        (B, C, d) and weight (B, C, 1))."""
        return [*super().field_sets(), self.user_linear, self.item_linear]

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, C) logits from the fields (B, C, F, d) and their weights (B, C, F, 1)."""
        x = self.fields(emb)
        first = stack_fields(emb, self.user_linear.keys, self.item_linear.keys).sum((-2, -1))
        deep = self.head(self.deep(x.flatten(-2))).squeeze(-1)
        return first + fm_interaction(x) + deep
