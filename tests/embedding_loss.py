"""A pair model's BPR loss on a random batch, as a function of a perturbation of its looked-up
rows: what the attack tests of tests/adversarial perturb."""

from __future__ import annotations

from collections.abc import Callable

import torch

from advrec.models import LOSSES
from advrec.models.base import Recommender

Tensors = dict[str, torch.Tensor]


def batch_loss(model: Recommender, users: int = 30, items: int = 40, size: int = 64
               ) -> tuple[Tensors, Callable[[Tensors], torch.Tensor],
                          Callable[[Tensors], Tensors], torch.Generator]:
    """A batch of ``size`` (user, positive, negative) ids drawn with a generator seeded 0;
    returns its looked-up rows (detached), ``loss_at(δ)``, ``grad_fn(δ)`` (∂loss/∂δ, for
    `perturb`) and the generator, to draw further from."""
    g = torch.Generator().manual_seed(0)
    batch = {"user": torch.randint(users, (size,), generator=g),
             "item": torch.randint(items, (size, 2), generator=g)}
    emb = {k: v.detach() for k, v in model.embed(batch).items()}

    def loss_at(delta: Tensors) -> torch.Tensor:
        return LOSSES["bpr"](model.score({k: emb[k] + delta[k] for k in emb}, batch))

    def grad_fn(delta: Tensors) -> Tensors:
        delta = {k: d.clone().requires_grad_(True) for k, d in delta.items()}
        return dict(zip(delta, torch.autograd.grad(loss_at(delta), list(delta.values()))))

    return emb, loss_at, grad_fn, g
