"""DeepFM (Guo et al., IJCAI 2017): a factorisation machine and an MLP over the same fields.

Every field of a (user, item) pair (ids and side features, `advrec.models.fields`) has one
embedding. The FM part sums the pairwise inner products of the field embeddings; the deep part is
an MLP over their concatenation, whose first linear layer also supplies the FM's first-order
term. Embed/score split: `embed` looks up the fields, `score` is FM + MLP, so the adversary
perturbs every field's embedding.
"""

from __future__ import annotations

from torch import Tensor, nn

from advrec.data.features import FeatureSet
from advrec.models.base import Batch
from advrec.models.fields import FieldModel, mlp


def fm_interaction(x: Tensor) -> Tensor:
    """Σ_{f<g} <x_f, x_g> over fields (..., F, d) -> (...), as ½((Σ_f x_f)² - Σ_f x_f²)."""
    return 0.5 * (x.sum(-2).pow(2) - x.pow(2).sum(-2)).sum(-1)


class DeepFM(FieldModel):
    """``logit = FM(fields) + MLP(concat(fields))``."""

    def __init__(self, num_users: int, num_items: int, features: dict[str, FeatureSet | None],
                 dim: int, mlp_layers: list[int], dropout: float = 0.0, init: str = "xavier",
                 init_std: float = 0.1) -> None:
        super().__init__(num_users, num_items, features, dim, init, init_std)
        self.deep, width = mlp(self.num_fields * dim, mlp_layers, dropout)
        self.head = nn.Linear(width, 1)

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, C) logits from the fields (B, C, F, d)."""
        x = self.fields(emb)
        deep = self.head(self.deep(x.flatten(-2))).squeeze(-1)
        return fm_interaction(x) + deep
