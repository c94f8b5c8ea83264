"""Target-item metrics: how far fake users pushed the items an attacker promotes.

T-HR@K and T-NDCG@K follow VAT's protocol (Zhang et al., RecSys 2024; ``_eval_target`` in their
code, Kaike-Zhang/VAT): every genuine user (index below `genuine_users`) who never interacted
with a target item, in any split, ranks all items, the items seen before the split masked as in
the usual full ranking (train for valid; train and valid for test); a hit when the target is in
the top K, NDCG ``1 / log2(rank + 2)`` (rank 0 first) for a hit. Each target's values are
averaged over its users, then the targets' averaged. Users who interacted with a target are left
out of its average (VAT skips one whose train, valid or test items hold it), so the metric counts
only exposure the user did not ask for; fake users never count.

The targets come from a ``targets.json`` (`advrec.poisoning.layout`): ``eval.targets``, else the
dataset's own. Its raw ids (``items``) are what count, mapped through the dataset's
``items.parquet``, so the targets of a poisoned dataset measure its clean twin too.

As the ranking evaluation (`advrec.metrics.evaluate`), a worker ranks its share of the users and
the per-target sums are added up across workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from advrec import io
from advrec.config import EvalConfig, RunConfig
from advrec.config.policy import TARGET
from advrec.config.schema import check_listed_once
from advrec.data.dataset import KNOWN, SPLIT_NAMES, Dataset, item_indices
from advrec.devices import model_device, to_device
from advrec.errors import AdvrecError, shown
from advrec.metrics.evaluate import SPLITS_SEEN_BEFORE, ContextFn, csr_rows
from advrec.metrics.ranking import metrics_from_hits, topk_items
from advrec.models.base import Recommender
from advrec.poisoning.layout import TARGETS_FILE, genuine_users
from advrec.shards import WHOLE, Shard, lockstep_chunks, shard_rows, sum_tensors_over_shards


@dataclass(frozen=True)
class TargetItems:
    """The items an attack promotes, as a ``targets.json`` names them.

    Attributes:
        source: the ``targets.json`` they were read from.
        items: their raw ids, as the dataset's ``items.parquet`` spells them.
        indices: their item indices in the dataset (in the order of ``items``).
    """

    source: str
    items: list[str]
    indices: list[int]


def read_targets(url: str, dataset: str) -> TargetItems:
    """The target items of the ``targets.json`` at ``url``, looked up in ``dataset``'s items.

    Raises:
        AdvrecError: naming the file, when it is not ``{"items": [raw id, ...], ...}`` with
            distinct ids, or naming the first id the dataset lacks.
    """
    spec = io.read_json(url)
    items = spec.get("items") if isinstance(spec, dict) else None
    if not (isinstance(items, list) and items and all(
            isinstance(i, (str, int)) and not isinstance(i, bool) for i in items)):
        raise AdvrecError(f"{url}: not a targets.json: expected {{\"items\": [raw item id, "
                          f"...], ...}}, got {shown(spec)}")
    return listed_targets([str(i) for i in items], dataset, url)


def listed_targets(raw: list[str], dataset: str, source: str) -> TargetItems:
    """The target items ``raw`` (raw ids, from ``source``: a file or a flag), looked up in
    ``dataset``'s items; a repeated or unknown id is an error naming it and ``source``."""
    check_listed_once(raw, f"{source}: item")
    return TargetItems(source, raw, item_indices(dataset, raw, source))


def resolve_targets(cfg: EvalConfig, dataset: str) -> TargetItems | None:
    """The target items a run on ``dataset`` measures: ``eval.targets``, else the dataset's own
    ``targets.json``; ``None`` when there is neither."""
    url = cfg.targets or io.join(dataset, TARGETS_FILE)
    if cfg.targets is None and not io.exists(url):
        return None
    return read_targets(url, dataset)


def check_targets_reported(cfg: RunConfig, targets: TargetItems | None, dataset: str) -> None:
    """A search that optimises a target metric (``tune.metric``, ``weights`` or ``objectives``)
    needs target items, which the config alone cannot tell: checked once the dataset is known."""
    if targets is not None:
        return
    named = [("tune.metric", cfg.tune.metric), *(("tune.weights", k) for k in cfg.tune.weights),
             *(("tune.objectives", k) for k in cfg.tune.objectives)]
    for key, name in named:
        if name is not None and name.startswith(TARGET):
            raise AdvrecError(f"{key}: {shown(name)} needs target items, and {dataset} has no "
                              f"{TARGETS_FILE}: set eval.targets to one")


def target_hits(scores: Tensor, targets: Tensor, k: int) -> dict[str, Tensor]:
    """Each user's T-HR@k and T-NDCG@k of each target, from one chunk of a full ranking.

    Args:
        scores: (B, N) every item's score for each user, excluded items already at -inf.
        targets: (T,) int64 target item indices (on ``scores``' device).
        k: the cut-off.

    Returns:
        ``hr`` and ``ndcg``, (B, T) float32: 1 and ``1 / log2(rank + 2)`` when target t is in
        user b's top k (rank 0 first), else 0.
    """
    top = topk_items(scores, k)  # (B, K)
    hits = top.unsqueeze(1) == targets.view(1, -1, 1)  # (B, T, K): one relevant item per pair
    b, t, depth = hits.shape
    ones = torch.ones(b * t, dtype=torch.long, device=hits.device)
    per = metrics_from_hits(hits.reshape(b * t, depth), ones, [k])
    return {"hr": per[f"hit@{k}"].view(b, t), "ndcg": per[f"ndcg@{k}"].view(b, t)}


class TargetMetrics:
    """T-HR@K and T-NDCG@K of a dataset's target items: who counts is fixed once (`__init__`),
    then each call ranks a model (`__call__`)."""

    def __init__(self, data: Dataset, targets: TargetItems, k: int) -> None:
        """Raises AdvrecError naming a target that every genuine user interacted with (no user
        to measure it on)."""
        self.targets, self.k = targets, k
        self.indices = torch.tensor(targets.indices, dtype=torch.long)  # (T,)
        genuine = genuine_users(data.meta, f"{data.url}/meta.json")
        touched = torch.zeros(genuine, self.indices.numel(), dtype=torch.bool)  # (G, T)
        for name in (*SPLIT_NAMES, KNOWN):
            part = data.split(name)
            rows = torch.isin(part.item, self.indices) & (part.user < genuine)
            match = part.item[rows].unsqueeze(1) == self.indices  # (n, T)
            pair, target = match.nonzero(as_tuple=True)
            touched[part.user[rows][pair], target] = True
        self.eligible = ~touched
        self.users = self.eligible.sum(0)  # (T,): each target's users
        for raw, n in zip(targets.items, self.users.tolist()):
            if n == 0:
                raise AdvrecError(f"{targets.source}: target item {shown(raw)}: every genuine "
                                  "user of the dataset interacted with it; no user is left to "
                                  "measure it on")
        self.ranked = torch.nonzero(self.eligible.any(1)).squeeze(1)  # users ranked, ascending
        self.data = data

    def describe(self) -> dict[str, Any]:
        """What metrics.json says of the targets: their raw ids, K and each one's users."""
        return {"items": self.targets.items, "k": self.k, "users": self.users.tolist()}

    @torch.no_grad()
    def __call__(self, model: Recommender, split: str, context: ContextFn, batch_users: int,
                 shard: Shard = WHOLE) -> dict[str, float]:
        """``hr@K`` and ``ndcg@K`` of ``model`` on ``split`` (``valid`` or ``test``: which items
        are masked), scoring from each user's ``context``; this worker ranks its ``shard`` of
        the users, and the sums are combined."""
        was_training = model.training
        model.eval()
        device = model_device(model)
        seen = [self.data.positives(s) for s in SPLITS_SEEN_BEFORE[split]]
        targets = self.indices.to(device)
        sums = {m: torch.zeros(targets.numel(), dtype=torch.float64, device=device)
                for m in ("hr", "ndcg")}
        everyone = self.ranked.numel()
        users = self.ranked[shard_rows(everyone, shard)]
        try:
            for chunk, real in lockstep_chunks(users, everyone, batch_users, shard):
                scores = model.rank_scores(to_device(context(chunk, split), device))  # (B, N)
                if not real:  # a stand-in chunk: every worker scores as often (sharded tables)
                    continue
                for ptr, idx in seen:
                    scores[csr_rows(ptr, idx, chunk)] = -torch.inf
                eligible = self.eligible[chunk].to(device)  # (B, T)
                for name, values in target_hits(scores, targets, self.k).items():
                    sums[name] += (values * eligible).sum(0)
        finally:
            model.train(was_training)
        sums = sum_tensors_over_shards(sums, shard)
        users = self.users.to(torch.float64)
        return {f"{name}@{self.k}": float((total.cpu() / users).mean())
                for name, total in sums.items()}
