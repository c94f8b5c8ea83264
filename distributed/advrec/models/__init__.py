"""Model zoo: every model splits embedding lookup (`embed`) from scoring (`score`)."""

from __future__ import annotations

import torch

from advrec.config import RunConfig
from advrec.config.policy import FEATURE_MODELS
from advrec.data.dataset import Dataset
from advrec.data.features import FeatureSet, load_side_features
from advrec.errors import AdvrecError
from advrec.models.base import Batch, Recommender, tables_from
from advrec.models.dcnv2 import DCNv2
from advrec.models.deepfm import DeepFM
from advrec.models.losses import LOSSES, LossFn
from advrec.models.mf import MF
from advrec.models.mmoe import MMoE
from advrec.models.neumf import NeuMF
from advrec.models.sasrec import SASRec
from advrec.models.twotower import TwoTower

__all__ = [
    "LOSSES",
    "MF",
    "Batch",
    "DCNv2",
    "DeepFM",
    "LossFn",
    "MMoE",
    "NeuMF",
    "Recommender",
    "SASRec",
    "TwoTower",
    "build_model",
]



def build_model(cfg: RunConfig, data: Dataset, sharded: bool = False) -> Recommender:
    """Instantiate ``cfg.model.name`` for ``data``'s users, items and side features, with
    ``model.embeddings``' tables: ``nn.Embedding`` or torchrec's, on the CPU, or with
    ``sharded`` on the meta device, for `advrec.train.sharding` to allocate each worker's share."""
    if cfg.model.embeddings == "dense":
        return _build(cfg, data)
    from advrec.models.torchrec_tables import torchrec_tables  # optional: imported when asked

    with tables_from(torchrec_tables(torch.device("meta" if sharded else "cpu"))):
        return _build(cfg, data)


def _build(cfg: RunConfig, data: Dataset) -> Recommender:
    m, users, items = cfg.model, data.num_users, data.num_items
    if m.name == "mf":
        return MF(users, items, m.dim, m.init, m.init_std)
    if m.name == "neumf":
        return NeuMF(users, items, m.dim, m.mlp_layers, m.dropout, m.init, m.init_std)
    if m.name == "sasrec":
        return SASRec(users, items, m.dim, m.max_len, m.layers, m.heads, m.dropout, m.init,
                      m.init_std)
    if m.name not in FEATURE_MODELS:
        # the config allows the zoo's names only; a name added there but not here must not
        # silently train another model
        raise AdvrecError(f"model.name: no model '{m.name}' in the zoo")
    features: dict[str, FeatureSet | None] = load_side_features(
        data.url, {"user": users, "item": items}, cfg.data.feature_buckets,
        tuple(cfg.data.exclude_features), tuple(cfg.data.numeric_features))
    if m.name == "deepfm":
        return DeepFM(users, items, features, m.dim, m.mlp_layers, m.dropout, m.init, m.init_std)
    if m.name == "dcnv2":
        return DCNv2(users, items, features, m.dim, m.cross_layers, m.mlp_layers, m.dropout,
                     m.init, m.init_std)
    if m.name == "twotower":
        return TwoTower(users, items, features, m.dim, m.mlp_layers, m.temperature, m.logq,
                        m.dropout, m.init, m.init_std)
    return MMoE(users, items, features, m.dim, m.experts, m.mlp_layers, m.dropout, m.init,
                m.init_std)
