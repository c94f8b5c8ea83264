"""Clean ranking evaluation: full ranking over all items, or the sampled protocol.

Full ranking scores every item for each user (in chunks of users, so memory stays
``batch_users × num_items``), masks the items the user was trained on (and, for the test split,
validated on; and those known before the train split: a stream's earlier windows), and ranks the
rest. The sampled protocol ranks each held-out item against
``num_negatives`` random items the user never interacted with (NCF / SASRec papers).

Given a ``shard`` (rank, world size), a worker scores only its share of the users (held-out
items, for the sampled protocol) and the sums are added up across workers, so every worker gets
the metrics of the whole split, the same as one worker's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from advrec.config import EvalConfig
from advrec.data.dataset import Dataset
from advrec.data.negatives import NegativeSampler
from advrec.devices import model_device, to_device
from advrec.metrics.beyond import Beyond, item_vectors
from advrec.metrics.ranking import metrics_from_hits, topk_hits
from advrec.models.base import Batch, Recommender
from advrec.shards import WHOLE, Shard, lockstep_chunks, shard_rows, sum_over_shards

SPLITS_SEEN_BEFORE = {"valid": ("known", "train"), "test": ("known", "train", "valid")}


def csr_rows(indptr: Tensor, indices: Tensor, users: Tensor) -> tuple[Tensor, Tensor]:
    """The CSR entries of ``users`` (B,) as coordinates: (row in 0..B-1, column), each (nnz,)."""
    starts, counts = indptr[users], indptr[users + 1] - indptr[users]
    rows = torch.repeat_interleave(torch.arange(users.numel()), counts)
    first = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
    return rows, indices[first + torch.arange(rows.numel())].long()


ContextFn = Callable[[Tensor, str], Batch]
"""Maps users (B,) and a split to what the model scores from (`advrec.train.tasks`)."""


def user_context(users: Tensor, split: str) -> Batch:
    """The context of user-id models: the users themselves."""
    return {"user": users}


@torch.no_grad()
def evaluate(model: Recommender, data: Dataset, split: str, cfg: EvalConfig,
             context: ContextFn = user_context, shard: Shard = WHOLE) -> dict[str, float]:
    """Mean ranking metrics of ``split`` ('valid' or 'test') under ``cfg.protocol``."""
    was_training = model.training
    model.eval()
    device = model_device(model)

    def on_device(users: Tensor, split: str) -> Batch:  # contexts are made on the CPU
        return to_device(context(users, split), device)

    try:
        if cfg.protocol == "sampled":
            partial = _evaluate_sampled(model, data, split, cfg, on_device, shard)
            beyond = None
        else:
            beyond = (Beyond(data, item_vectors(model, on_device(torch.zeros(1, dtype=torch.long),
                                                                 split)),
                             cfg.ks, cfg.tail_ratio) if cfg.beyond else None)
            partial = _evaluate_full(model, data, split, cfg, on_device, shard, beyond)
        sums, count = sum_over_shards(*partial, shard)
        corpus = beyond.corpus(shard, device) if beyond is not None else {}
    finally:
        model.train(was_training)
    means = {name: total / max(count, 1) for name, total in sums.items()}
    return dict(sorted({**means, **corpus}.items()))


def _evaluate_full(model: Recommender, data: Dataset, split: str, cfg: EvalConfig,
                   context: ContextFn, shard: Shard,
                   beyond: Beyond | None = None) -> tuple[dict[str, float], int]:
    """The metric sums over the shard's users with a held-out item, and their count; with
    ``beyond``, their top-K lists' beyond-accuracy sums too (and ``beyond`` counts them)."""
    truth_ptr, truth_idx = data.positives(split)
    seen = [data.positives(s) for s in SPLITS_SEEN_BEFORE[split]]
    n_relevant = truth_ptr.diff()
    users = torch.nonzero(n_relevant > 0).squeeze(1)
    everyone = users.numel()
    users = users[shard_rows(everyone, shard)]
    sums: dict[str, float] = {}
    for chunk, real in lockstep_chunks(users, everyone, cfg.batch_users, shard):
        scores = model.rank_scores(context(chunk, split))  # (B, N)
        if not real:  # a stand-in chunk (more workers than users, or fewer for this one)
            continue
        for ptr, idx in seen:
            scores[csr_rows(ptr, idx, chunk)] = -torch.inf
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[csr_rows(truth_ptr, truth_idx, chunk)] = True
        best = torch.topk(scores, min(max(cfg.ks), scores.shape[1]), dim=1)
        top = best.indices.cpu()  # (B, K): small
        hits = relevant.gather(1, best.indices).cpu()
        for name, values in metrics_from_hits(hits, n_relevant[chunk], cfg.ks).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
        if beyond is not None:  # a list ends where the user's unseen items do (-inf after)
            beyond.add(top, torch.isfinite(best.values).cpu(), sums)
    return sums, users.numel()


def _evaluate_sampled(model: Recommender, data: Dataset, split: str, cfg: EvalConfig,
                      context: ContextFn, shard: Shard) -> tuple[dict[str, float], int]:
    """The metric sums over the shard's held-out items, and their count. Every worker draws
    the negatives of every item, in one worker's order, so each item meets the same negatives
    however many workers share the work (drawing is cheap next to scoring)."""
    rank, world = shard
    held_out = getattr(data, split)
    known = [data.split(s) for s in ("known", "train", "valid", "test")]
    sampler = NegativeSampler(torch.cat([k.user for k in known]), torch.cat([k.item for k in known]),
                              data.num_items)
    generator = torch.Generator().manual_seed(cfg.seed)
    sums: dict[str, float] = {}
    count = 0
    for rows in torch.arange(held_out.user.numel()).split(cfg.batch_users):
        users, items = held_out.user[rows], held_out.item[rows]
        negatives = sampler.sample(users, cfg.num_negatives, generator)
        mine = rows % world == rank
        # a small chunk, all of it other workers' rows: score its first row all the same (and
        # drop it), as every worker scores every chunk (`lockstep_chunks`)
        pick = mine if mine.any() else rows == rows[0]
        users, items, negatives = users[pick], items[pick], negatives[pick]
        candidates = torch.cat([items.unsqueeze(1), negatives], dim=1)  # (B, 1 + n), positive first
        scores = model.score_candidates(context(users, split), candidates.to(model_device(model)))
        if not mine.any():
            continue
        count += users.numel()
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[:, 0] = True
        hits = topk_hits(scores, relevant, max(cfg.ks)).cpu()
        ones = torch.ones_like(users)
        for name, values in metrics_from_hits(hits, ones, cfg.ks).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    return sums, count
