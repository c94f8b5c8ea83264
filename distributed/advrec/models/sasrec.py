"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's item sequence.

The split every model follows holds here too: `embed` looks up the sequence's item rows and the
candidate items' rows (one shared item table); `score` runs the transformer and takes dot
products. An adversary therefore perturbs the item-sequence embeddings and PGD re-runs only the
transformer.

Sequences are left-padded with the id ``num_items`` (a zero, never-trained row). Two choices
make padding unable to leak into any real position's output:

- attention never looks at a padded key (each position also sees itself, so a padded query row
  is never fully masked and stays finite);
- positions count from the first real item, so the same history gets the same position
  embeddings however much padding precedes it.

The blocks are the paper's as its official code builds them (kang205/SASRec, which
pmixer/SASRec.pytorch follows), not ``nn.TransformerEncoderLayer``'s pre-norm block:

- the query is the normalised input, the keys and values the raw one, and the residual adds the
  normalised input; the feed-forward adds its own normalised input back;
- dropout on the attention weights, none on the attention output, and no output projection;
- LayerNorm eps 1e-8; Glorot-initialised projections, each block drawn on its own;
- the position table initialised as the item table is (Glorot by default), so positions and
  items start at the references' ratio (N(0, 1), PyTorch's default, made positions start about
  14 times larger than the √d-scaled item rows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advrec.errors import AdvrecError
from advrec.models.base import Batch, Recommender, RowIds, new_table
from advrec.models.base import init_std as init_scale

LAYER_NORM_EPS = 1e-8  # both references'; PyTorch's default is 1e-5


class SASRec(Recommender):
    """Batch keys: ``seq`` (B, L) item ids, left-padded with ``num_items``; ``item`` (B, L, C)
    candidate items scored at every position (training: the next item, then negatives), or
    instead ``target`` (B, L), the next item, to score every item (a full softmax)."""

    def __init__(self, num_users: int, num_items: int, dim: int, max_len: int, layers: int = 2,
                 heads: int = 1, dropout: float = 0.2, init: str = "xavier",
                 init_std: float = 0.1) -> None:
        super().__init__()
        if max_len <= 0:
            raise AdvrecError(f"model.max_len: must be > 0 (got {max_len})")
        self.num_users, self.num_items, self.max_len = num_users, num_items, max_len
        self.pad = num_items
        self.item = new_table("item", num_items + 1, dim, init, init_std, padding_idx=self.pad)
        # not a table an adversary moves (positions are no user's input): a plain embedding,
        # drawn by the item table's rule
        self.position = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position.weight, std=init_scale(init, init_std, max_len, dim))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """``item_seq`` (B, L, d) the history's rows; ``item`` (B, L, C, d) the candidates' rows,
        or (N, d) every item's row when the batch has a ``target`` instead of candidates."""
        candidates = (self.item(batch["item"]) if "item" in batch
                      else self.all_items(batch["seq"].device))
        return {"item_seq": self.history(batch["seq"]), "item": candidates}

    def history(self, seq: Tensor) -> Tensor:
        """The rows (B, L, d) of histories ``seq`` (B, L): `embed`'s ``item_seq`` alone, for
        an attack that changes the history and not the candidates."""
        return self.item(seq)

    def rows(self, batch: Batch) -> dict[str, RowIds]:
        seq = batch["seq"]
        candidates = (batch["item"] if "item" in batch
                      else torch.arange(self.num_items, device=seq.device))
        rows = self.num_items + 1  # the padding row too
        return {"item_seq": ("item", seq, rows), "item": ("item", candidates, rows)}

    def hidden(self, item_seq: Tensor, seq: Tensor) -> Tensor:
        """The transformer's output (B, L, d) at every position; zero at padded positions."""
        real = seq != self.pad  # (B, L)
        L = seq.shape[1]
        # positions counted from each sequence's first real item (padding shifts nothing)
        positions = (real.long().cumsum(1) - 1).clamp(min=0)
        x = item_seq * math.sqrt(item_seq.shape[-1]) + self.position(positions)
        x = self.dropout(x) * real.unsqueeze(-1)
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).triu(1)  # True = hidden
        blocked = causal | ~real.unsqueeze(1)  # (B, L, L): no future keys, no padded keys
        blocked = blocked & ~torch.eye(L, dtype=torch.bool, device=seq.device)  # but itself
        for block in self.blocks:
            x = block(x, ~blocked) * real.unsqueeze(-1)
        return self.norm(x) * real.unsqueeze(-1)

    def score(self, emb: dict[str, Tensor], batch: Batch) -> Tensor:
        """(B, L, C) logits: each position's hidden state dotted with its candidates; with every
        item as a candidate, (B, L, 1 + N): the target's logit, then all items' logits with the
        target's own masked out, so that column 0 is the positive as for sampled candidates and
        a softmax over the row is exactly the full softmax over items."""
        h = self.hidden(emb["item_seq"], batch["seq"])
        items = emb["item"]
        if items.dim() == 2:
            return self._target_first(h @ items.T, batch["target"])
        return (h.unsqueeze(2) * items).sum(-1)

    def _target_first(self, logits: Tensor, target: Tensor) -> Tensor:
        """(B, L, N) logits of every item and (B, L) targets -> (B, L, 1 + N), see `score`."""
        # padded targets (never in the loss: the task masks them) read any real column
        t = target.clamp(max=self.num_items - 1).unsqueeze(-1)
        # the lowest finite value, not -inf: exp() gives 0 all the same, but bce's
        # (1 - label) * logit term would turn -inf into nan
        rest = logits.scatter(-1, t, torch.finfo(logits.dtype).min)
        return torch.cat([logits.gather(-1, t), rest], -1)

    def tables(self) -> dict[str, nn.Module]:
        # one table serves both embed keys; listed once so an attack on tables moves it once
        return {"item": self.item}

    def score_candidates(self, context: Batch, items: Tensor) -> Tensor:
        """Logits (B, C) of ``items`` (B, C) as the next item after each history ``seq``."""
        return (self.next_state(context["seq"]).unsqueeze(1) * self.item(items)).sum(-1)

    def rank_scores(self, context: Batch, items: Tensor | None = None,
                    max_pairs: int = 1 << 14) -> Tensor:
        """Next-item scores of ``items`` (C,) (default every item) after each history: ``seq``
        (B, L) -> (B, C)."""
        seq = context["seq"]
        return self.next_state(seq) @ self.item(
            self.every_item(seq.device) if items is None else items).T

    def dot_ranking(self, context: Batch) -> tuple[Tensor, Tensor]:
        """``seq`` (B, L) -> the last position's hidden state (B, d) and every item row (N, d)."""
        seq = context["seq"]
        return self.next_state(seq), self.all_items(seq.device)

    def next_state(self, seq: Tensor) -> Tensor:
        """The hidden state (B, d) after each whole history ``seq`` (B, L), which scores the
        next item: the last position's (left padding: it is always a real one)."""
        return self.hidden(self.history(seq), seq)[:, -1]

    def all_items(self, device: torch.device) -> Tensor:
        """Every item's row (N, d), the padding row left out; by lookup, not ``.weight``: a
        sharded table has no whole weight."""
        return self.item(self.every_item(device))


class Block(nn.Module):
    """One self-attention block of the official SASRec: (B, L, d) -> (B, L, d)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.attention_dropout = heads, dropout
        self.attention_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.feed_forward_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        # the official code's two kernel-1 convolutions, a linear map per position
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                          nn.Linear(dim, dim), nn.Dropout(dropout))
        for module in self.modules():
            if isinstance(module, nn.Linear):  # TensorFlow's dense and conv1d defaults
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` (B, L, d); ``allowed`` (B, L, L), True where a query may attend to a key."""
        query = self.attention_norm(x)
        x = query + self.attend(query, x, allowed)
        x = self.feed_forward_norm(x)
        return x + self.feed_forward(x)

    def attend(self, query: Tensor, x: Tensor, allowed: Tensor) -> Tensor:
        """Attention of ``query`` (B, L, d) over ``x`` (B, L, d) as keys and values, heads
        merged: (B, L, d)."""
        B, L, d = x.shape

        def split(t: Tensor) -> Tensor:  # (B, L, d) -> (B, heads, L, d / heads)
            return t.view(B, L, self.heads, d // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.query(query)), split(self.key(x)), split(self.value(x)),
            attn_mask=allowed.unsqueeze(1),
            dropout_p=self.attention_dropout if self.training else 0.0)
        return attended.transpose(1, 2).reshape(B, L, d)
