"""Model zoo: every model splits embedding lookup (`embed`) from scoring (`score`)."""

from __future__ import annotations

from advrec.config import ModelConfig
from advrec.models.base import Batch, Recommender
from advrec.models.losses import LOSSES, LossFn
from advrec.models.mf import MF
from advrec.models.neumf import NeuMF
from advrec.models.sasrec import SASRec

__all__ = ["LOSSES", "MF", "Batch", "LossFn", "NeuMF", "Recommender", "SASRec",
           "build_model"]


def build_model(cfg: ModelConfig, num_users: int, num_items: int) -> Recommender:
    """Instantiate the model named by ``model.name``."""
    if cfg.name == "mf":
        return MF(num_users, num_items, cfg.dim, cfg.init, cfg.init_std)
    if cfg.name == "sasrec":
        return SASRec(num_users, num_items, cfg.dim, cfg.max_len, cfg.layers, cfg.heads,
                      cfg.dropout, cfg.init, cfg.init_std)
    return NeuMF(num_users, num_items, cfg.dim, cfg.mlp_layers, cfg.dropout, cfg.init, cfg.init_std)
