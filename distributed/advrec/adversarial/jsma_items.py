"""JSMA on item histories (``jsma-items``): swap a few items of each user's history for others.

The discrete counterpart of JSMA in embedding space (`advrec.adversarial.perturb`): an attacker
who can change what a history holds, not its embedding rows, replaces at most ``budget`` of its
items (an L0 budget on real inputs). Yue et al. (RecSys 2022) attack SASRec the same way.

Greedy, as JSMA is (Papernot et al. 2016 recompute the saliency map after each change): each of
``budget`` rounds differentiates the loss at the current history, once, with respect to its item
rows, ``g`` (B, L, d), and then

1. picks the position with the largest ``‖g_p‖₂`` among the real positions not swapped yet
   (`rank_salient`; padding is never touched);
2. picks the substitute ``j`` with the largest first-order gain ``g_p·(e_j − e_i)`` over the
   catalogue (one (B, 1, d) × (d, N) product), never the padding id nor the current item ``i``,
   and with ``similarity`` only items whose rows have cosine ≥ it with ``e_i``'s;
3. swaps it in when that gain is positive (no item raises the loss to first order: the position
   keeps its item, and counts as spent).

A round costs a forward and a backward of the model and the catalogue product; the first
round's gradient is the clean loss's, which a caller that has it passes (``init_grad``). The
swapped history is a discrete input: the model embeds it again (its rows are catalogue rows).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from advrec.adversarial.perturb import greedy_rounds, rank_salient

HistoryGradFn = Callable[[Tensor], Tensor]
"""Maps histories (B, L) of item ids to ∂loss/∂(their item rows), (B, L, d): the loss the
attack raises."""


def swap_items(seq: Tensor, grad_fn: HistoryGradFn, catalogue: Tensor, pad: int, budget: int,
               similarity: float | None = None, init_grad: Tensor | None = None) -> Tensor:
    """The attacked histories: at most ``budget`` items of each row of ``seq`` swapped.

    Args:
        seq: (B, L) int64 histories, padded with ``pad`` (SASRec pads on the left).
        grad_fn: the gradient of the loss to raise at a history (`HistoryGradFn`).
        catalogue: (N, d) every item's row, item ``j`` at row ``j`` (``pad`` is no row of it).
        pad: the padding id, never a position to swap nor a substitute.
        budget: items swapped per history, at most (0 changes nothing).
        similarity: with a number, a substitute's row must have cosine ≥ it with the row of the
            item it replaces (Yue et al.'s constraint); None: any item.
        init_grad: (B, L, d) the gradient at ``seq`` itself, when the caller has it (saves the
            first round's pass).

    Returns:
        (B, L) int64, a new tensor; no graph.
    """
    spent = seq == pad  # positions not to pick: padding, then each round's pick
    rows = torch.arange(seq.shape[0], device=seq.device).unsqueeze(1)  # (B, 1)
    units = F.normalize(catalogue, dim=-1) if similarity is not None else None

    def step(current: Tensor, g: Tensor) -> Tensor:
        position = rank_salient(g.norm(dim=-1), 1, spent)  # (B, 1)
        real = ~spent.gather(1, position)  # False where a history has no position left
        old = current.gather(1, position).clamp(max=catalogue.shape[0] - 1)  # (B, 1)
        g_pos = g[rows, position]  # (B, 1, d)
        e_old = catalogue[old]  # (B, 1, d)
        gain = g_pos @ catalogue.T - (g_pos * e_old).sum(-1, keepdim=True)  # (B, 1, N)
        gain.scatter_(-1, old.unsqueeze(-1), -torch.inf)  # the current item is no substitute
        if units is not None:
            cosine = F.normalize(e_old, dim=-1) @ units.T  # (B, 1, N)
            gain.masked_fill_(cosine < similarity, -torch.inf)
        best, item = gain.max(-1)  # (B, 1) each
        swap = real & (best > 0)
        current.scatter_(1, position, torch.where(swap, item, current.gather(1, position)))
        spent.scatter_(1, position, True)
        return current

    return greedy_rounds(seq.clone(), budget, grad_fn, step, init_grad)
