"""Robustness to swapped history items: SASRec's ranking when each user's history, as the
evaluation reads it, has up to ``budget`` items swapped by JSMA (`advrec.adversarial.jsma_items`).

The attacker is white-box and per user: it knows the model and what the evaluation asks of the
user's history, and raises `advrec.metrics.attack_goal.RankingGoal`'s loss (untargeted: demote
the user's held-out items; targeted: promote the target items). Every protocol then ranks from
the attacked history (full ranking and the sampled one alike), and the target metrics too
(`TargetMetrics`).

Each call of the attacked context attacks its chunk of users at once (no loop over users); on
several workers each attacks the users it ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from advrec.adversarial.jsma_items import HistoryGradFn, swap_items
from advrec.adversarial.perturb import Attack
from advrec.config import EvalConfig
from advrec.devices import model_device
from advrec.metrics.attack_goal import RankingGoal
from advrec.metrics.evaluate import ContextFn
from advrec.metrics.robustness import point_metrics
from advrec.models.base import Batch
from advrec.models.sasrec import SASRec

if TYPE_CHECKING:  # tasks evaluate with this package's metrics: a runtime import would cycle
    from advrec.metrics.target import TargetMetrics
    from advrec.train.tasks import SequenceTask


def next_item_grad(model: SASRec, catalogue: Tensor,
                   loss: Callable[[Tensor], Tensor]) -> HistoryGradFn:
    """The gradient, at histories (B, L), of ``loss`` (a scalar) of the next item's logits
    (B, N) over every item of ``catalogue`` (N, d)."""

    def grad_fn(seq: Tensor) -> Tensor:
        with torch.no_grad():
            history = model.history(seq)
        history.requires_grad_(True)
        logits = model.hidden(history, seq)[:, -1] @ catalogue.T  # (B, N)
        return torch.autograd.grad(loss(logits), history)[0]

    return grad_fn


def attacked_context(model: SASRec, task: SequenceTask, attack: Attack,
                     targets: Tensor | None = None) -> ContextFn:
    """The task's context with each history attacked by ``attack`` (``jsma-items``): against
    the user's held-out items of the split asked for, or toward ``targets`` (T,) item indices."""
    device = model_device(model)
    catalogue = model.all_items(device).detach()
    goal = RankingGoal(task.data, targets)

    def context(users: Tensor, split: str) -> Batch:
        seq = task.context(users, split)["seq"].to(device)
        grad_fn = next_item_grad(model, catalogue,
                                 lambda logits: goal.loss(logits, users, split))
        with torch.enable_grad():  # the evaluation scores under no_grad
            return {"seq": swap_items(seq, grad_fn, catalogue, model.pad, attack.budget,
                                      attack.similarity)}

    return context


def budget_curve(model: SASRec, task: SequenceTask, cfg: EvalConfig, budgets: list[int],
                 similarity: float | None = None, split: str = "test",
                 targets: TargetMetrics | None = None,
                 promote: Tensor | None = None) -> dict[str, dict[str, float]]:
    """``{budget: {metric: value}}`` for each of ``budgets`` (keys ``str(int)``; 0 the clean
    model), with ``targets``' metrics (``target/...``) when given. ``promote`` (T,) item
    indices makes the attack targeted, toward them."""
    was_training = model.training
    model.eval()
    out = {}
    for budget in budgets:
        context = None if budget == 0 else attacked_context(
            model, task, Attack("jsma-items", 0.0, budget=budget, similarity=similarity),
            promote)
        out[str(budget)] = point_metrics(model, task, cfg, split, targets, context)
    model.train(was_training)
    return out


def longest_history(task: SequenceTask, split: str) -> int:
    """The most real items of any user's history before ``split`` (what an attack may swap)."""
    return int((task.context(torch.arange(task.data.num_users), split)["seq"] != task.pad)
               .sum(1).max())
