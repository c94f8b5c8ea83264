"""What a model trains on and how it is evaluated: pairs, sequences, or labelled interactions.

A task turns a prepared dataset into training batches and evaluates a model on a split:

- `PairTask` (MF, NeuMF, two-tower): (user, positive item) pairs with sampled negatives, or with
  the batch's other items as negatives (two-tower's in-batch softmax); top-K ranking metrics;
- `SequenceTask` (SASRec): one item sequence per user, a target at every position;
- `LabelledTask` (DeepFM, DCN-v2, MMoE): every rated (user, item) with its own labels, a click
  and, for the multi-task model, the rating; AUC, log-loss, gAUC and RMSE.

Everything else (the objective, the adversary, the robustness attack) is the same for all.

Under Ray Train each worker builds its task with its own ``shard`` (rank, world size) and trains
on that shard's examples only: a fixed slice of the training rows (of the users, for sequences),
shuffled by the epoch's generator. The rows come from memory (`MemoryRows`) or, with
``data.stream``, from the worker's split of a Ray Data stream (`StreamRows`). Every shard yields
the same number of batches, which DDP needs (a worker that steps once more would wait forever
for the others' gradients). Evaluation is sharded the same way and combined, so every worker
gets the whole split's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from advrec.config import EvalConfig, RunConfig
from advrec.data.dataset import Dataset, Interactions
from advrec.data.negatives import NegativeSampler
from advrec.devices import model_device, to_device
from advrec.errors import AdvrecError
from advrec.metrics.ctr import ctr_metrics
from advrec.metrics.evaluate import evaluate
from advrec.models.base import Batch, Recommender
from advrec.models.losses import LOSSES, LossFn, MultiTaskLoss, bce, mse
from advrec.shards import WHOLE, Shard, gather_shards, lockstep_chunks, shard_rows

EVAL_ROWS = 8192
"""Interactions scored at a time when evaluating a labelled task."""


def epoch_order(n: int, shard: Shard, generator: torch.Generator, shuffle: bool) -> Tensor:
    """This epoch's order of the ``shard``'s rows among ``n`` examples, padded by repeating its
    first rows to ceil(n / world), so every shard has as many (as DistributedSampler does); a
    shard with no rows of its own (fewer rows than workers) takes the first of all."""
    rows = shard_rows(n, shard)
    order = rows[torch.randperm(rows.numel(), generator=generator)] if shuffle else rows
    size = -(-n // shard[1])
    if order.numel() < size:
        pool = order if order.numel() else torch.arange(n)
        order = torch.cat([order, pool[: size - order.numel()]])
    return order


def negatives_of(data: Dataset) -> NegativeSampler:
    """A sampler of the items each user has no known interaction with, in the train split or
    before it (``known``)."""
    return NegativeSampler(torch.cat([data.known.user, data.train.user]),
                           torch.cat([data.known.item, data.train.item]), data.num_items)


Rows = dict[str, Tensor]
"""A batch of training rows: ``user`` and ``item`` (B,) int64, and ``label`` and ``rating``
(B,) float32 where the task reads them (`row_columns`)."""


LABELS = {"ranking": (), "ctr": ("click",), "multitask": ("click", "rating")}
"""The labels each kind of model (`advrec.config.policy.MODEL_KINDS`) learns, beside the pairs."""
LABEL_COLUMNS = {"click": "label", "rating": "rating"}
"""The prepared splits' column of each label."""


def row_columns(labels: tuple[str, ...]) -> tuple[str, ...]:
    """The train split's columns a task with ``labels`` (`LABELS`) trains on."""
    return ("user", "item", *(LABEL_COLUMNS[t] for t in labels))


class RowSource(Protocol):
    def epoch(self, batch_size: int, generator: torch.Generator, shuffle: bool) -> Iterator[Rows]:
        """This worker's training rows of one epoch, in batches of ``batch_size``."""
        ...


class MemoryRows:
    """The train split held in memory: the shard's fixed slice of its rows, in an order drawn
    from the epoch's generator."""

    def __init__(self, part: Interactions, columns: tuple[str, ...], shard: Shard) -> None:
        self.columns = {c: getattr(part, c) for c in columns}
        self.n, self.shard = len(part), shard

    def epoch(self, batch_size: int, generator: torch.Generator, shuffle: bool) -> Iterator[Rows]:
        order = epoch_order(self.n, self.shard, generator, shuffle)
        # split() of no rows gives one empty batch, not none
        for idx in order.split(batch_size) if order.numel() else ():
            yield {c: values[idx] for c, values in self.columns.items()}


class StreamRows:
    """The worker's split of the train split streamed by Ray Data (``data.stream``): blocks read
    as they are needed, shuffled within a buffer of ``buffer`` rows.

    Ray Train splits the stream equally (``streaming_split(equal=True)``), so every worker gets
    as many rows, hence batches; in order (``preserve_order``, `advrec.train.driver`), so a
    worker gets the same rows every epoch, and with the buffer's seed drawn from the epoch's
    generator a restarted epoch repeats exactly.
    """

    def __init__(self, shard: Any, buffer: int) -> None:
        """``shard``: what ``ray.train.get_dataset_shard`` returns (a DataIterator or Dataset)."""
        self.shard, self.buffer = shard, buffer

    def epoch(self, batch_size: int, generator: torch.Generator, shuffle: bool) -> Iterator[Rows]:
        seed = int(torch.randint(2**62, (), generator=generator)) if shuffle else None
        for batch in self.shard.iter_torch_batches(
                batch_size=batch_size, local_shuffle_buffer_size=self.buffer if shuffle else None,
                local_shuffle_seed=seed):
            yield {c: v.long() if c in ("user", "item") else v.float() for c, v in batch.items()}


class Task(Protocol):
    data: Dataset
    """The prepared dataset it trains and evaluates on."""
    shard: Shard
    """This worker's share of the examples: (rank, world size)."""

    def batches(self, batch_size: int, generator: torch.Generator,
                shuffle: bool = True) -> Iterator[Batch]:
        """The training examples of one epoch."""
        ...

    def evaluate(self, model: Recommender, split: str, cfg: EvalConfig) -> dict[str, float]:
        """The model's metrics on ``split`` (``valid`` or ``test``)."""
        ...

    def context(self, users: Tensor, split: str) -> Batch:
        """What the model ranks every item from for ``users`` (B,) before ``split``'s items
        (full ranking: `advrec.metrics.evaluate`, `advrec.metrics.target`)."""
        ...


class PairTask:
    """(user, positive item) pairs, each with ``num_negatives`` sampled negatives, or with
    in-batch negatives and each item's log sampling frequency (``in_batch=True``)."""

    def __init__(self, data: Dataset, num_negatives: int, in_batch: bool = False,
                 shard: Shard = WHOLE, rows: RowSource | None = None) -> None:
        self.data, self.num_negatives, self.in_batch = data, num_negatives, in_batch
        self.shard = shard
        self.rows = rows or MemoryRows(data.train, ("user", "item"), shard)
        self.sampler = negatives_of(data)
        # log Q(item): how often an item is drawn as a batch's positive, hence as an in-batch
        # negative of everyone else (Yi et al. 2019); unseen items get log(1/(N+1)), never -inf
        counts = torch.bincount(data.train.item, minlength=data.num_items).float()
        self.log_q = torch.log(counts.clamp(min=1.0) / (counts.sum() + 1.0))

    def batches(self, batch_size: int, generator: torch.Generator,
                shuffle: bool = True) -> Iterator[Batch]:
        """``user`` (B,) and ``item`` (B, 1 + n): the positive, then the negatives; in-batch,
        ``item`` (B, 1) and ``log_q`` (B,) of those items."""
        for rows in self.rows.epoch(batch_size, generator, shuffle):
            users, items = rows["user"], rows["item"]
            if self.in_batch:
                yield {"user": users, "item": items.unsqueeze(1), "log_q": self.log_q[items]}
                continue
            negatives = self.sampler.sample(users, self.num_negatives, generator)
            yield {"user": users, "item": torch.cat([items.unsqueeze(1), negatives], 1)}

    def context(self, users: Tensor, split: str) -> Batch:
        return {"user": users}

    def evaluate(self, model: Recommender, split: str, cfg: EvalConfig) -> dict[str, float]:
        return evaluate(model, self.data, split, cfg, self.context, self.shard)


NEXT = "next"
"""The context after every split (`Task.context`): what a recommendation made now follows."""


def histories(parts: list[Interactions], num_users: int, length: int, pad: int) -> Tensor:
    """Each user's last ``length`` items over ``parts`` (in that order, each sorted by user and
    time), left-padded with ``pad``: (num_users, length)."""
    user = torch.cat([p.user for p in parts])
    item = torch.cat([p.item for p in parts])
    order = torch.sort(user, stable=True).indices  # keeps the parts' order within a user
    user, item = user[order], item[order]
    counts = torch.bincount(user, minlength=num_users)
    start = counts.cumsum(0) - counts
    from_end = counts[user] - 1 - (torch.arange(user.numel()) - start[user])  # 0 = latest
    keep = from_end < length
    out = torch.full((num_users, length), pad, dtype=torch.long)
    out[user[keep], length - 1 - from_end[keep]] = item[keep]
    return out


class SequenceTask:
    """One time-ordered training sequence per user and epoch (SASRec): at every position the
    target is the next item, scored against ``num_negatives`` sampled negatives, or against every
    item (``num_negatives="all"``, a full softmax)."""

    def __init__(self, data: Dataset, max_len: int, num_negatives: int | str,
                 shard: Shard = WHOLE) -> None:
        self.data, self.max_len, self.num_negatives = data, max_len, num_negatives
        self.pad = data.num_items
        self.sampler = negatives_of(data)
        # max_len + 1 items give max_len (input, next item) positions
        train = histories([data.train], data.num_users, max_len + 1, self.pad)
        self.users = torch.nonzero((train != self.pad).sum(1) >= 2).squeeze(1)
        self.inputs, self.targets = train[self.users, :-1], train[self.users, 1:]
        self.shard = shard
        self.contexts = {
            "valid": histories([data.known, data.train], data.num_users, max_len, self.pad),
            "test": histories([data.known, data.train, data.valid], data.num_users, max_len,
                              self.pad),
        }

    def batches(self, batch_size: int, generator: torch.Generator,
                shuffle: bool = True) -> Iterator[Batch]:
        """``seq`` (B, L), ``mask`` (B, L) of positions with a target, and ``item``
        (B, L, 1 + n), the next item then n sampled negatives; with every item as a candidate,
        ``target`` (B, L), the next item (the model scores all items itself)."""
        order = epoch_order(self.users.numel(), self.shard, generator, shuffle)
        for idx in order.split(batch_size):
            seq, target = self.inputs[idx], self.targets[idx]
            mask = (seq != self.pad) & (target != self.pad)
            if self.num_negatives == "all":
                yield {"seq": seq, "target": target, "mask": mask}
                continue
            users = self.users[idx]
            negatives = self.sampler.sample(users, seq.shape[1] * self.num_negatives, generator)
            negatives = negatives.view(*seq.shape, self.num_negatives)
            yield {"seq": seq, "item": torch.cat([target.unsqueeze(-1), negatives], -1),
                   "mask": mask}

    def context(self, users: Tensor, split: str) -> Batch:
        """The history before ``split``'s items: (known +) train for valid, (known +) train +
        valid for test, every split for `NEXT` (made at its first use)."""
        if split == NEXT and NEXT not in self.contexts:
            data = self.data
            self.contexts[NEXT] = histories([data.known, data.train, data.valid, data.test],
                                            data.num_users, self.max_len, self.pad)
        return {"seq": self.contexts[split][users]}

    def evaluate(self, model: Recommender, split: str, cfg: EvalConfig) -> dict[str, float]:
        return evaluate(model, self.data, split, cfg, self.context, self.shard)


class LabelledTask:
    """Every rated (user, item) of a split with its labels: the click (CTR), and the rating too
    when ``tasks`` is ``("click", "rating")`` (multi-task)."""

    def __init__(self, data: Dataset, tasks: tuple[str, ...],
                 shard: Shard = WHOLE, rows: RowSource | None = None) -> None:
        self.data, self.tasks = data, tasks
        self.shard = shard
        self.rows = rows or MemoryRows(data.train, row_columns(tasks), shard)
        for split in ("valid", "test"):  # fail now, not after an epoch
            self._labels(vars(data.split(split)))

    def context(self, users: Tensor, split: str) -> Batch:
        """A CTR model ranks items for a user by its click logit (the target metrics)."""
        return {"user": users}

    def _labels(self, columns: dict[str, Tensor | None]) -> Tensor:
        """(N,) clicks for one task, (N, T) for several, from a split's or a batch's (N,)
        columns (`LABEL_COLUMNS`)."""
        missing = [t for t in self.tasks if columns.get(LABEL_COLUMNS[t]) is None]
        if missing:
            why = {"click": ("a CTR dataset: set data.label_threshold (e.g. 4) "
                              "or data.label_column"),
                   "rating": "a log with ratings"}
            raise AdvrecError(f"{self.data.url}: no {missing[0]} labels; this model needs "
                              f"{why[missing[0]]}")
        labels = [columns[LABEL_COLUMNS[t]] for t in self.tasks]
        return labels[0] if len(labels) == 1 else torch.stack(labels, dim=-1)

    def batches(self, batch_size: int, generator: torch.Generator,
                shuffle: bool = True) -> Iterator[Batch]:
        """``user`` (B,), ``item`` (B, 1) and ``label`` (B, 1), or (B, 1, T) per task."""
        for rows in self.rows.epoch(batch_size, generator, shuffle):
            labels = self._labels(rows)
            yield {"user": rows["user"], "item": rows["item"].unsqueeze(1),
                   "label": labels.unsqueeze(1)}

    @torch.no_grad()
    def evaluate(self, model: Recommender, split: str, cfg: EvalConfig,
                 score: Callable[[Batch], Tensor] | None = None) -> dict[str, float]:
        """``auc``, ``logloss``, ``gauc`` (by user) for CTR; ``click/...`` and ``rating/rmse``
        for multi-task. ``score`` maps a chunk's batch (``user`` (B,), ``item`` (B, 1) and its
        ``label`` (B, 1[, T])) to its logits in place of the model's (an attacked input's,
        `advrec.metrics.field_attack`)."""
        part = self.data.split(split)
        n = part.user.numel()
        rows = shard_rows(n, self.shard)  # this worker's rows, then everyone's
        labels = self._labels(vars(part))
        was_training = model.training
        model.eval()
        device = model_device(model)

        def logits_of(r: Tensor) -> Tensor:
            batch = {"user": part.user[r], "item": part.item[r].unsqueeze(1)}
            if score is None:
                return model(to_device(batch, device))
            return score(to_device({**batch, "label": labels[r].unsqueeze(1)}, device))

        try:
            logits = torch.cat([logits_of(r)[:real, 0].cpu()
                                for r, real in lockstep_chunks(rows, n, EVAL_ROWS, self.shard)])
        finally:
            model.train(was_training)
        logits = gather_shards(logits, part.user.numel(), self.shard)
        if len(self.tasks) == 1:
            return ctr_metrics(logits, labels, part.user)
        out = {f"click/{k}": v for k, v in ctr_metrics(logits[:, 0], labels[:, 0], part.user).items()}
        out["rating/rmse"] = float((logits[:, 1] - labels[:, 1]).pow(2).mean().sqrt())
        return out


def make_task(cfg: RunConfig, data: Dataset, shard: Shard = WHOLE,
              stream: Any = None) -> Task:
    """The task that trains and evaluates ``cfg.model.name`` (`advrec.config.policy.MODEL_KINDS`),
    training on ``shard`` (rank, world size) of the examples, or on the rows of ``stream``
    (this worker's Ray Data shard, with ``data.stream``)."""
    if cfg.model.name == "sasrec":
        return SequenceTask(data, cfg.model.max_len, cfg.train.num_negatives, shard)
    rows = None if stream is None else StreamRows(stream, cfg.data.shuffle_buffer)
    if LABELS[cfg.kind]:
        return LabelledTask(data, LABELS[cfg.kind], shard, rows)
    return PairTask(data, cfg.train.num_negatives, in_batch=cfg.model.name == "twotower",
                    shard=shard, rows=rows)


def make_loss(cfg: RunConfig) -> LossFn:
    """The training loss of ``cfg``'s model (`RunConfig.loss`); weighted per task for MMoE."""
    name = cfg.loss()
    if name is not None:
        return LOSSES[name]
    weights = cfg.model.task_weights
    return MultiTaskLoss([bce, mse], [weights["click"], weights["rating"]])
