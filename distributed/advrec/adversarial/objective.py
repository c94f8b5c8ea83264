"""The adversarial objective ``L = L_clean + λ · L(x + δ)`` as one module forward.

Wrapping the whole objective in one ``forward`` means DDP (a later, distributed run) sees one
forward and one backward per step, hence one gradient all-reduce: the attack's inner gradients are
taken with ``torch.autograd.grad`` with respect to δ only, which never reaches a parameter's
gradient hook.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrec.adversarial.perturb import Attack, Tensors, perturb
from advrec.models.base import Batch, Recommender
from advrec.models.losses import LossFn, batch_loss


def select_targets(keys: list[str], target: str) -> list[str]:
    """The embedding keys an adversary attacks: ``user...``, ``item...`` or all of them."""
    return [k for k in keys if target == "all" or k.split("_")[0] == target]


class AdversarialObjective(nn.Module):
    """Computes the training loss of a batch, clean or adversarial (APR, generalised)."""

    def __init__(self, model: Recommender, loss_fn: LossFn, attack: Attack, lam: float,
                 target: str = "all", reg: float = 0.0) -> None:
        super().__init__()
        self.model, self.loss_fn, self.attack = model, loss_fn, attack
        self.lam, self.target, self.reg = lam, target, reg

    def forward(self, batch: Batch, adversarial: bool,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Returns ``loss`` (to backpropagate), ``clean`` and, when adversarial, ``adv``."""
        emb = self.model.embed(batch)
        clean = batch_loss(self.loss_fn, self.model.score(emb, batch), batch)
        loss = clean
        if self.reg > 0:
            # L2 on the rows this batch used (BPR's regulariser), per example
            size = next(iter(batch.values())).shape[0]
            loss = loss + self.reg * sum(v.pow(2).sum() for v in emb.values()) / size
        out = {"clean": clean.detach()}
        if adversarial and self.lam > 0 and self.attack.eps > 0 and self.attack.method != "none":
            keys = select_targets(list(emb), self.target)
            delta = self._delta(emb, keys, clean, batch, generator)
            adv_emb = {**emb, **{k: emb[k] + delta[k] for k in keys}}
            adv = batch_loss(self.loss_fn, self.model.score(adv_emb, batch), batch)
            loss = loss + self.lam * adv
            out["adv"] = adv.detach()
        out["loss"] = loss
        return out

    def _delta(self, emb: Tensors, keys: list[str], clean: Tensor, batch: Batch,
               generator: torch.Generator | None) -> Tensors:
        """The perturbation of the target rows; δ carries no graph back to the parameters."""
        frozen = {k: v.detach() for k, v in emb.items()}

        def grad_fn(delta: Tensors) -> Tensors:
            delta = {k: d.detach().requires_grad_(True) for k, d in delta.items()}
            shifted = {**frozen, **{k: frozen[k] + delta[k] for k in keys}}
            loss = batch_loss(self.loss_fn, self.model.score(shifted, batch), batch)
            return dict(zip(keys, torch.autograd.grad(loss, [delta[k] for k in keys])))

        init_grad = None
        needs_first_grad = self.attack.method in ("fgsm", "fgm") or (
            self.attack.method == "pgd" and not self.attack.random_start)
        if needs_first_grad:
            # the clean loss's gradient at δ = 0 comes from the clean graph we already built
            grads = torch.autograd.grad(clean, [emb[k] for k in keys], retain_graph=True)
            init_grad = dict(zip(keys, grads))
        return perturb({k: frozen[k] for k in keys}, grad_fn, self.attack,
                       init_grad=init_grad, generator=generator)
