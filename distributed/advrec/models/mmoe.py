"""MMoE (Ma et al., KDD 2018): shared experts, one gate and one tower per task.

Two objectives from one log: a click (rating >= the CTR threshold, BCE) and the rating itself
(MSE). The field embeddings (`advrec.models.fields`) are shared by all tasks; so are the experts,
MLPs over the concatenated fields. Each task mixes the experts' outputs with its own softmax gate
and reads the mixture with its own tower. Embed/score split: the adversary perturbs the shared
field embeddings, so an attack on one task reaches the other.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrec.config import TASK_NAMES
from advrec.data.features import FeatureSet
from advrec.models.base import Batch, mlp
from advrec.models.fields import FieldModel


class MMoE(FieldModel):
    """``out_t = tower_t(Σ_e softmax(gate_t(x))_e · expert_e(x))`` for each task ``t``."""

    tasks = TASK_NAMES

    def __init__(self, num_users: int, num_items: int, features: dict[str, FeatureSet | None],
                 dim: int, experts: int, mlp_layers: list[int], dropout: float = 0.0,
                 init: str = "xavier", init_std: float = 0.1) -> None:
        super().__init__(num_users, num_items, features, dim, init, init_std)
        width = self.num_fields * dim
        built = [mlp(width, mlp_layers, dropout) for _ in range(experts)]
        self.experts = nn.ModuleList(expert for expert, _ in built)
        hidden = built[0][1]
        self.gates = nn.ModuleList(nn.Linear(width, experts) for _ in self.tasks)
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            for _ in self.tasks)

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, C, T): per candidate, the click logit and the predicted rating (`tasks` order)."""
        x = self.fields(emb).flatten(-2)  # (B, C, F·d)
        experts = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (B, C, E, h)
        out = []
        for gate, tower in zip(self.gates, self.towers):
            weights = gate(x).softmax(-1).unsqueeze(-1)  # (B, C, E, 1)
            out.append(tower((weights * experts).sum(-2)))  # (B, C, 1)
        return torch.cat(out, dim=-1)

    def rank_logits(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """Ranking uses the click task's logit: (B, C)."""
        return self.score(emb, batch)[..., 0]
