"""The contract every model follows: embedding lookup (`embed`) split from scoring (`score`).

The adversary attaches between the two: it perturbs the looked-up rows that `embed` returns and
re-runs only `score`, so K attack steps never touch the (possibly huge) tables again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

if TYPE_CHECKING:
    from advrec.data.features import Field

Batch = dict[str, Tensor]
"""A training or evaluation batch. Keys used by the core models:

- ``user``: LongTensor (B,), user indices (user-id models);
- ``seq``: LongTensor (B, L), item histories, left-padded (sequential models);
- ``item``: LongTensor (B, C) candidate items per example, or (B, L, C) per position of a
  sequence (column 0 is the positive in training);
- ``mask``: BoolTensor (B, L), which sequence positions carry a training target.
"""

TableRows = tuple[str, "Field | None"]
"""What a table's rows stand for: ``(side, None)`` the ids of ``side`` (``user`` or ``item``),
row i for id i (a row beyond them, SASRec's padding, is no id's); ``(side, field)`` the values
of that side's feature field, row v for value id v (`Field.vocab`)."""

RowIds = tuple[str, Tensor, int]
"""Which rows an `embed` key's vectors are: (the name of what they are rows of, their ids
(the key's shape without the last dimension), how many rows it has)."""


class Recommender(nn.Module):
    """Base class: subclasses implement `embed`, `score` and `tables`."""

    num_users: int
    num_items: int

    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """All embedding lookups of the batch.

        Returns a dict of looked-up rows; keys start with the table's side (``user...`` rows are
        (B, d), ``item...`` rows are (B, C, d)). The keys are the same as those of `tables`.
        """
        raise NotImplementedError

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """Everything after the lookup: returns logits (B, C), one per candidate item."""
        raise NotImplementedError

    def tables(self) -> dict[str, nn.Module]:
        """The distinct embedding tables (`new_table`), each listed once (an attack on tables moves it once).

        Every key of `embed`'s output starts with the side (``user``/``item``) of the table it
        was looked up from; several keys may share one table (SASRec's ``item_seq`` and ``item``).
        """
        raise NotImplementedError

    def table_rows(self) -> dict[str, TableRows]:
        """What each table of `tables` (same keys) holds a row for (`TableRows`). Here: every
        table is one of ids, of the side its key starts with; models with feature fields say
        which tables are theirs."""
        return {key: (key.split("_")[0], None) for key in self.tables()}

    def rows(self, batch: Batch) -> dict[str, RowIds]:
        """Which row each vector of ``embed(batch)`` is, per key: ``embed(batch)[key]`` (*S, d)
        holds the rows ``ids`` (*S) of ``name``: a table, or for a pooled field (the mean of a
        multi-valued feature's tokens) the users or items it pools for. Keys of one name share
        rows (SASRec's history and candidates are both item rows). ``adv.schedule=accumulate``
        keeps one δ per row (`advrec.adversarial.memory`)."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> Tensor:
        """Logits (B, C) for the batch's candidate items."""
        return self.score(self.embed(batch), batch)

    def score_candidates(self, context: Batch, items: Tensor) -> Tensor:
        """Logits (B, C) of candidate ``items`` (B, C) in each example's ``context``.

        The context is what the model scores from: ``{"user": (B,)}`` for user-id models,
        ``{"seq": (B, L)}`` for sequential ones (see `advrec.train.tasks`).
        """
        batch = {**context, "item": items}
        return self.rank_logits(self.embed(batch), batch)

    def rank_logits(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """The logits (B, C) the candidates are ranked by: `score`'s (a multi-task model's,
        its ranking task's)."""
        return self.score(emb, batch)

    def rank_scores(self, context: Batch, items: Tensor | None = None,
                    max_pairs: int = 1 << 14) -> Tensor:
        """Scores of ``items`` (C,) in each context, default every item: (B, C), for
        full-ranking evaluation and recommendations (`advrec.serve`, block by block).

        The generic path scores items in chunks through `score_candidates`, at most
        ``max_pairs`` (context, item) pairs at a time. That bounds the dense part's activations
        (an MLP over every pair of a 1024-user chunk would allocate gigabytes), and small chunks
        stay under the allocator's mmap threshold instead of page-faulting afresh each time:
        NeuMF's full ranking on ml-100k took 0.8 s with 2^14 pairs against 2.2 s with 2^18.
        Models with a cheaper closed form (MF's matrix product) override it.
        """
        first = next(iter(context.values()))
        size = first.shape[0]
        items = self.every_item(first.device) if items is None else items
        item_chunk = max(1, max_pairs // max(size, 1))
        return torch.cat([self.score_candidates(context, chunk.expand(size, -1))
                          for chunk in items.split(item_chunk)], dim=1)

    def dot_ranking(self, context: Batch) -> tuple[Tensor, Tensor] | None:
        """When every ranking score is a dot product, its two sides: queries (B, d) and every
        item's vector (num_items, d), ``rank_scores == queries @ items.T``; else None. Exact
        top-K search may then skip items whose norm bounds their score below a user's K-th
        best (`advrec.serve.recommend`)."""
        return None

    def every_item(self, device: torch.device) -> Tensor:
        """Every item id, ``arange(num_items)`` (num_items,) on ``device``."""
        return torch.arange(self.num_items, device=device)


def init_std(init: str, std: float, num_embeddings: int, embedding_dim: int) -> float:
    """The std of a table's normal init: ``xavier`` (RecBole's BPR) or ``normal`` with ``std``."""
    if init == "xavier":  # xavier_normal_'s std for a (num_embeddings, embedding_dim) weight
        return math.sqrt(2.0 / (num_embeddings + embedding_dim))
    return std


class TableFactory(Protocol):
    def __call__(self, name: str, num_embeddings: int, embedding_dim: int, std: float,
                 padding_idx: int | None = None) -> nn.Module:
        """A table named ``name`` (unique in its model: the key of `Recommender.tables`),
        (num_embeddings, embedding_dim), initialised normal with ``std``; looked up as
        ``nn.Embedding`` is: ids (...) -> rows (..., embedding_dim)."""
        ...


def dense_table(name: str, num_embeddings: int, embedding_dim: int, std: float,
                padding_idx: int | None = None) -> nn.Module:
    """An ``nn.Embedding`` (``model.embeddings=dense``), its padding row zero."""
    # skip_init: nn.Embedding's own N(0, 1) init would be drawn only to be overwritten; on the
    # default device (skip_init's own default is the CPU), so a model built on "meta" is free
    table = skip_init(nn.Embedding, num_embeddings, embedding_dim, padding_idx=padding_idx,
                      device=torch.get_default_device())
    nn.init.normal_(table.weight, std=std)
    if padding_idx is not None:
        with torch.no_grad():
            table.weight[padding_idx].zero_()  # the init overwrote it
    return table


_TABLES: ContextVar[TableFactory] = ContextVar("advrec_tables", default=dense_table)


@contextlib.contextmanager
def tables_from(factory: TableFactory) -> Iterator[None]:
    """Models built inside this context make their id tables with ``factory`` (e.g. torchrec's,
    `advrec.models.torchrec_tables`), instead of ``nn.Embedding``."""
    token = _TABLES.set(factory)
    try:
        yield
    finally:
        _TABLES.reset(token)


def new_table(name: str, num_embeddings: int, embedding_dim: int, init: str, std: float,
              padding_idx: int | None = None) -> nn.Module:
    """A model's id table ``name``, initialised by ``init`` (`init_std`), made by the factory of
    the enclosing `tables_from` (``nn.Embedding`` by default)."""
    return _TABLES.get()(name, num_embeddings, embedding_dim,
                         init_std(init, std, num_embeddings, embedding_dim), padding_idx)


def mlp(width: int, layers: list[int], dropout: float,
        linear_out: bool = False) -> tuple[nn.Sequential, int]:
    """Linear layers of the given widths, each followed by ReLU and dropout (the last one bare
    when ``linear_out``); returns it and its output width."""
    modules: list[nn.Module] = []
    for n, out in enumerate(layers):
        modules.append(nn.Linear(width, out))
        if not (linear_out and n == len(layers) - 1):
            modules += [nn.ReLU(), nn.Dropout(dropout)]
        width = out
    return nn.Sequential(*modules), width
