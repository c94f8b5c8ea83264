"""Perturbations of embedding rows inside a per-row ε-ball: random, FGSM, FGM, PGD and JSMA.

One threat model for every model and for both uses: during training the tensors are the batch's
looked-up rows ((B, d) or (B, C, d)); in robustness evaluation they are whole tables
((rows, d)). Either way the last dimension is the embedding and the budget holds for each row:
``‖δ_row‖₂ ≤ ε`` (L2) or ``‖δ_row‖∞ ≤ ε`` (L∞). With ``relative=True`` the radius of each row
is ``ε · ‖x_row‖₂``, so ε means the same at any embedding scale.

JSMA (Papernot et al. 2016) adds an L0 budget to the L∞ one: it changes at most ``l0``
coordinates of each row, the most salient (the largest ``|∂loss/∂x|``), each by the whole ε.
FGM and PGD change every coordinate a little; JSMA a few, each by a lot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor

from advrec.errors import AdvrecError

Tensors = dict[str, Tensor]
GradFn = Callable[[Tensors], Tensors]
"""Maps perturbations δ (same keys and shapes as the attacked tensors) to ∂loss/∂δ."""

Method = Literal["none", "random", "fgsm", "fgm", "pgd", "jsma", "jsma-items", "jsma-fields"]
"""``jsma-items`` swaps history items (`advrec.adversarial.jsma_items`), ``jsma-fields``
changes feature fields' values (`advrec.adversarial.jsma_fields`), not embedding rows: the
objective runs them, never `perturb`."""
DISCRETE: tuple[Method, ...] = ("jsma-items", "jsma-fields")
"""The attacks on real, discrete inputs, with a budget of changed inputs and no ε."""
Norm = Literal["l2", "linf"]
Positions = Literal["all", "one"]
"""jsma-items in training: the swaps raise every position's next-item loss, or one random real
position's per history (`advrec.adversarial.objective.one_position`)."""
State = TypeVar("State")
Grad = TypeVar("Grad")

_TINY = 1e-12  # keeps normalising a zero gradient finite (its direction stays zero)


@dataclass(frozen=True)
class Attack:
    """What to compute: a method, a budget and, for PGD, steps and a step size; for JSMA,
    rounds (``steps``) and the coordinates it may change per row (``l0``); for JSMA on item
    histories, the items swapped per history (``budget``, where ε means nothing), the
    substitutes' least cosine with the item they replace (``similarity``) and, in training,
    the positions whose loss the swaps raise (``positions``); for JSMA on feature
    fields, the fields changed per example (``budget``)."""

    method: Method
    eps: float
    steps: int = 1
    step_size: float | None = None  # PGD; None -> 2.5 * eps / steps (Madry et al. 2018)
    norm: Norm = "l2"  # PGD and random; FGSM and JSMA are L∞, FGM L2, whatever it says
    random_start: bool = False
    relative: bool = False
    l0: int | None = None  # JSMA; None -> `default_l0` of each row's width
    budget: int = 1  # jsma-items, jsma-fields
    similarity: float | None = None  # jsma-items; None -> any item may substitute
    positions: Positions = "all"  # jsma-items in training

    @property
    def active(self) -> bool:
        """Whether the attack changes anything: a method, and a positive ε (a positive budget
        for the discrete attacks)."""
        if self.method in DISCRETE:
            return self.budget > 0
        return self.method != "none" and self.eps > 0

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    @property
    def ascent_norm(self) -> Norm:
        """The norm of the attack's ascent step: L∞ (sign) for FGSM, L2 for FGM, ``norm``
        otherwise."""
        return "linf" if self.method == "fgsm" else "l2" if self.method == "fgm" else self.norm

    @property
    def from_clean_gradient(self) -> bool:
        """Whether the attack's first gradient is the one at δ = 0, the clean loss's, which a
        caller that has it passes to `perturb` as ``init_grad``."""
        return self.method in ("fgsm", "fgm", "jsma", *DISCRETE) or (self.method == "pgd"
                                                                   and not self.random_start)


def default_l0(width: int) -> int:
    """JSMA's coordinates per row when ``l0`` is not set: a tenth of the row's width, at least 1."""
    return max(1, width // 10)


def rank_salient(saliency: Tensor, k: int, excluded: Tensor | None = None) -> Tensor:
    """(..., n) saliencies (≥ 0) -> (..., k) indices of the ``k`` most salient entries along the
    last dimension, most salient first; ``excluded`` ((..., n) bool) entries come after every
    other. JSMA's choice, of a row's coordinates here; of a history's positions or an
    example's fields alike (saliency: the gradient norm of each position's or field's row)."""
    if excluded is not None:
        saliency = saliency.masked_fill(excluded, -math.inf)
    return saliency.topk(k, dim=-1).indices


def greedy_rounds(state: State, rounds: int, grad_fn: Callable[[State], Grad],
                  step: Callable[[State, Grad], State], init_grad: Grad | None = None) -> State:
    """JSMA's greedy loop on a discrete input (a history, an example's fields): each of
    ``rounds`` differentiates the loss once at the current ``state`` (the first round at
    ``init_grad``, the gradient at ``state`` itself, when the caller has it) and takes one
    ``step`` from that gradient, as Papernot et al. recompute the saliency map after each
    change."""
    g = init_grad
    for _ in range(rounds):
        state = step(state, grad_fn(state) if g is None else g)
        g = None
    return state


def ball_radius(x: Tensor, attack: Attack, scale: Tensor | None = None) -> Tensor | float:
    """The per-row budget: a scalar, or (..., 1) when relative to each row's norm or scaled per
    row (``scale``, broadcast against (..., 1): adaptive ε, `advrec.adversarial.adaptive`)."""
    radius = attack.eps * x.detach().norm(dim=-1, keepdim=True) if attack.relative else attack.eps
    return radius if scale is None else radius * scale


def _step_size(attack: Attack, radius: Tensor | float) -> Tensor | float:
    """PGD's step ``attack.alpha``, scaled as the row's radius is (relative ε, adaptive
    scales): a step keeps its size relative to its ball."""
    return attack.alpha * (radius / attack.eps)


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


def _jsma(x: Tensors, grad_fn: GradFn, attack: Attack, radius: dict[str, Tensor | float],
          init_grad: Tensors | None) -> Tensors:
    """JSMA's δ: in each of ``attack.steps`` rounds, the gradient at the current δ ranks the
    coordinates of each row not changed yet by ``|g|`` (`rank_salient`), and the most salient
    of them jump to ``radius · sign(g)``, onto the L∞ box's face (JSMA saturates the features
    it picks).

    The L0 schedule: after round t of T, ``ceil(t · l0 / T)`` coordinates of each row are
    changed, so the rounds share the budget evenly and the last one reaches ``l0`` exactly;
    a changed coordinate is never picked again nor moved back (JSMA takes saturated features
    out of its search domain), so at most ``l0`` coordinates per row differ from zero, however
    many rounds. Spreading the picks (rather than picking all ``l0`` at the first round and
    refining their values) is what makes JSMA iterative: each pick sees the gradient after the
    earlier ones, as JSMA recomputes its saliency map after each change. A round that adds no
    coordinate (``steps > l0``) costs no gradient.
    """
    widest = max(v.shape[-1] for v in x.values())
    if attack.l0 is not None and attack.l0 > widest:
        raise AdvrecError(f"l0={attack.l0} is above the attacked rows' dimension {widest}: "
                          "JSMA changes at most l0 coordinates of each row")
    # rows narrower than l0 (DeepFM's first-order weights, width 1) may change all theirs
    budget = {k: default_l0(v.shape[-1]) if attack.l0 is None else min(attack.l0, v.shape[-1])
              for k, v in x.items()}
    delta = {k: torch.zeros_like(v) for k, v in x.items()}
    changed = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in x.items()}
    g = init_grad
    done = dict.fromkeys(x, 0)  # coordinates changed so far in each row of each key
    for t in range(1, attack.steps + 1):
        # this round's share: up to ceil(t·l0/T) changed coordinates per row
        new = {k: -(-t * b // attack.steps) - done[k] for k, b in budget.items()}
        if not any(new.values()):
            continue
        if g is None:
            g = grad_fn(delta)
        for k, n in new.items():
            if n:
                picked = torch.zeros_like(changed[k]).scatter_(
                    -1, rank_salient(g[k].abs(), n, changed[k]), True)
                changed[k] |= picked
                delta[k] = torch.where(picked, g[k].sign() * radius[k], delta[k])
                done[k] += n
        g = None
    return delta


def perturb(x: Tensors, grad_fn: GradFn, attack: Attack, *, init_grad: Tensors | None = None,
            generator: torch.Generator | None = None, scale: Tensors | None = None) -> Tensors:
    """Compute δ for each tensor of ``x`` (detached, same shapes), inside the per-row ball.

    ``grad_fn(δ)`` returns the loss gradient at ``x + δ``. ``init_grad``, the gradient at δ = 0
    when the caller already has it (the clean loss's), saves the first gradient pass of the
    attacks that start there (`Attack.from_clean_gradient`). ``scale``, per key a multiplier of
    each row's radius ((B, 1) for (B, d) rows, (B, 1, 1) for (B, C, d)), gives every row its own
    budget; PGD's step size scales with it, so its steps keep their size relative to the ball,
    and JSMA's changed coordinates move by their row's own radius.
    """
    if attack.method in DISCRETE:
        raise ValueError(f"{attack.method} changes discrete inputs (advrec.adversarial."
                         f"{attack.method.replace('-', '_')}): it has no embedding perturbation")
    if attack.method == "none" or attack.eps == 0.0:
        return {k: torch.zeros_like(v) for k, v in x.items()}
    radius = {k: ball_radius(v, attack, None if scale is None else scale[k])
              for k, v in x.items()}
    if attack.method == "random":
        # noise on the sphere (L2) or a corner of the box (L∞): the full budget, no gradient
        return {k: _step(_draw(torch.randn, v.shape, v, generator), radius[k], attack.norm)
                for k, v in x.items()}
    if attack.method in ("fgsm", "fgm"):
        g = init_grad if init_grad is not None else grad_fn({k: torch.zeros_like(v) for k, v in x.items()})
        return {k: _step(g[k], radius[k], attack.ascent_norm) for k in x}
    if attack.method == "jsma":
        return _jsma(x, grad_fn, attack, radius, init_grad)

    # PGD: K steps of size alpha (scaled like the radius when relative), each projected back
    step_size = {k: _step_size(attack, radius[k]) for k in x}
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


def ascend(x: Tensors, delta: Tensors, grad: Tensors, attack: Attack,
           scale: Tensors | None = None) -> Tensors:
    """One projected ascent step of each ``delta`` from where it was left, along ``grad`` (the
    loss's gradient at ``x + delta``, however the caller got it): PGD's step of size
    ``attack.alpha`` in ``attack.ascent_norm``, projected onto each row's ball around ``x``
    (detached rows, as in `perturb`; ``scale`` as there). Returns new tensors."""
    out = {}
    for k, v in x.items():
        radius = ball_radius(v, attack, None if scale is None else scale[k])
        out[k] = _ascend(delta[k].detach().clone(), grad[k], _step_size(attack, radius), radius,
                         attack.ascent_norm)
    return out
