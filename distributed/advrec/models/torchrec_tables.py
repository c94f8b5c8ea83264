"""Embedding tables backed by torchrec, the library that shards them across workers (issue 7).

`TorchrecEmbedding` is a drop-in for ``nn.Embedding`` (same call, same shapes, same weights)
holding one torchrec ``EmbeddingCollection`` table, the module type torchrec's
``DistributedModelParallel`` knows how to shard. `use_torchrec` swaps every ``nn.Embedding`` of a
model for one, keeping its weights, so every model of the zoo keeps its `embed`/`score` split: the
adversary still perturbs what `embed` returns, the looked-up rows, never the tables.

torchrec is optional (``make torchrec``, see README.md): importing this module without it raises
an `AdvrecError` that says how to install it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrec.errors import AdvrecError
from advrec.models.base import Recommender

try:
    from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
except ImportError:  # pragma: no cover - depends on the optional install
    raise AdvrecError("model.embeddings=torchrec needs torchrec: run `make torchrec` (CPU: "
                      "fbgemm-gpu-cpu, then torchrec without its CUDA dependency; see "
                      "README.md)") from None


class TorchrecEmbedding(nn.Module):
    """One table, ``num_embeddings`` x ``embedding_dim``, looked up through torchrec.

    ``padding_idx`` behaves as in ``nn.Embedding``: its row is looked up as zeros and gets no
    gradient (torchrec tables have no padding row, so its lookups are masked out).
    """

    def __init__(self, name: str, num_embeddings: int, embedding_dim: int,
                 padding_idx: int | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        self.name, self.padding_idx = name, padding_idx
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.collection = EmbeddingCollection(
            tables=[EmbeddingConfig(name=name, embedding_dim=embedding_dim,
                                    num_embeddings=num_embeddings, feature_names=[name])],
            device=device or torch.device("cpu"))

    @property
    def weight(self) -> Tensor:
        """The table (num_embeddings, embedding_dim), while it is not sharded."""
        return self.collection.embeddings[self.name].weight

    def forward(self, ids: Tensor) -> Tensor:
        """``ids`` of any shape (...) -> rows (..., embedding_dim)."""
        flat = ids.reshape(-1)
        # one id per "bag": a jagged batch whose every length is 1
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=[self.name], values=flat, lengths=torch.ones_like(flat, dtype=torch.int32))
        rows = self.collection(features)[self.name].values()
        if self.padding_idx is not None:
            rows = rows * (flat != self.padding_idx).unsqueeze(-1).to(rows.dtype)
        return rows.reshape(*ids.shape, self.embedding_dim)


def use_torchrec(model: Recommender) -> Recommender:
    """``model`` with each of its id tables (`Recommender.tables`) replaced by a
    `TorchrecEmbedding` of the same weights, named after its place in the model (``user``,
    ``item_fields.tables.age``, ...); other embeddings (SASRec's positions) stay dense, as its
    other layers do. Returns the model."""
    tables = {id(t) for t in model.tables().values()}
    for path, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if id(child) in tables:
                name = f"{path}.{child_name}" if path else child_name
                table = TorchrecEmbedding(name.replace(".", "__"), child.num_embeddings,
                                          child.embedding_dim, child.padding_idx,
                                          child.weight.device)
                with torch.no_grad():
                    table.weight.copy_(child.weight)
                setattr(module, child_name, table)
    return model
