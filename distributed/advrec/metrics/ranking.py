"""Top-K ranking metrics: Recall, NDCG, Hit, MRR and Precision, from per-user hit lists.

Definitions follow RecBole (per-user values averaged over users with at least one relevant item):

- ``hit@k``       1 if any relevant item is in the top k;
- ``recall@k``    relevant items in the top k / relevant items;
- ``precision@k`` relevant items in the top k / k;
- ``mrr@k``       1 / rank of the first relevant item in the top k (0 if none);
- ``ndcg@k``      DCG of the top k / DCG of an ideal list of min(k, #relevant) items.
"""

from __future__ import annotations

import torch
from torch import Tensor


def topk_items(scores: Tensor, k: int) -> Tensor:
    """(B, min(k, N)) int64: the items at the top-k positions of each row of ``scores`` (B, N),
    best first (excluded items already at -inf)."""
    return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices


def topk_hits(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """Bool (B, k): whether the item at each of the top-k positions is relevant.

    ``scores`` (B, N) with excluded items already at -inf; ``relevant`` bool (B, N).
    """
    return relevant.gather(1, topk_items(scores, k))


def metrics_from_hits(hits: Tensor, n_relevant: Tensor, ks: list[int]) -> dict[str, Tensor]:
    """Per-user metric values (B,) for each ``metric@k``.

    ``hits`` bool (B, K) with K >= max(ks) (or fewer when there are fewer items); ``n_relevant``
    (B,) the number of relevant items of each user (>= 1).
    """
    hits = hits.float()
    K = hits.shape[1]
    positions = torch.arange(K, dtype=torch.float32, device=hits.device)
    discounts = 1.0 / torch.log2(positions + 2.0)  # (K,)
    cum_hits = hits.cumsum(1)
    dcg = (hits * discounts).cumsum(1)
    ideal = discounts.cumsum(0)  # ideal DCG with j relevant items: ideal[j - 1]
    first = torch.where(hits.any(1), hits.argmax(1), torch.full_like(n_relevant, K))
    n = n_relevant.float()
    out: dict[str, Tensor] = {}
    for k in ks:
        kk = min(k, K)
        n_hit = cum_hits[:, kk - 1]
        idcg = ideal[(n_relevant.clamp(max=kk) - 1).long()]
        out[f"hit@{k}"] = (n_hit > 0).float()
        out[f"recall@{k}"] = n_hit / n
        out[f"precision@{k}"] = n_hit / k
        out[f"ndcg@{k}"] = dcg[:, kk - 1] / idcg
        out[f"mrr@{k}"] = torch.where(first < kk, 1.0 / (first.float() + 1.0), torch.zeros_like(n))
    return out
