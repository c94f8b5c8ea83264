"""Per-user budgets: adaptive ε, the adversarial defences made for poisoning (``adv.adaptive``).

Both scale the budget of each example by its user's weight ``w_u = λ · σ(r_u − 1)`` in (0, λ),
so ``ε_u = ρ · w_u`` with ρ = ``adv.eps`` and λ = ``adv.adaptive_lambda``; with the papers'
λ = 2 a user at the batch's mean (r_u = 1) gets exactly ρ, and no user more than 2ρ:

- VAT (Zhang et al., RecSys 2024, "vulnerability-aware"): ``r_u = mean_loss / loss_u``. A user
  the model fits well (a low loss) is the one a poisoning attack moves most, so it gets a
  larger ε.
- PamaCF (Zhang et al., NeurIPS 2024, "personalised magnitude"): ``r_u = ‖e_u‖² / mean ‖e‖²``.
  Its bound on the error reduction grows with the user embedding's scale, so a user with a
  larger embedding gets a larger ε.

Both read only what the batch's clean forward already computed (its per-row losses, its looked-up
user rows), detached: no second forward, no gradient, and no communication. On N workers each
worker normalises by its own local batch's mean. The official code normalises by its
mini-batch's mean too (2048 rows drawn from millions), so a worker's batch of
``train.batch_size / N`` rows is the same estimate with N times fewer rows; an all-reduce of the
mean would make the attack wait for every worker on every step, and the attack stays local
(ARCHITECTURE.md: the one all-reduce per step is the objective's backward).

Where this follows the official code (github.com/Kaike-Zhang/VAT and Kaike-Zhang/PamaCF,
utls/trainer.py, ``_get_user_eps``), and where it departs:
- every perturbed row of an example, the user's and its items' alike, gets the example's user
  weight (their trainers scale the user, positive and negative rows by the same ``user_eps``);
- VAT's ``loss_u`` is the sum of the user's per-example losses in the batch and ``mean_loss``
  the mean of these sums over the batch's distinct users, as in their trainer; an example's
  loss is its mean over its negatives here (theirs has one negative per example);
- PamaCF's mean is over the batch's examples (a user counted once per example), as in theirs;
  ``e_u`` is the concatenation of the example's looked-up user rows, so ``‖e_u‖²`` sums the
  squared norms of every ``user...`` key (MF: the one user row, as in theirs; NeuMF: its GMF
  and MLP rows; two-tower, DeepFM, DCN-v2, MMoE: the user's id and feature fields);
- their guard ``+ 1e-9`` against a zero denominator is a floor of `_TINY` here (one op fewer;
  the same for any loss or squared norm above 1e-9).
"""

from __future__ import annotations

import torch
from torch import Tensor

_TINY = 1e-9  # the official code's guard: a zero loss or norm makes the ratio large, not inf


def _weight(ratio: Tensor, lam: float) -> Tensor:
    """``λ · σ(r − 1)``: ratios to the batch mean -> budget multipliers in (0, λ), computed in
    place in ``ratio`` (a fresh tensor of the caller's: each op on these few thousand numbers
    costs its dispatch, not its arithmetic, so none allocates)."""
    return ratio.sub_(1.0).sigmoid_().mul_(lam)


SCATTER_ROWS_PER_EXAMPLE = 16
"""`user_sums` groups a batch of B examples by a scatter over the user table's rows when it has
at most this many rows per example (O(rows), no sort), else with ``torch.unique`` (a sort of the
B ids, about 11·B comparisons for B = 2048). In an MF step on ml-100k (943 users, B = 2048) the
sort cost 4-5 % of the step, the scatter nothing measurable."""


def user_sums(users: Tensor, values: Tensor, num_users: int) -> tuple[Tensor, Tensor | int]:
    """(B,) user ids in [0, num_users) and (B,) values -> (B,) the sum of the values of each
    example's user over the batch, and the number of distinct users in the batch."""
    if num_users <= SCATTER_ROWS_PER_EXAMPLE * users.numel():
        sums = values.new_zeros(num_users).index_add_(0, users, values)
        distinct = torch.count_nonzero(torch.bincount(users, minlength=num_users))
        return sums.index_select(0, users), distinct
    ids, inverse = torch.unique(users, return_inverse=True)
    sums = values.new_zeros(ids.shape[0]).index_add_(0, inverse, values)
    return sums.index_select(0, inverse), ids.shape[0]


def vat_weights(users: Tensor, row_losses: Tensor, lam: float, num_users: int) -> Tensor:
    """VAT's multipliers: (B,) user ids (rows of a table of ``num_users``) and (B,) per-example
    clean losses -> (B,) ``w_u``.

    ``loss_u`` sums a user's examples in the batch; ``mean_loss`` averages ``loss_u`` over the
    batch's distinct users, i.e. the batch's total loss over their number;
    ``w_u = λ · σ(mean_loss / loss_u − 1)``. A user is a user row: with ``data.user_buckets``
    the users hashed into one row count as one.
    """
    losses = row_losses.detach()
    per_user, distinct = user_sums(users, losses, num_users)
    ratio = torch.div(losses.sum() / distinct, per_user.clamp_min_(_TINY))
    return _weight(ratio, lam)


def pamacf_weights(user_rows: list[Tensor], lam: float) -> Tensor:
    """PamaCF's multipliers: each example's looked-up user rows ((B, d_k) each) -> (B,) ``w_u``,
    ``λ · σ(‖e_u‖² / mean_b ‖e_b‖² − 1)``."""
    # the norms first: (B,) results, no (B, d) temporary
    sq_norm = sum(torch.linalg.vector_norm(r.detach().flatten(1), dim=1).square()
                  for r in user_rows)
    return _weight(sq_norm.div_(sq_norm.mean().clamp_min_(_TINY)), lam)


def row_scales(weights: Tensor, rows: dict[str, Tensor]) -> dict[str, Tensor]:
    """(B,) per-example multipliers shaped to scale each example's rows: (B, 1) for a (B, d)
    user row, (B, 1, 1) for (B, C, d) item rows, as `perturb`'s ``scale`` expects."""
    return {k: weights.view(-1, *([1] * (v.dim() - 1))) for k, v in rows.items()}
