"""JSMA on feature fields (``jsma-fields``): change a few categorical fields of each example.

The discrete attack on the feature models (DeepFM, DCN-v2, MMoE, two-tower): an attacker who
controls what a user's or an item's profile says (gender, age bucket, occupation, genres), not
its embedding rows, changes at most ``budget`` fields of each example (an L0 budget on real
inputs), each to the value that hurts most. The ids are no field here: another id is another
user or item (`advrec.models.fields.FieldModel.feature_fields`).

The rule is jsma-items' (`advrec.adversarial.jsma_items`), greedy: each of ``budget`` rounds
differentiates the loss once with respect to every field's row, ``g``, and then

1. picks, per example, the field slot with the largest ``‖g‖₂`` among those not picked yet
   (`rank_salient`; a slot is a user field, or an item field of one candidate);
2. picks its new value by the largest first-order gain over the field's vocabulary (one
   (B, D) × (D, V) product per field), never id 0 (missing, unknown, padding):

   - single-valued: ``v`` with the largest ``g·(e_v − e_current)``;
   - multi-valued (the row is the mean ``m`` of its ``n`` tokens' rows): add an absent token
     ``v``, gain ``g·(e_v − m)/(n + 1)``, or drop a present one ``t`` (when ``n ≥ 2``),
     gain ``g·(m − e_t)/(n − 1)``, whichever gains most;
3. changes it when that gain is positive (else the slot keeps its value, and counts as spent).

Only `score` runs in the rounds: a field's row at any values is a function of its catalogue
(every value's row), so the tables are looked up once per field, not per round.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from advrec.adversarial.perturb import Tensors, greedy_rounds, rank_salient
from advrec.errors import AdvrecError

FieldGradFn = Callable[[Tensors], Tensors]
"""Maps each field's rows (B, K, D) to ∂loss/∂them (B, K, D): the loss the attack raises."""


def check_fields(fields: list[str], budget: int, attack: str, budget_text: str,
                 dataset: str, holder: str = "each example") -> None:
    """Refuse, in one line, an attack on the feature ``fields`` (`FieldModel.feature_fields`)
    of ``dataset`` that has none to change, or a ``budget`` above their number (each field is
    changed once at most). ``attack`` and ``budget_text`` name the settings
    (``adv.method=jsma-fields``, ``adv.budget=3``), ``holder`` what has the fields."""
    if not fields:
        raise AdvrecError(f"{attack} changes feature fields, and {dataset} has no side "
                          "features (no user_features.parquet nor item_features.parquet); "
                          "prepare it with some (data.user_features, data.item_features, or "
                          "a log whose user and item files have them)")
    if budget > len(fields):
        raise AdvrecError(f"{budget_text}: above the {len(fields)} feature field"
                          f"{'s' if len(fields) > 1 else ''} of {holder} "
                          f"({', '.join(fields)}); jsma-fields changes each at most once")


def field_rows(values: Tensor, catalogue: Tensor) -> Tensor:
    """A field's rows (B, K, D) from its ``values``: (B, K) ids -> their rows; (B, K, T) tokens
    -> the mean of the present (non-zero) tokens' rows, 0 where none is (as
    `advrec.models.fields.FieldEmbeddings.lookup`)."""
    rows = catalogue[values]
    if values.dim() == 2:
        return rows
    present = (values > 0).unsqueeze(-1).to(rows.dtype)
    return (rows * present).sum(-2) / present.sum(-2).clamp(min=1.0)


def _single(values: Tensor, g: Tensor, catalogue: Tensor) -> tuple[Tensor, Tensor]:
    """The best new value of each example's picked single-valued slot: ``values`` (B,) the
    current ids, ``g`` (B, D) the gradient at its row. Returns the gain (B,) (-inf: none) and
    the new values (B,)."""
    gain = g @ catalogue.T - (g * catalogue[values]).sum(-1, keepdim=True)  # (B, V)
    gain[:, 0] = -torch.inf  # id 0 is no value
    gain.scatter_(1, values.unsqueeze(1), -torch.inf)  # nor is the current one
    best, value = gain.max(1)
    return best, value


def _multi(tokens: Tensor, g: Tensor, catalogue: Tensor) -> tuple[Tensor, Tensor]:
    """The best edit of each example's picked multi-valued slot: ``tokens`` (B, T) its tokens
    (0 = none; at least one 0, where an added token goes), ``g`` (B, D) the gradient at its
    row. Returns the gain (B,) (-inf: no edit) and the edited tokens (B, T)."""
    size = catalogue.shape[0]
    present = torch.zeros(tokens.shape[0], size, dtype=torch.bool, device=tokens.device)
    present.scatter_(1, tokens, True)
    present[:, 0] = False
    n = (tokens > 0).sum(1, keepdim=True).to(g.dtype)  # (B, 1) tokens, as the mean counts them
    dot = g @ catalogue.T  # (B, V)
    at_mean = (g * field_rows(tokens.unsqueeze(1), catalogue).squeeze(1)).sum(-1, keepdim=True)
    add = ((dot - at_mean) / (n + 1)).masked_fill(present, -torch.inf)
    add[:, 0] = -torch.inf  # id 0 is no token
    drop = ((at_mean - dot) / (n - 1).clamp(min=1)).masked_fill(~present | (n < 2), -torch.inf)
    best, pick = torch.cat([add, drop], 1).max(1)  # (B,) each
    value = pick % size
    adding = pick < size
    # an added token takes the first empty place; a dropped one leaves its first place empty
    place = torch.where(adding.unsqueeze(1), tokens == 0, tokens == value.unsqueeze(1))
    edited = tokens.clone()
    edited[torch.arange(tokens.shape[0], device=tokens.device), place.int().argmax(1)] = (
        torch.where(adding, value, 0))
    return best, edited


def flip_fields(values: Tensors, catalogues: Tensors, grad_fn: FieldGradFn, budget: int,
                init_grad: Tensors | None = None) -> Tensors:
    """The attacked values: at most ``budget`` field slots of each example changed.

    Args:
        values: per field, its slots' values: (B, K) ids of a single-valued field, (B, K, T)
            tokens of a multi-valued one (0 = none); K slots (1 for a user's field, one per
            candidate for an item's).
        catalogues: per field, (V, D) every value's row (`field_rows`' table).
        grad_fn: the gradient of the loss to raise at the fields' rows (`FieldGradFn`).
        budget: slots changed per example, at most (0 changes nothing).
        init_grad: per field (B, K, D), the gradient at ``values`` themselves, when the caller
            has it (saves the first round's pass).

    Returns:
        Per field, new tensors of ``values``' shapes, a multi-valued field's with one more
        token place (an added token's); no graph.
    """
    names = list(values)
    # a place for an added token: each slot is edited once at most
    current = {f: F.pad(v, (0, 1)) if v.dim() == 3 else v.clone()
               for f, v in values.items()}
    width = [values[f].shape[1] for f in names]
    offsets = [sum(width[:i]) for i in range(len(names))]
    first = values[names[0]]
    spent = torch.zeros(first.shape[0], sum(width), dtype=torch.bool, device=first.device)
    examples = torch.arange(first.shape[0], device=first.device)

    def step(state: Tensors, g: Tensors) -> Tensors:
        saliency = torch.cat([g[f].norm(dim=-1) for f in names], 1)  # (B, slots)
        slot = rank_salient(saliency, 1, spent).squeeze(1)  # (B,)
        fresh = ~spent[examples, slot]  # False where an example has no slot left
        spent[examples, slot] = True
        for f, offset, k in zip(names, offsets, width):
            mine = fresh & (slot >= offset) & (slot < offset + k)
            at = (slot - offset).clamp(0, k - 1)  # (B,): its slot, where it picked this field
            old = state[f][examples, at]  # (B,) or (B, T + 1)
            gain, new = (_single if old.dim() == 1 else _multi)(old, g[f][examples, at],
                                                               catalogues[f])
            change = (mine & (gain > 0)).view(-1, *[1] * (old.dim() - 1))
            state[f][examples, at] = torch.where(change, new, old)
        return state

    return greedy_rounds(current, budget, lambda state: grad_fn(
        {f: field_rows(v, catalogues[f]) for f, v in state.items()}), step, init_grad)
