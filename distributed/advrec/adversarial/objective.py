"""The adversarial objective ``L = L_clean + λ · L(x + δ)`` as one module forward.

Wrapping the whole objective in one ``forward`` means DDP (a later, distributed run) sees one
forward and one backward per step, hence one gradient all-reduce: the attack's inner gradients are
taken with ``torch.autograd.grad`` with respect to δ only, which never reaches a parameter's
gradient hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advrec.adversarial.adaptive import pamacf_weights, row_scales, vat_weights
from advrec.adversarial.jsma_fields import flip_fields
from advrec.adversarial.jsma_items import swap_items
from advrec.adversarial.memory import DeltaMemory
from advrec.adversarial.perturb import Attack, Tensors, ascend, perturb
from advrec.config.policy import ADAPTIVE
from advrec.models.base import Batch, Recommender
from advrec.models.fields import FieldModel
from advrec.models.losses import LossFn, batch_loss
from advrec.models.sasrec import SASRec


def select_targets(keys: list[str], target: str) -> list[str]:
    """The embedding keys an adversary attacks: ``user...``, ``item...`` or all of them."""
    return [k for k in keys if target == "all" or k.split("_")[0] == target]


def one_position(batch: Batch, generator: torch.Generator | None) -> Batch:
    """``batch`` (histories with a (B, L) ``mask`` of the positions their loss counts) with
    one of each row's masked positions kept, drawn uniformly with ``generator``: the loss of one
    next-item prediction per history, as an evaluation's attacker raises the loss of the
    held-out item after the history. A row without one keeps none."""
    mask = batch["mask"]
    keys = torch.rand(mask.shape, generator=generator).to(mask.device).masked_fill(~mask, -1.0)
    one = torch.zeros_like(mask).scatter_(1, keys.argmax(1, keepdim=True), True)
    return {**batch, "mask": one & mask}


class _ReplayGradient(torch.autograd.Function):
    """A graph node with a known value and known gradients w.r.t. its inputs.

    ``apply(value, grads, *inputs)`` returns ``value``; backpropagating ``g`` into it hands each
    input ``g · grads[i]``. It stands in for a graph already differentiated once.
    """

    @staticmethod
    def forward(ctx: Any, value: Tensor, grads: tuple[Tensor | None, ...],
                *inputs: Tensor) -> Tensor:
        # ``inputs`` are only passed so that autograd links this node to them
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return (None, None, *(None if g is None else g * grad for g in ctx.grads))


class AdversarialObjective(nn.Module):
    """Computes the training loss of a batch, clean or adversarial (APR, generalised).

    With ``adaptive`` (``vat`` or ``pamacf``) each example's rows get their user's own budget
    ``ε · w_u`` (`advrec.adversarial.adaptive`, ``adaptive_lambda`` its λ), from the same clean
    forward; the model's batches must then carry ``user`` ids (B,), one per scored row.

    With ``keep_delta`` (``adv.schedule=free``) a forward also returns the attack's δ as leaves
    whose ``.grad`` the backward fills, and a later forward on the same batch given them as
    ``previous`` moves each one ascent step from there (`ascend`) instead of attacking anew.

    With ``memory`` (``adv.schedule=accumulate``) the attack takes no gradient of its own: each
    target row trains on its δ in the memory (`DeltaMemory.recall`), and the caller moves those
    δ one ascent step after the backward (`DeltaMemory.step`).
    """

    def __init__(self, model: Recommender, loss_fn: LossFn, attack: Attack, lam: float,
                 target: str = "all", reg: float = 0.0, adaptive: ADAPTIVE = "none",
                 adaptive_lambda: float = 2.0,
                 mix: Sequence[tuple[Attack, float, str]] = (), keep_delta: bool = False,
                 memory: DeltaMemory | None = None) -> None:
        """``attack`` at weight ``lam`` on the ``target`` rows, and each of ``mix``'s (attack,
        λ, target) besides it (``adv.mix``): ``L + lam·L(x') + Σ λ_i·L(x'_i)``."""
        super().__init__()
        self.model, self.loss_fn, self.attack = model, loss_fn, attack
        self.adversaries = [(attack, lam, target), *mix]
        self.reg = reg
        self.adaptive, self.adaptive_lambda = adaptive, adaptive_lambda
        self.keep_delta, self.memory = keep_delta, memory
        # every parameter of a table module (a torchrec table's live in its collection)
        tables = {id(p) for t in model.tables().values() for p in t.parameters()}
        self._dense = [p for p in model.parameters() if id(p) not in tables]

    def forward(self, batch: Batch, adversarial: bool, generator: torch.Generator | None = None,
                previous: Tensors | None = None) -> dict[str, Tensor | Tensors]:
        """Returns ``loss`` (to backpropagate), ``clean`` and, when adversarial, ``adv`` (the
        adversarial loss; with several adversaries their λ-weighted mean), and with
        ``keep_delta`` the embedding attack's ``delta`` (key -> rows), which a later forward
        on the same batch takes as ``previous`` once the backward has filled their ``.grad``."""
        emb = self.model.embed(batch)
        active = [(a, lam, t) for a, lam, t in self.adversaries
                  if adversarial and lam > 0 and a.active]
        logits = self.model.score(emb, batch)
        # VAT weighs users by their own loss: this forward's, per row, before the mean
        row_losses = (batch_loss(self.loss_fn, logits, batch, rows=True)
                      if active and self.adaptive == "vat" else None)
        clean = row_losses.mean() if row_losses is not None else batch_loss(self.loss_fn, logits,
                                                                            batch)
        out = {"clean": clean.detach()}
        loss = clean
        # the clean loss's gradient where any attack starts (its first round's saliency, or
        # FGM's step), from one backward shared by every adversary
        start = ({k for a, _, t in active for k in self._start_keys(a, t, emb)}
                 if previous is None else set())  # a step from ``previous`` needs no gradient
        init_grad: Tensors = {}
        if start:
            loss, init_grad = self._differentiate_clean(clean, emb, [k for k in emb if k in start])
        weighted, weights = 0.0, 0.0
        for attack, lam, target in active:
            adv, delta = self._adversarial_loss(attack, target, emb, batch, init_grad, generator,
                                                row_losses, previous)
            if self.keep_delta and delta is not None:
                out["delta"] = delta
            loss = loss + lam * adv
            weighted, weights = weighted + lam * adv.detach(), weights + lam
        if active:
            out["adv"] = weighted / weights
        if self.reg > 0:
            # L2 on the rows this batch used (BPR's regulariser), per example
            size = next(iter(batch.values())).shape[0]
            loss = loss + self.reg * sum(v.pow(2).sum() for v in emb.values()) / size
        out["loss"] = loss
        return out

    def _start_keys(self, attack: Attack, target: str, emb: Tensors) -> list[str]:
        """The embedding keys at which ``attack`` starts from the clean loss's gradient."""
        if attack.method == "jsma-items":
            # one position's loss is not the training loss: its attack takes its own gradient
            return ["item_seq"] if attack.positions == "all" else []
        if attack.method == "jsma-fields":
            return self._field_keys()
        if self.memory is not None:  # δ comes from the memory
            return []
        return select_targets(list(emb), target) if attack.from_clean_gradient else []

    def _field_keys(self) -> list[str]:
        """The embedding keys of the feature fields (what jsma-fields changes)."""
        return [k for keys in self._field_model().feature_fields().values() for k in keys]

    def _adversarial_loss(self, attack: Attack, target: str, emb: Tensors, batch: Batch,
                          init_grad: Tensors, generator: torch.Generator | None,
                          row_losses: Tensor | None,
                          previous: Tensors | None = None) -> tuple[Tensor, Tensors | None]:
        """The training loss of the batch's adversarial example under ``attack`` (on the
        ``target`` rows, for an attack on embeddings), and its δ (None for the discrete
        attacks); ``init_grad`` holds the clean loss's gradient at the keys where it starts
        (`_start_keys`); ``previous``, a δ whose ``.grad`` a backward filled, is moved one
        ascent step instead (`ascend`)."""
        if attack.method == "jsma-items":
            if attack.positions == "all":
                goal, start = batch, init_grad["item_seq"]
            else:
                goal, start = one_position(batch, generator), None
            swapped = {**goal, "seq": self._swapped(emb, goal, start, attack)}
            # the same targets after the swapped history: only the history's rows are looked up
            # anew (they are catalogue rows, and L(x') trains them); the candidates' (B, L, C, d)
            # rows are the clean pass's: not gathered and scatter-added again (a budget-2
            # SASRec epoch: 2.40x a clean one, 2.52x with them looked up anew)
            adv_emb = {**emb, "item_seq": self._sequence_model().history(swapped["seq"])}
            return batch_loss(self.loss_fn, self.model.score(adv_emb, swapped), swapped), None
        if attack.method == "jsma-fields":
            values = self.flipped_fields(batch, emb, {k: init_grad[k] for k in self._field_keys()},
                                         attack)
            # the changed values' rows looked up from the tables: L(x') trains them too
            flipped = {**emb, **self._field_model().embed_fields(values)}
            return batch_loss(self.loss_fn, self.model.score(flipped, batch), batch), None
        keys = select_targets(list(emb), target)
        scale = self._scales(emb, keys, batch, row_losses)
        if self.memory is not None:
            rows = self.model.rows(batch)
            delta = self.memory.recall({k: emb[k].detach() for k in keys},
                                       {k: rows[k] for k in keys}, scale)
        elif previous is not None:
            delta = ascend({k: emb[k].detach() for k in keys}, previous,
                           {k: previous[k].grad for k in keys}, attack, scale)
        else:
            start = {k: init_grad[k] for k in keys} if attack.from_clean_gradient else None
            delta = self._delta(emb, keys, start, batch, generator, attack, scale)
        if self.keep_delta:  # the backward leaves ∂loss/∂δ on it: the next replay's step
            delta = {k: d.requires_grad_(True) for k, d in delta.items()}
        adv_emb = {**emb, **{k: emb[k] + delta[k] for k in keys}}
        return batch_loss(self.loss_fn, self.model.score(adv_emb, batch), batch), delta

    def _differentiate_clean(self, clean: Tensor, emb: Tensors,
                             keys: list[str]) -> tuple[Tensor, Tensors]:
        """Backpropagate the clean loss once, down to the looked-up rows and the dense weights.

        Returns a stand-in for ``clean`` that replays these gradients in the final backward, and
        the gradient w.r.t. the ``keys`` rows, where the attack starts. The clean graph is thus
        differentiated once, not twice (once for the attack, once for the update); that saves
        5 % of an FGM step for MF and 14 % for NeuMF, whose MLP backward is the costly part.
        The gradients go to no parameter's ``.grad`` here, so DDP's all-reduce still happens
        once, in the final backward.
        """
        inputs = [*emb.values(), *(p for p in self._dense if p.requires_grad)]
        grads = torch.autograd.grad(clean, inputs, allow_unused=True)
        init_grad = {k: g for k, g in zip(emb, grads) if k in keys}
        return _ReplayGradient.apply(clean.detach(), grads, *inputs), init_grad

    def _gradient(self, frozen: Tensors, rows: Tensors, batch: Batch) -> Tensors:
        """∂(the batch's training loss)/∂``rows``, each (key -> rows) in place of its key's in
        ``frozen`` (the batch's embeddings, detached): an attack's gradient, `score` alone."""
        rows = {k: r.detach().requires_grad_(True) for k, r in rows.items()}
        loss = batch_loss(self.loss_fn, self.model.score({**frozen, **rows}, batch), batch)
        return dict(zip(rows, torch.autograd.grad(loss, list(rows.values()))))

    def _swapped(self, emb: Tensors, batch: Batch, init_grad: Tensor | None,
                 attack: Attack) -> Tensor:
        """The batch's histories ``seq`` (B, L) with up to ``attack.budget`` items each swapped
        to raise its loss (`swap_items`; the loss at the positions of ``batch["mask"]``);
        ``init_grad`` (B, L, d) that loss's gradient at their rows, if the caller has it. No
        graph."""
        frozen = {k: v.detach() for k, v in emb.items()}

        def grad_fn(seq: Tensor) -> Tensor:
            swapped = {**batch, "seq": seq}
            with torch.no_grad():  # the history's rows alone: the candidates' stay
                rows = self._sequence_model().history(seq)
            return self._gradient(frozen, {"item_seq": rows}, swapped)["item_seq"]

        seq = batch["seq"]
        catalogue = self.model.all_items(seq.device).detach()
        return swap_items(seq, grad_fn, catalogue, self.model.pad, attack.budget,
                          attack.similarity, init_grad)

    def _sequence_model(self) -> SASRec:
        """The model, which jsma-items needs to read histories (the config sees to it)."""
        if not isinstance(self.model, SASRec):
            raise TypeError(f"jsma-items swaps history items; {type(self.model).__name__} "
                            "reads no history (the sequential model: sasrec)")
        return self.model

    def _field_model(self) -> FieldModel:
        """The model, which jsma-fields needs to be a feature model (the config sees to it)."""
        if not isinstance(self.model, FieldModel):
            raise TypeError(f"jsma-fields changes feature fields; {type(self.model).__name__} "
                            "has none (the feature models: deepfm, dcnv2, mmoe, twotower)")
        return self.model

    def flipped_fields(self, batch: Batch, emb: Tensors | None = None,
                       init_grad: Tensors | None = None, attack: Attack | None = None) -> Tensors:
        """The batch's feature-field values (`FieldModel.field_values`) with up to
        ``attack.budget`` fields of each example changed to raise its training loss
        (`flip_fields`); ``emb`` its embeddings (looked up here when not given), ``init_grad``
        the loss's gradient at its fields' keys, when the caller has it; ``attack`` this
        objective's own when not given. No graph."""
        model = self._field_model()
        with torch.enable_grad():  # an evaluation scores under no_grad
            if emb is None:
                with torch.no_grad():
                    emb = model.embed(batch)
            frozen = {k: v.detach() for k, v in emb.items()}
            with torch.no_grad():
                device = next(iter(emb.values())).device
                catalogues = {f: model.field_catalogue(f, device) for f in model.feature_fields()}

            def grad_fn(rows: Tensors) -> Tensors:
                return model.field_rows(self._gradient(frozen, model.key_rows(rows), batch))

            return flip_fields(model.field_values(batch), catalogues, grad_fn,
                               (attack or self.attack).budget,
                               None if init_grad is None else model.field_rows(init_grad))

    def _scales(self, emb: Tensors, keys: list[str], batch: Batch,
                row_losses: Tensor | None) -> Tensors | None:
        """Each target row's multiplier of ε under ``adaptive`` (None: ε for every row), from
        the batch's (B,) per-row clean losses (VAT) or its user rows (PamaCF)."""
        if self.adaptive == "none":
            return None
        if self.adaptive == "vat":
            weights = vat_weights(batch["user"], row_losses, self.adaptive_lambda,
                                  self.model.num_users)
        else:
            user_rows = [emb[k] for k in select_targets(list(emb), "user")]
            weights = pamacf_weights(user_rows, self.adaptive_lambda)
        return row_scales(weights, {k: emb[k] for k in keys})

    def _delta(self, emb: Tensors, keys: list[str], init_grad: Tensors | None, batch: Batch,
               generator: torch.Generator | None, attack: Attack,
               scale: Tensors | None = None) -> Tensors:
        """``attack``'s perturbation of the target rows, each inside its ball (its radius times
        ``scale[key]`` when given); δ carries no graph back to the parameters."""
        frozen = {k: v.detach() for k, v in emb.items()}

        def grad_fn(delta: Tensors) -> Tensors:  # ∂/∂δ is ∂/∂(x + δ)
            return self._gradient(frozen, {k: frozen[k] + delta[k] for k in keys}, batch)

        return perturb({k: frozen[k] for k in keys}, grad_fn, attack,
                       init_grad=init_grad, generator=generator, scale=scale)
