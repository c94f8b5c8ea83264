"""Robustness to changed user profiles: a feature model's metrics when each user's profile (the
user's feature fields: age, gender, occupation) has up to ``budget`` fields changed by JSMA
(`advrec.adversarial.jsma_fields.flip_fields`).

The threat: whoever controls a profile (a user lying about themselves, a fraudster's account)
changes what it says, not the model nor the items. The attacker is white-box and per user, and
raises `advrec.metrics.attack_goal.RankingGoal`'s loss over every item's ranking logit:
untargeted, against the user's held-out items (two-tower's ranking falls); targeted, toward
chosen items (``--target-items``: any feature model, CTR ones ranking by their click logit).
Every metric is then measured with the changed profiles: the ranking from them, and a labelled
model's examples scored with their user's changed profile.

Per-example field changes, which also change item fields, are `advrec.metrics.field_attack`'s
(a labelled model's AUC, untargeted). Each profile is attacked once, on first use, and kept: the
ranking, the target metrics and the examples read the same one, and on several workers each
attacks the users it needs (the attack draws nothing at random, so the curve is one process's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from advrec.adversarial.jsma_fields import flip_fields
from advrec.adversarial.perturb import Tensors
from advrec.config import EvalConfig
from advrec.devices import model_device
from advrec.metrics.attack_goal import RankingGoal
from advrec.metrics.field_attack import fields_curve
from advrec.metrics.robustness import point_metrics
from advrec.models.base import Batch
from advrec.models.fields import FieldModel

if TYPE_CHECKING:  # tasks evaluate with this package's metrics: a runtime import would cycle
    from advrec.metrics.target import TargetMetrics
    from advrec.models.losses import LossFn
    from advrec.train.tasks import LabelledTask, Task


class AttackedProfiles:
    """Every user's profile after the attack: ``budget`` fields at most changed to raise
    ``goal``'s loss on ``split``, a user's once and on first use.

    ``max_pairs`` bounds the (user, item) pairs one gradient scores (all items per user): the
    users are attacked in chunks of ``max_pairs // num_items``.
    """

    def __init__(self, model: FieldModel, goal: RankingGoal, budget: int, split: str,
                 max_pairs: int = 1 << 16) -> None:
        self.model, self.goal, self.budget, self.split = model, goal, budget, split
        self.device = model_device(model)
        with torch.no_grad():
            self.own = model.users.values(torch.arange(model.num_users, device=self.device))
            self.catalogues = {f: model.field_catalogue(f, self.device) for f in self.own}
        # a multi-valued field's changed tokens take one more place (an added token's)
        self.table = {f: F.pad(v, (0, 1)) if v.dim() == 2 else v.clone()
                      for f, v in self.own.items()}
        self.done = torch.zeros(model.num_users, dtype=torch.bool, device=self.device)
        self.chunk = max(1, max_pairs // model.num_items)

    def values(self, users: Tensor) -> Tensors:
        """``users`` (B,) -> each user field's changed values: (B,) ids, (B, T + 1) tokens."""
        users = users.to(self.device)
        for chunk in users[~self.done[users]].unique().split(self.chunk):
            self._attack(chunk)
        return {f: t[users] for f, t in self.table.items()}

    def context(self, users: Tensor, split: str) -> Batch:
        """A ranking context (`advrec.metrics.evaluate.ContextFn`) with the changed profiles."""
        if split != self.split:
            raise ValueError(f"profiles attacked on {self.split}, asked for {split}")
        return {"user": users, **self.values(users)}

    def score(self, batch: Batch) -> Tensor:
        """A labelled batch's logits (`LabelledTask.evaluate`'s ``score``), each example scored
        with its user's changed profile."""
        return self.model({**batch, **self.values(batch["user"])})

    def _attack(self, users: Tensor) -> None:
        """Attack the profiles of ``users`` (B,) and keep them in the table."""
        model = self.model
        batch = {"user": users,
                 "item": torch.arange(model.num_items, device=self.device).expand(len(users), -1)}
        with torch.no_grad():
            frozen = model.embed(batch)

        def grad_fn(rows: Tensors) -> Tensors:  # each user field's (B, 1, D) -> ∂loss/∂it
            x = {f: r.detach().requires_grad_(True) for f, r in rows.items()}
            logits = model.rank_logits({**frozen, **model.key_rows(x)}, batch)  # (B, N)
            loss = self.goal.loss(logits, users, self.split)
            return dict(zip(x, torch.autograd.grad(loss, list(x.values()))))

        with torch.enable_grad():  # the evaluation scores under no_grad
            new = flip_fields({f: v[users].unsqueeze(1) for f, v in self.own.items()},
                              self.catalogues, grad_fn, self.budget)
        for f, v in new.items():
            self.table[f][users] = v[:, 0]
        self.done[users] = True


def profile_curve(model: FieldModel, task: Task, cfg: EvalConfig, budgets: list[int],
                  labelled: bool, split: str = "test", targets: TargetMetrics | None = None,
                  promote: Tensor | None = None) -> dict[str, dict[str, float]]:
    """``{budget: {metric: value}}`` for each of ``budgets`` (keys ``str(int)``; 0 the clean
    model), with ``targets``' metrics (``target/...``) when given. ``promote`` (T,) item
    indices makes the attack targeted, toward them; ``labelled``: the task scores examples
    (CTR, multi-task), else it ranks (two-tower)."""
    was_training = model.training
    model.eval()
    goal = RankingGoal(task.data, promote)
    out = {}
    for budget in budgets:
        if budget == 0:
            out["0"] = point_metrics(model, task, cfg, split, targets)
            continue
        profiles = AttackedProfiles(model, goal, budget, split)
        out[str(budget)] = point_metrics(model, task, cfg, split, targets, profiles.context,
                                         profiles.score if labelled else None)
    model.train(was_training)
    return out


def jsma_fields_curve(model: FieldModel, task: Task, loss_fn: LossFn, cfg: EvalConfig,
                      budgets: list[int], labelled: bool, split: str = "test",
                      targets: TargetMetrics | None = None,
                      promote: Tensor | None = None) -> dict[str, dict[str, float]]:
    """``jsma-fields``' curve: a labelled model attacked untargeted has each example's fields
    changed against its own labels (`fields_curve`, by ``loss_fn``); otherwise (two-tower's
    ranking, or ``promote`` given) each user's profile (`profile_curve`)."""
    if labelled and promote is None:
        return fields_curve(model, cast("LabelledTask", task), loss_fn, cfg, budgets, split)
    return profile_curve(model, task, cfg, budgets, labelled, split, targets, promote)
