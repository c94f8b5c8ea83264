"""Optimizers of a run: the configured kind over the model's parameters, with sparse tables
(``train.sparse_embeddings``) a sparse optimizer of the same kind beside it, and with torchrec's
fused tables (which update themselves in the backward) the rest only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advrec.config import ADAM_KINDS, TrainConfig
from advrec.models.base import Recommender

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


# Optimizers that apply sparse gradients (to the rows a step touched): Adam's sparse variant
# keeps its moments per row and updates a row only when it is looked up, as "lazy Adam" does
SPARSE_OPTIMIZERS = {
    "adam": torch.optim.SparseAdam,
    "adamw": torch.optim.SparseAdam,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


class SplitOptimizer:
    """Several optimizers stepped as one (the sparse tables' and the dense rest's)."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = parts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, saved in zip(self.parts, state["parts"], strict=True):
            part.load_state_dict(saved)


Optimizer = torch.optim.Optimizer | SplitOptimizer


def hyperparameters(cfg: TrainConfig, kind: str, decay: bool = True) -> dict[str, Any]:
    """The keyword arguments of an optimizer of ``kind`` (a key of `OPTIMIZERS`, or
    ``rowwise_adagrad``): the learning rate, Adam's betas for the Adam kinds, and with
    ``decay`` the weight decay (SparseAdam and torchrec's fused tables take none)."""
    kwargs: dict[str, Any] = {"lr": cfg.lr}
    if kind in ADAM_KINDS:
        kwargs["betas"] = tuple(cfg.betas)
    if decay:
        kwargs["weight_decay"] = cfg.weight_decay
    return kwargs


def make_optimizer(model: Recommender, cfg: TrainConfig, fused_tables: bool = False) -> Optimizer:
    """The configured optimizer over ``model``'s parameters, and with
    ``train.sparse_embeddings`` a sparse optimizer of the same kind over the embedding tables,
    whose gradients become sparse, so a step costs the batch's rows, not the tables. Call it
    before wrapping the model in DDP, which lays out its buckets by the gradients' kind.

    ``fused_tables`` (torchrec's): the tables update themselves in the backward
    (`advrec.train.sharding`), so this optimizer has the other parameters only, if any."""
    if fused_tables:
        from advrec.train.sharding import sharded_tables

        tables = {id(p) for t in sharded_tables(model).values() for p in t.parameters()}
        dense = [p for p in model.parameters() if id(p) not in tables]
        return SplitOptimizer([OPTIMIZERS[cfg.optimizer](dense, **hyperparameters(cfg, cfg.optimizer))]
                              if dense else [])
    if not cfg.sparse_embeddings:
        return OPTIMIZERS[cfg.optimizer](model.parameters(), **hyperparameters(cfg, cfg.optimizer))
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    for table in tables:
        table.sparse = True
    sparse = {id(t.weight) for t in tables}
    dense = [p for p in model.parameters() if id(p) not in sparse]
    # no weight decay with sparse gradients (the config refuses it): train.reg instead
    parts = [SPARSE_OPTIMIZERS[cfg.optimizer]([t.weight for t in tables],
                                              **hyperparameters(cfg, cfg.optimizer, decay=False))]
    if dense:
        parts.append(OPTIMIZERS[cfg.optimizer](dense, **hyperparameters(cfg, cfg.optimizer, decay=False)))
    return SplitOptimizer(parts)
