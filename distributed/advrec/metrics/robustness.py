"""Robustness evaluation: ranking quality with the trained embeddings under attack (APR protocol).

As in APR (He et al. 2018), the perturbation is computed on the embedding *tables*: it follows the
gradient of the model's own training loss over all training interactions (each with its sampled
negatives, fixed by a seed), so each user's and item's row moves in the direction that hurts its
own training interactions most. FGM takes one per-row L2-normalised step of size ε; PGD takes K
projected steps; JSMA moves the l0 most salient coordinates of each row by ε each, in K rounds.
The same `perturb` function as in training computes them; here the tensors are whole tables
(rows, d) instead of a batch's looked-up rows.

On several workers each takes its shard of the training batches, the table gradients are summed
across workers, and the attacked model is evaluated shard by shard (`advrec.shards`): the curve
equals one worker's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor
from tqdm.auto import tqdm

from advrec.adversarial.perturb import Attack, Tensors, perturb
from advrec.config import EvalConfig
from advrec.config.policy import TARGET
from advrec.devices import model_device, to_device
from advrec.metrics.evaluate import ContextFn, evaluate
from advrec.models.base import Batch, Recommender
from advrec.models.losses import LossFn, batch_loss, scored_rows
from advrec.shards import WHOLE, Shard, sum_tensors_over_shards

if TYPE_CHECKING:  # tasks evaluate with this package's metrics: a runtime import would cycle
    from advrec.metrics.target import TargetMetrics
    from advrec.train.tasks import LabelledTask, Task


@contextlib.contextmanager
def shifted_tables(model: Recommender, delta: Tensors) -> Iterator[None]:
    """Temporarily add ``delta[name]`` (rows, d) to each table's weight; restore it afterwards."""
    tables = model.tables()
    saved = {k: tables[k].weight.detach().clone() for k in delta}
    try:
        with torch.no_grad():
            for k, d in delta.items():
                tables[k].weight.add_(d)
        yield
    finally:
        with torch.no_grad():
            for k, w in saved.items():
                tables[k].weight.copy_(w)


def table_attack(model: Recommender, batches: list[Batch], loss_fn: LossFn,
                 attack: Attack, shard: Shard = WHOLE) -> Tensors:
    """δ per table (rows, d) that raises the summed training loss over ``batches`` (all of
    them: this worker differentiates its ``shard`` of them, and the gradients are summed)."""
    tables = model.tables()
    weights = {k: t.weight.detach().clone() for k, t in tables.items()}
    device = model_device(model)

    def grad_fn(delta: Tensors) -> Tensors:
        grads = {k: torch.zeros_like(w) for k, w in weights.items()}
        with shifted_tables(model, delta):
            for batch in batches[shard[0]::shard[1]]:
                batch = to_device(batch, device)
                logits = model(batch)
                # summed over examples, so every interaction weighs the same whatever its batch
                loss = batch_loss(loss_fn, logits, batch) * scored_rows(logits, batch).shape[0]
                for k, g in zip(grads, torch.autograd.grad(loss, [tables[k].weight for k in grads])):
                    grads[k] += g
        return sum_tensors_over_shards(grads, shard)

    return perturb(weights, grad_fn, attack)


def attack_batches(task: Task, max_rows: int, seed: int, batch_size: int = 8192) -> list[Batch]:
    """The training examples an attack differentiates (the first ``max_rows`` of them in the
    split's order, 0 for all), each with its negatives drawn from ``seed``: the same for every
    attack step (APR's protocol) and on every worker. ``task``: the whole split's (unsharded)."""
    batches: list[Batch] = []
    rows = 0
    for batch in task.batches(batch_size, torch.Generator().manual_seed(seed), shuffle=False):
        first = next(iter(batch.values()))
        if max_rows and rows + first.shape[0] > max_rows:
            keep = max_rows - rows
            if keep:
                batches.append({k: v[:keep] for k, v in batch.items()})
            break
        batches.append(batch)
        rows += first.shape[0]
    return batches


def point_metrics(model: Recommender, task: Task, cfg: EvalConfig, split: str,
                  targets: TargetMetrics | None = None, context: ContextFn | None = None,
                  score: Callable[[Batch], Tensor] | None = None) -> dict[str, float]:
    """The task's metrics on ``split``, and with ``targets`` the target items' (``target/...``);
    users ranked from ``context`` when given (attacked histories or profiles,
    `advrec.metrics.history_attack`, `advrec.metrics.profile_attack`), else from the task's
    own; a labelled task's examples scored by ``score`` when given (`LabelledTask.evaluate`)."""
    if score is not None:
        metrics = cast("LabelledTask", task).evaluate(model, split, cfg, score)
    elif context is not None:
        metrics = evaluate(model, task.data, split, cfg, context, task.shard)
    else:
        metrics = task.evaluate(model, split, cfg)
    if targets is not None:
        measured = targets(model, split, context or task.context, cfg.batch_users, task.shard)
        metrics.update({f"{TARGET}{k}": v for k, v in measured.items()})
    return metrics


def attacked_metrics(model: Recommender, task: Task, loss_fn: LossFn, cfg: EvalConfig,
                     batches: list[Batch], attack: Attack, split: str,
                     targets: TargetMetrics | None = None) -> dict[str, float]:
    """`point_metrics` with the tables moved by ``attack``'s δ (found on ``batches``, this
    worker differentiating its shard of them)."""
    delta = table_attack(model, batches, loss_fn, attack, task.shard)
    with shifted_tables(model, delta):
        return point_metrics(model, task, cfg, split, targets)


def eval_attack(cfg: EvalConfig, method: str, eps: float) -> Attack:
    """The robustness protocol's ``method`` at ``eps``: L2 per row, ``eval.steps`` PGD steps
    (one FGM step); JSMA L∞ on ``eval.l0`` coordinates per row in ``eval.steps`` rounds;
    absolute or relative ε as ``eval.relative`` says."""
    return Attack(method=method, eps=eps, steps=cfg.steps if method in ("pgd", "jsma") else 1,
                  norm="l2", relative=cfg.relative, l0=cfg.l0)


def robust_attack(cfg: EvalConfig) -> Attack:
    """``eval.robust_attack`` at ``eval.robust_eps``: the attack of the robust/... metrics."""
    return eval_attack(cfg, cfg.robust_attack, cfg.robust_eps)


def robustness_curve(model: Recommender, task: Task, loss_fn: LossFn, cfg: EvalConfig,
                     batches: list[Batch], split: str = "test", progress: bool = True,
                     targets: TargetMetrics | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{attack: {eps: {metric: value}}}`` for each attack in ``cfg.attacks`` and ε in ``cfg.eps``,
    the metrics of ``targets`` (``target/...``) among them when given.

    ``batches`` are all training examples with their negatives, fixed for every attack step
    (`advrec.train.tasks`, unshuffled, from a seeded generator). ε = 0 is the clean model; eps
    keys are strings (JSON) formatted with ``repr(float)``. The task's shard says which share
    of the work this worker does.
    """
    was_training = model.training
    model.eval()
    clean = point_metrics(model, task, cfg, split, targets)
    out: dict[str, dict[str, dict[str, float]]] = {}
    jobs = [(a, e) for a in cfg.attacks for e in cfg.eps]
    for name, eps in tqdm(jobs, desc="robustness", disable=None if progress else True, leave=False):
        if eps == 0.0:
            metrics = clean
        else:
            metrics = attacked_metrics(model, task, loss_fn, cfg, batches,
                                       eval_attack(cfg, name, eps), split, targets)
        out.setdefault(name, {})[repr(float(eps))] = metrics
    model.train(was_training)
    return out
