"""Perturbations of embedding rows inside a per-row ε-ball: random, FGSM, FGM and PGD.

One threat model for every model and for both uses: during training the tensors are the batch's
looked-up rows ((B, d) or (B, C, d)); in robustness evaluation they are whole tables
((rows, d)). Either way the last dimension is the embedding and the budget holds for each row:
``‖δ_row‖₂ ≤ ε`` (L2) or ``‖δ_row‖∞ ≤ ε`` (L∞). With ``relative=True`` the radius of each row
is ``ε · ‖x_row‖₂``, so ε means the same at any embedding scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Tensors = dict[str, Tensor]
GradFn = Callable[[Tensors], Tensors]
"""Maps perturbations δ (same keys and shapes as the attacked tensors) to ∂loss/∂δ."""

Method = Literal["none", "random", "fgsm", "fgm", "pgd"]
Norm = Literal["l2", "linf"]

_TINY = 1e-12  # keeps normalising a zero gradient finite (its direction stays zero)


@dataclass(frozen=True)
class Attack:
    """What to compute: a method, a budget and, for PGD, steps and a step size."""

    method: Method
    eps: float
    steps: int = 1
    step_size: float | None = None  # PGD; None -> 2.5 * eps / steps (Madry et al. 2018)
    norm: Norm = "l2"
    random_start: bool = False
    relative: bool = False

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


def _radius(x: Tensor, attack: Attack, scale: Tensor | None = None) -> Tensor | float:
    """The per-row budget: a scalar, or (..., 1) when relative to each row's norm or scaled per
    row (``scale``, broadcast against (..., 1): adaptive ε, `advrec.adversarial.adaptive`)."""
    radius = attack.eps * x.detach().norm(dim=-1, keepdim=True) if attack.relative else attack.eps
    return radius if scale is None else radius * scale


def _inv_norm(g: Tensor) -> Tensor:
    """(..., 1): 1 / ‖g_row‖₂, with zero rows kept at zero length (their direction is zero)."""
    return g.norm(dim=-1, keepdim=True).clamp_min(_TINY).reciprocal()


def project(delta: Tensor, radius: Tensor | float, norm: Norm, inplace: bool = False) -> Tensor:
    """Project each row of ``delta`` back onto the ball of ``radius`` (in place if asked)."""
    r = torch.as_tensor(radius, dtype=delta.dtype, device=delta.device)
    if norm == "linf":
        return torch.clamp(delta, -r, r, out=delta if inplace else None)
    scale = (r * _inv_norm(delta)).clamp(max=1.0)
    return delta.mul_(scale) if inplace else delta * scale


def _draw(sample: Callable[..., Tensor], shape: tuple[int, ...], like: Tensor,
          generator: torch.Generator | None) -> Tensor:
    """``sample`` (torch.rand or torch.randn) of ``shape`` on ``generator``'s device, then on
    ``like``'s: the sampling generator lives on the CPU (it also draws negatives there), so a
    GPU run draws what a CPU run draws."""
    device = generator.device if generator is not None else like.device
    return sample(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def _random_in_ball(x: Tensor, radius: Tensor | float, norm: Norm,
                    generator: torch.Generator | None) -> Tensor:
    """A random point of the ball (L∞: uniform in the box; L2: random direction, uniform radius)."""
    if norm == "linf":
        return (2 * _draw(torch.rand, x.shape, x, generator) - 1) * radius
    direction = _draw(torch.randn, x.shape, x, generator)
    r = _draw(torch.rand, (*x.shape[:-1], 1), x, generator)
    return direction * (_inv_norm(direction) * r * radius)


def _step(g: Tensor, size: Tensor | float, norm: Norm) -> Tensor:
    """A step of length ``size`` along the norm's steepest ascent: sign(g) (L∞), g/‖g‖₂ (L2)."""
    if norm == "linf":
        return g.sign() * size
    # scale the small (..., 1) factor first: one pass over the big tensor instead of two
    return g * (_inv_norm(g) * size)


def _ascend(delta: Tensor, g: Tensor, size: Tensor | float, radius: Tensor | float,
            norm: Norm) -> Tensor:
    """One PGD step ``project(δ + step(g))``, updating ``δ`` in place.

    In place because on CPU a fresh tensor per elementwise op costs as much as the op itself
    (allocation and first-touch page faults); ``perturb`` owns δ, and no graph holds it.
    """
    direction, scale = (g.sign(), size) if norm == "linf" else (g, _inv_norm(g) * size)
    delta.addcmul_(direction, torch.as_tensor(scale, dtype=g.dtype))
    return project(delta, radius, norm, inplace=True)


def perturb(x: Tensors, grad_fn: GradFn, attack: Attack, *, init_grad: Tensors | None = None,
            generator: torch.Generator | None = None, scale: Tensors | None = None) -> Tensors:
    """Compute δ for each tensor of ``x`` (detached, same shapes), inside the per-row ball.

    ``grad_fn(δ)`` returns the loss gradient at ``x + δ``. ``init_grad``, the gradient at δ = 0
    when the caller already has it (the clean loss's), saves the first gradient pass of FGM/FGSM
    and of PGD without random start. ``scale``, per key a multiplier of each row's radius
    ((B, 1) for (B, d) rows, (B, 1, 1) for (B, C, d)), gives every row its own budget; PGD's
    step size scales with it, so its steps keep their size relative to the ball.
    """
    if attack.method == "none" or attack.eps == 0.0:
        return {k: torch.zeros_like(v) for k, v in x.items()}
    radius = {k: _radius(v, attack, None if scale is None else scale[k]) for k, v in x.items()}
    if attack.method == "random":
        # noise on the sphere (L2) or a corner of the box (L∞): the full budget, no gradient
        return {k: _step(_draw(torch.randn, v.shape, v, generator), radius[k], attack.norm)
                for k, v in x.items()}
    if attack.method in ("fgsm", "fgm"):
        g = init_grad if init_grad is not None else grad_fn({k: torch.zeros_like(v) for k, v in x.items()})
        norm: Norm = "linf" if attack.method == "fgsm" else "l2"
        return {k: _step(g[k], radius[k], norm) for k in x}

    # PGD: K steps of size alpha (scaled like the radius when relative), each projected back
    step_size = {k: attack.alpha * (radius[k] / attack.eps) for k in x}
    if attack.random_start:
        delta = {k: _random_in_ball(v, radius[k], attack.norm, generator) for k, v in x.items()}
        g = grad_fn(delta)
    else:
        g = init_grad if init_grad is not None else grad_fn(
            {k: torch.zeros_like(v) for k, v in x.items()})
    for step in range(attack.steps):
        if step > 0:
            g = grad_fn(delta)
        if step == 0 and not attack.random_start:
            # from δ = 0 the projection of a step is the same step cut to the radius, row by row
            # (L2 and L∞ alike), so it needs no projection pass
            shrink = min(1.0, attack.eps / attack.alpha)
            delta = {k: _step(g[k], step_size[k] * shrink, attack.norm) for k in x}
        else:
            delta = {k: _ascend(delta[k], g[k], step_size[k], radius[k], attack.norm) for k in x}
    return delta
