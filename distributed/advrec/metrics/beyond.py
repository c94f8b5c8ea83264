"""Beyond-accuracy metrics of the top-K lists (``eval.beyond``): coverage, concentration,
popularity bias, novelty and diversity, at every K of ``eval.ks``.

RecBole's definitions where it has one (its ItemCoverage, GiniIndex, ShannonEntropy,
AveragePopularity and TailPercentage), popularity being an item's training interactions (the
``known`` and ``train`` splits):

- ``coverage@k``: distinct items in all users' top-k lists / catalogue size;
- ``gini@k``: the Gini index of how often each catalogue item is recommended (0: every item as
  often; towards 1: every list the same few items);
- ``entropy@k``: RecBole's ShannonEntropy: −Σ p·ln p over the recommended items (p: an item's
  share of all recommendations), divided by the number of distinct recommended items;
- ``avgpop@k``: a list's mean item popularity;
- ``tail@k``: a list's share of long-tail items, the ``eval.tail_ratio`` least popular of the
  catalogue (ties by id). RecBole ranks only the items trained on, so an item no one trained on
  is never tail there; here it is the first (the two agree when every item has interactions);

and two more, per user:

- ``novelty@k``: a list's mean self-information log2((U + 1) / (u_i + 1)), u_i the item's
  training users out of U (Zhou et al. 2010, add-one smoothed so an item nobody trained on is
  finite);
- ``ild@k``: intra-list diversity, 1 − the mean cosine of the list's item pairs (0 for k = 1),
  over the model's item-side embedding rows (`item_vectors`: for feature models the item's
  field rows, its categories among them). Under an embedding attack they are the attacked rows,
  the ones the attacked model ranks with.

Per-user metrics are averaged over the evaluated users; the corpus metrics (coverage, gini,
entropy) come from the recommendation counts of every item summed over all users (and workers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advrec.config.policy import BEYOND_PER_USER
from advrec.data.dataset import Dataset
from advrec.models.base import Batch, Recommender
from advrec.shards import Shard, sum_tensors_over_shards


@torch.no_grad()
def item_vectors(model: Recommender, context: Batch) -> Tensor:
    """Every item's item-side embedding rows, concatenated: (num_items, D) on the model's device.

    ``context`` is one example's (B = 1) ranking context: the models look items up as a
    context's candidates, (1, num_items, d) per item-side key; a sequence's own rows
    (SASRec's ``item_seq``) are the context's, not the candidates'.
    """
    n = model.num_items
    first = next(iter(context.values()))
    items = torch.arange(n, device=first.device).unsqueeze(0)
    emb = model.embed({**context, "item": items})
    parts = [v[0] for k, v in sorted(emb.items())
             if k.startswith("item") and not k.endswith("_seq") and v.dim() == 3
             and v.shape[1] == n]
    return torch.cat(parts, dim=-1)


class Beyond:
    """The beyond-accuracy sums of top-K lists, added chunk by chunk (`add`), and the corpus
    metrics once every list is in (`corpus`)."""

    def __init__(self, data: Dataset, vectors: Tensor, ks: list[int], tail_ratio: float) -> None:
        """``vectors`` (num_items, D): what `ild` compares (`item_vectors`)."""
        n = data.num_items
        item = torch.cat([data.known.item, data.train.item])
        user = torch.cat([data.known.user, data.train.user])
        self.popularity = torch.bincount(item, minlength=n).double()  # (N,) interactions
        users_of = torch.bincount(torch.unique(user * n + item) % n, minlength=n).double()
        self.information = torch.log2((data.num_users + 1) / (users_of + 1))  # (N,)
        # the least popular items first, ties by id (a stable sort of ids in order)
        order = torch.sort(self.popularity, stable=True).indices
        self.tail = torch.zeros(n, dtype=torch.float64)
        self.tail[order[:max(int(n * tail_ratio), 1)]] = 1.0
        self.vectors = F.normalize(vectors.detach().float().cpu(), dim=-1)
        self.ks = ks
        self.counts = torch.zeros(len(ks), n, dtype=torch.float64)  # recommendations per item

    def add(self, top: Tensor, listed: Tensor, sums: dict[str, float]) -> None:
        """Add the lists ``top`` (B, K) (items, best first; K ≥ max(ks) unless the catalogue is
        smaller) to the counts, and their per-user values to ``sums``. ``listed`` (B, K) bool:
        which entries are in the list (a user with fewer unseen items than K has a shorter
        one: the rest were masked). A user's value is over the items of its list (0 for an
        empty list; ild 0 for fewer than two items)."""
        unit = self.vectors[top] * listed.unsqueeze(-1)  # (B, K, D), 0 off the list
        cosines = unit @ unit.transpose(1, 2)  # (B, K, K)
        for j, k in enumerate(self.ks):
            items, on = top[:, :k], listed[:, :k].double()
            n = on.sum(1)  # (B,) the list's length
            self.counts[j] += torch.bincount(items[on.bool()], minlength=self.counts.shape[1])
            block = cosines[:, :k, :k]
            pairs = n * (n - 1)
            same = (block.sum((1, 2)) - block.diagonal(dim1=1, dim2=2).sum(1)).double()
            same = torch.where(pairs > 0, same / pairs.clamp(min=1), torch.ones_like(same))
            per_item = {"avgpop": self.popularity, "tail": self.tail,
                        "novelty": self.information}
            # each list's mean over its own items
            values = {name: (v[items] * on).sum(1) / n.clamp(min=1) for name, v in per_item.items()}
            values["ild"] = 1.0 - same
            for name in BEYOND_PER_USER:
                key = f"{name}@{k}"
                sums[key] = sums.get(key, 0.0) + float(values[name].sum())

    def corpus(self, shard: Shard, device: torch.device) -> dict[str, float]:
        """Coverage, Gini index and entropy at every K, from the counts of every worker."""
        counts = {"counts": self.counts.to(device)}
        sum_tensors_over_shards(counts, shard)
        out: dict[str, float] = {}
        n = self.counts.shape[1]
        for k, per_item in zip(self.ks, counts["counts"].cpu()):
            total = float(per_item.sum())
            shown = per_item[per_item > 0]
            rank = torch.arange(1, n + 1, dtype=torch.float64)
            share = shown / max(total, 1.0)
            out[f"coverage@{k}"] = shown.numel() / n
            out[f"gini@{k}"] = float(((2 * rank - n - 1) * torch.sort(per_item).values).sum()
                                     / max(total, 1.0) / n)
            out[f"entropy@{k}"] = float(-(share * share.log()).sum() / max(shown.numel(), 1))
        return out
