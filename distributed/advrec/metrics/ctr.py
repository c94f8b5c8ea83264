"""CTR metrics over tensors: ROC AUC, log-loss and group AUC (gAUC), all vectorised.

- ``auc``      the Mann–Whitney statistic with average ranks, so tied scores count 1/2;
- ``logloss``  mean binary cross-entropy from logits;
- ``gauc``     per-group (per-user) AUC weighted by the group's number of examples, over the groups
               that have both classes (DIN, Zhou et al. KDD 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advrec.errors import AdvrecError


def _check(scores: Tensor, labels: Tensor, name: str) -> None:
    """Raise a one-line AdvrecError on inputs no AUC can be computed from."""
    if scores.dim() != 1 or scores.shape != labels.shape:
        raise AdvrecError(f"{name}: scores and labels must be 1-D of the same shape, got "
                          f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    if torch.isnan(scores).any():
        raise AdvrecError(f"{name}: scores contain NaN")
    if not ((labels == 0) | (labels == 1)).all():
        raise AdvrecError(f"{name}: labels must be 0 or 1")


def _group_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group AUC via average ranks, with no loop over groups or examples.

    ``scores``, ``labels``, ``groups`` (N,). Returns ``auc`` (G,) float64 (NaN where a group lacks
    a class), ``n`` (G,) examples per group and ``n_pos`` (G,) positives per group, for the G
    distinct groups in ascending order.
    """
    # Lexsort by (group, score): a stable sort on the secondary key, then on the primary one.
    order = torch.sort(scores, stable=True).indices
    order = order[torch.sort(groups[order], stable=True).indices]
    g, s, y = groups[order], scores[order], labels[order].double()
    n_total = g.numel()

    # Group segments: sizes and the global position where each starts.
    _, group_id, n = torch.unique_consecutive(g, return_inverse=True, return_counts=True)
    group_start = n.cumsum(0) - n

    # Tie runs: consecutive equal (group, score). Each member of a run gets the run's average
    # 1-based rank, start + (size + 1) / 2, which is what makes ties count 1/2.
    new_run = torch.ones(n_total, dtype=torch.bool, device=g.device)
    new_run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    run_id = new_run.cumsum(0) - 1
    run_size = torch.bincount(run_id).double()
    run_start = run_size.cumsum(0) - run_size
    rank = (run_start + (run_size + 1) / 2)[run_id] - group_start[group_id].double()

    # Mann–Whitney per group: U = sum of positive ranks - n_pos (n_pos + 1) / 2.
    n_groups = n.numel()
    n_pos = torch.zeros(n_groups, dtype=torch.float64, device=g.device).scatter_add_(0, group_id, y)
    rank_pos = torch.zeros_like(n_pos).scatter_add_(0, group_id, rank * y)
    n_neg = n.double() - n_pos
    auc = (rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)  # 0/0 = NaN for one-class groups
    return auc, n, n_pos


def auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC of ``scores`` (N,) against ``labels`` (N,) in {0, 1}; tied scores count 1/2.

    Raises AdvrecError if the shapes differ, scores contain NaN, labels are not 0/1 or labels hold
    only one class.
    """
    scores, labels = scores.detach(), labels.detach()
    _check(scores, labels, "auc")
    value, _, _ = _group_auc(scores, labels, torch.zeros_like(labels, dtype=torch.long))
    if value.numel() == 0 or torch.isnan(value[0]):
        raise AdvrecError("auc: labels must contain both classes (0 and 1)")
    return float(value[0])


def logloss(logits: Tensor, labels: Tensor) -> float:
    """Mean binary cross-entropy of ``logits`` (N,) against ``labels`` (N,) in [0, 1].

    Works from logits (log-sum-exp inside), so it stays finite for confident predictions where
    sigmoid then log would give log(0).
    """
    logits, labels = logits.detach(), labels.detach()
    if logits.shape != labels.shape or logits.numel() == 0:
        raise AdvrecError(f"logloss: logits and labels must be non-empty with the same shape, got "
                          f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    return float(F.binary_cross_entropy_with_logits(logits.double(), labels.double()))


def gauc(scores: Tensor, labels: Tensor, groups: Tensor) -> float:
    """Group AUC: the AUC of each group (user) in ``groups`` (N,) weighted by its example count.

    ``scores`` (N,), ``labels`` (N,) in {0, 1}, ``groups`` (N,) integer ids. Groups with a single
    class have no AUC and are left out of both the sum and the weights. Raises AdvrecError on bad
    inputs (as ``auc``) or if no group has both classes.
    """
    scores, labels, groups = scores.detach(), labels.detach(), groups.detach()
    _check(scores, labels, "gauc")
    if groups.shape != labels.shape:
        raise AdvrecError(f"gauc: groups must have the shape of labels, got {tuple(groups.shape)} "
                          f"and {tuple(labels.shape)}")
    value, n, _ = _group_auc(scores, labels, groups)
    valid = ~torch.isnan(value)
    if not valid.any():
        raise AdvrecError("gauc: no group has both classes (0 and 1)")
    weight = n[valid].double()
    return float((value[valid] * weight).sum() / weight.sum())


def ctr_metrics(logits: Tensor, labels: Tensor, groups: Tensor) -> dict[str, float]:
    """``auc``, ``logloss`` and ``gauc`` of ``logits`` (N,) against ``labels`` (N,) by ``groups``.

    AUC and gAUC use the logits directly: the sigmoid is monotone, so ranks (and AUC) are the same,
    and skipping it avoids ties from float saturation near 0 and 1.
    """
    return {
        "auc": auc(logits, labels),
        "logloss": logloss(logits, labels),
        "gauc": gauc(logits, labels, groups),
    }
