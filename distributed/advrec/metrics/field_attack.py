"""Robustness to changed feature fields: a labelled feature model's metrics (DeepFM, DCN-v2:
AUC, log-loss, gAUC; MMoE's per task) when every evaluated example has up to ``budget`` of its
categorical fields changed by JSMA (`advrec.adversarial.jsma_fields`).

The attacker is white-box and per example: it knows the model and the example's true labels,
and raises the example's training loss against them (untargeted: a click is made to look like
none, a non-click like one, and MMoE's rating error grows too). Each chunk of the evaluation is
attacked at once, on every worker its own rows (`LabelledTask.evaluate`'s ``score``), so the
curve on several workers is one process's.

Two-tower, a ranking model, is not measured here: its held-out items are ranked among all the
catalogue's (`advrec.metrics.evaluate`), which has no per-example field to attack. It trains
against the attack (``adv.method=jsma-fields``) like the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor

from advrec.adversarial import AdversarialObjective, Attack
from advrec.config import EvalConfig
from advrec.models.base import Batch
from advrec.models.fields import FieldModel
from advrec.models.losses import LossFn

if TYPE_CHECKING:  # tasks evaluate with this package's metrics: a runtime import would cycle
    from advrec.train.tasks import LabelledTask


def attacked_scores(model: FieldModel, loss_fn: LossFn,
                    budget: int) -> Callable[[Batch], Tensor]:
    """A chunk's batch (with its ``label``) -> the model's logits after up to ``budget``
    fields of each example were changed to raise ``loss_fn`` (the training loss)."""
    objective = AdversarialObjective(model, loss_fn, Attack("jsma-fields", 0.0, budget=budget),
                                     lam=1.0)

    def score(batch: Batch) -> Tensor:
        emb = model.embed(batch)
        values = objective.flipped_fields(batch, emb)
        return model.score({**emb, **model.embed_fields(values)}, batch)

    return score


def fields_curve(model: FieldModel, task: LabelledTask, loss_fn: LossFn, cfg: EvalConfig,
                 budgets: list[int], split: str = "test") -> dict[str, dict[str, float]]:
    """``{budget: {metric: value}}`` for each of ``budgets`` (keys ``str(int)``; 0 the clean
    model's metrics)."""
    return {str(budget): task.evaluate(model, split, cfg, None if budget == 0
                                       else attacked_scores(model, loss_fn, budget))
            for budget in budgets}
