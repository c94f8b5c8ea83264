"""Embedding tables backed by torchrec, the library that shards them across workers
(``model.embeddings=torchrec``).

`TorchrecEmbedding` is a drop-in for ``nn.Embedding`` (same call, same shapes, same state-dict
keys) holding one table of a torchrec ``EmbeddingCollection``, the module type torchrec's
``DistributedModelParallel`` shards (`advrec.train.sharding`). A model built inside
``tables_from(torchrec_tables(device))`` makes every id table this way, so every model of the zoo
keeps its `embed`/`score` split: the adversary perturbs what `embed` returns, the looked-up rows,
never the tables.

torchrec is optional (``make torchrec``, see README.md): importing this module without it raises
an `AdvrecError` that says how to install it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from advrec.errors import TORCHREC_MISSING, AdvrecError
from advrec.models.base import TableFactory, dense_table


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Keep torchrec's and fbgemm's INFO lines (a line per library loaded, per table kernel,
    per planner estimate; some on the root logger), which Ray's workers print, out of the
    logs while inside."""
    saved = logging.root.level
    logging.root.setLevel(max(saved, logging.WARNING))
    for library in ("torchrec", "fbgemm_gpu"):
        logging.getLogger(library).setLevel(logging.WARNING)
    try:
        yield
    finally:
        logging.root.setLevel(saved)


with quiet_logs():
    try:
        from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
    except ImportError:  # depends on the optional install
        raise AdvrecError(TORCHREC_MISSING) from None


class TorchrecEmbedding(nn.Module):
    """One table, ``num_embeddings`` x ``embedding_dim``, looked up through torchrec.

    Its state-dict key is ``<prefix>weight``, as ``nn.Embedding``'s (not torchrec's
    ``collection.embeddings.<name>.weight``), so a checkpoint of either backend loads into the
    other. ``padding_idx`` behaves as in ``nn.Embedding``: its row is looked up as zeros and gets
    no gradient (torchrec tables have no padding row, so its lookups are masked out).
    """

    def __init__(self, name: str, num_embeddings: int, embedding_dim: int, std: float,
                 padding_idx: int | None = None, device: torch.device | None = None) -> None:
        """``device`` ``meta`` allocates nothing: `DistributedModelParallel` then allocates and
        initialises (normal with ``std``) only this worker's shard."""
        super().__init__()
        self.name, self.padding_idx = name, padding_idx
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.collection = EmbeddingCollection(
            tables=[EmbeddingConfig(name=name, embedding_dim=embedding_dim,
                                    num_embeddings=num_embeddings, feature_names=[name],
                                    init_fn=functools.partial(nn.init.normal_, std=std))],
            device=device or torch.device("cpu"))
        self._inner = f"collection.embeddings.{name}.weight"
        self._register_state_dict_hook(TorchrecEmbedding._outer_key)
        self._register_load_state_dict_pre_hook(self._inner_key)

    @property
    def weight(self) -> Tensor:
        """The whole table (num_embeddings, embedding_dim), while it is not sharded."""
        if not isinstance(self.collection, EmbeddingCollection):
            raise AdvrecError(f"table '{self.name}' is sharded across workers: it has no whole "
                              "weight here (look its rows up instead)")
        return self.collection.embeddings[self.name].weight

    def forward(self, ids: Tensor) -> Tensor:
        """``ids`` of any shape (...) -> rows (..., embedding_dim)."""
        # contiguous: a sharded lookup reads the ids' memory as is (one field of a feature
        # model's (B, F) ids is a strided view)
        flat = ids.reshape(-1).contiguous()
        # one id per "bag": a jagged batch whose every length is 1
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=[self.name], values=flat, lengths=torch.ones_like(flat, dtype=torch.int32))
        rows = self.collection(features)[self.name].values()
        if self.padding_idx is not None:
            rows = rows * (flat != self.padding_idx).unsqueeze(-1).to(rows.dtype)
        return rows.reshape(*ids.shape, self.embedding_dim)

    @staticmethod
    def _outer_key(module: TorchrecEmbedding, state: dict[str, Any], prefix: str,
                   _metadata: Any) -> None:
        state[prefix + "weight"] = state.pop(prefix + module._inner)

    def _inner_key(self, state: dict[str, Any], prefix: str, *_: Any) -> None:
        if prefix + "weight" in state:
            state[prefix + self._inner] = state.pop(prefix + "weight")


SHARDABLE_WIDTH = 4
"""FBGEMM's tables have widths that are multiples of this."""


def torchrec_tables(device: torch.device) -> TableFactory:
    """A table factory (`advrec.models.base.tables_from`) making `TorchrecEmbedding` tables on
    ``device`` (``meta`` to be sharded). A table whose width FBGEMM cannot take (not a multiple
    of `SHARDABLE_WIDTH`: DeepFM's first-order weights, width 1, a 1/dim of its tables) stays an
    ``nn.Embedding``, replicated and data-parallel as the dense layers."""

    def factory(name: str, num_embeddings: int, embedding_dim: int, std: float,
                padding_idx: int | None = None) -> nn.Module:
        if embedding_dim % SHARDABLE_WIDTH:
            return dense_table(name, num_embeddings, embedding_dim, std, padding_idx)
        return TorchrecEmbedding(name, num_embeddings, embedding_dim, std, padding_idx, device)

    return factory
