"""``adv.schedule=accumulate``: a perturbation memory, one δ per attacked embedding row.

ATTA (Zheng et al., CVPR 2020) carries each example's perturbation across epochs, because the
adversarial examples of consecutive epochs are alike. In a recommender the perturbed tensors
are embedding rows (a user, an item, a field's value), which recur in many batches of every
epoch, so the memory is kept per row: `DeltaMemory` holds one δ per row of each attacked table
(`Recommender.rows` says which rows a batch looked up), and every lookup of a row trains on
its δ where the last lookup left it. The backward of that training step leaves ∂loss/∂δ on
the batch's rows of δ at no extra cost (the adversarial loss is already differentiated), and
`DeltaMemory.step` moves each of them one projected ascent step: after k lookups a row's δ is
k steps of PGD, and the attack takes no gradient of its own. Measured (benchmarks/README.md,
issue 20), a row's δ is a weak adversary all the same: a row meets other rows at every lookup
(a user new items), so the one δ it keeps is an average of their worst directions, where FGM's
δ is the worst for each lookup; and gathering and storing it costs what FGM's reuse of the
clean gradient saves.

A row looked up several times in a batch (an item in many histories) has one δ there, whose
gradient sums its lookups'. Where the memory lives (``adv.memory``):

- ``worker`` (`DeltaMemory`): one δ table the size of each attacked table, per worker, on the
  worker's device (like one more optimizer moment); each worker keeps the δ of the rows it
  looks up, so two workers' δ of one row drift apart. No communication.
- ``sharded`` (`ShardedDeltaMemory`, with torchrec tables): one δ per row for the whole
  process group, each table's δ cut row-wise into one block per worker, so a worker holds
  1/N of it. A lookup asks each row's owner for its δ (all-to-alls of the counts, the batch's
  distinct ids and their (U, d) rows) and a step sends the moved rows home (one more); rows
  that several workers moved in one step keep the mean of their moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from advrec.adversarial.perturb import Attack, Tensors, ascend, ball_radius, project
from advrec.models.base import RowIds


@dataclass
class _Lookup:
    """One batch's rows of one δ table: their ids (U,), their δ as a leaf (U, d) whose
    ``.grad`` the backward fills, the rows themselves (U, d), detached, when their ball is
    their own (relative ε), and their multipliers of ε (U, 1), if any."""

    name: str
    ids: Tensor | None  # None: every row, ``delta`` is the memory's table itself
    delta: Tensor
    x: Tensor | None
    scale: Tensor | None


class DeltaMemory:
    """One δ row per embedding row that ``attack`` perturbs, each inside its ball."""

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.tables: dict[str, Tensor] = {}  # name -> (rows, d)
        self._pending: list[_Lookup] = []

    def recall(self, emb: Tensors, rows: dict[str, RowIds],
               scale: Tensors | None = None) -> Tensors:
        """The δ of each key of ``emb`` (detached rows (*S, d)), gathered from the memory at
        ``rows``' ids, differentiable with respect to the batch's δ rows (one leaf per table,
        which `step` then moves). ``scale``: each key's multiplier of ε (adaptive ε, as in
        `advrec.adversarial.perturb.perturb`); a row looked up with several takes their mean."""
        self._pending = []
        by_name: dict[str, list[str]] = {}
        for key in emb:
            by_name.setdefault(rows[key][0], []).append(key)
        # a row's own ball (relative or scaled ε) needs its values; a fixed ε needs none
        per_row = self.attack.relative or scale is not None
        out: Tensors = {}
        for name, keys in by_name.items():
            ids = torch.cat([rows[k][1].reshape(-1) for k in keys])
            table = self.tables.get(name)
            if table is None:
                table = self.tables[name] = self._new_table(rows[keys[0]][2], emb[keys[0]])
            if not per_row and self._covers(table, ids):
                # the batch looks up about every row: δ is the whole table, which saves
                # finding its rows (a sort); rows it does not look up get no gradient, no step
                lookup, index = _Lookup(name, None, table.requires_grad_(True), None, None), ids
            else:
                values = {k: emb[k] for k in keys} if per_row else None
                lookup, index = self._rows(name, ids, values,
                                           None if scale is None else {k: scale[k] for k in keys})
            self._pending.append(lookup)
            offset = 0
            for k in keys:
                shape = rows[k][1].shape
                # an embedding lookup: its backward sums the lookups of a row
                out[k] = F.embedding(index[offset:offset + shape.numel()].view(shape),
                                     lookup.delta)
                offset += shape.numel()
        return out

    def _rows(self, name: str, ids: Tensor, emb: Tensors | None,
              scale: Tensors | None) -> tuple[_Lookup, Tensor]:
        """The rows of table ``name`` that ``ids`` (N,) looks up (its keys' ids, in order):
        their lookup, and each id's position among them (N,). ``emb``: the keys' rows, when
        each row's ball is its own (relative or scaled ε)."""
        unique, inverse = torch.unique(ids, return_inverse=True)
        delta = self._fetch(name, unique)
        x = factor = None
        if emb is not None:
            d = delta.shape[-1]
            flat = torch.cat([v.reshape(-1, d) for v in emb.values()])
            # every lookup of a row holds the same vector: any one gives the row's norm
            x = flat.new_empty(len(unique), d).index_copy_(0, inverse, flat)
            if scale is not None:
                scales = torch.cat([scale[k].expand(*v.shape[:-1], 1).reshape(-1, 1)
                                    for k, v in emb.items()])
                counts = torch.bincount(inverse, minlength=len(unique)).unsqueeze(1)
                factor = scales.new_zeros(len(unique), 1).index_add_(0, inverse, scales) / counts
            # the ball moves with the row: its δ is projected onto today's
            delta = project(delta, ball_radius(x, self.attack, factor), self.attack.ascent_norm)
        return _Lookup(name, unique, delta.requires_grad_(True), x, factor), inverse

    @torch.no_grad()
    def step(self) -> None:
        """Move the δ rows of the last `recall` one projected ascent step along the gradient
        the backward left on them (``attack.alpha`` in ``attack.ascent_norm``, scaled like the
        radius), and store them. Rows without a gradient (no backward) stay (`_keep`)."""
        for lookup in self._pending:
            if lookup.delta.grad is None:
                self._keep(lookup)
                continue
            scale = None if lookup.scale is None else {"rows": lookup.scale}
            # a fixed ε's radius reads no row values: δ stands in for them
            x = lookup.delta.detach() if lookup.x is None else lookup.x
            moved = ascend({"rows": x}, {"rows": lookup.delta}, {"rows": lookup.delta.grad},
                           self.attack, scale)["rows"]
            if lookup.ids is None:  # the whole table
                self.tables[lookup.name] = moved
            else:
                self._store(lookup.name, lookup.ids, moved)
        self._pending = []

    def _keep(self, lookup: _Lookup) -> None:
        """A lookup whose δ got no gradient (no backward reached it): its rows stay."""

    def _new_table(self, rows: int, like: Tensor) -> Tensor:
        """The δ table of a table of ``rows`` rows as this memory holds it, zero, on ``like``'s
        device and of its dtype and width."""
        return like.new_zeros(rows, like.shape[-1])

    def _covers(self, table: Tensor, ids: Tensor) -> bool:
        """Whether a batch looking up ``ids`` (N,) trains on the whole δ ``table`` instead of
        its rows: when it looks up about every row, which saves finding them (a sort)."""
        return len(table) <= len(ids)

    def _fetch(self, name: str, ids: Tensor) -> Tensor:
        """The δ rows (U, d) of table ``name`` at ``ids`` (U,), distinct and sorted."""
        return self.tables[name].index_select(0, ids)

    def _store(self, name: str, ids: Tensor, rows: Tensor) -> None:
        """Set the δ rows of table ``name`` at ``ids`` (U,), distinct and sorted, to ``rows``
        (U, d)."""
        self.tables[name].index_copy_(0, ids, rows)

    @torch.no_grad()
    def decay(self, factor: float) -> None:
        """Scale every δ by ``factor`` (``adv.decay``, at each adversarial epoch's start):
        1 keeps them, 0 starts every row from zero again. Inside its ball still."""
        if factor != 1.0:
            for table in self.tables.values():
                table.mul_(factor)

    def state_dict(self) -> dict[str, Tensor]:
        """The δ tables (on the CPU), for a checkpoint."""
        return {name: t.detach().cpu() for name, t in self.tables.items()}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.tables = {name: t.to(device) for name, t in state.items()}


class ShardedDeltaMemory(DeltaMemory):
    """A `DeltaMemory` cut row-wise across the workers of the default process group
    (``adv.memory=sharded``): worker ``r`` of ``W`` holds rows ``[r·s, (r+1)·s)`` of each δ
    table, ``s = ⌈rows / W⌉``. Every call of `recall` and `step` is a collective: the workers
    make them in lockstep, as they make their torchrec lookups. A lookup costs three
    all-to-alls (how many ids, the ids, their rows back) and a step one (the moved rows, back
    the way their ids came)."""

    def __init__(self, attack: Attack) -> None:
        super().__init__(attack)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # name -> the rows of this shard the last lookup served (local ids, in the order
        # received), and how many ids this worker sent each worker and received from each
        self._served: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    def _keep(self, lookup: _Lookup) -> None:
        # the owners wait for this worker's rows (a collective): they go back as fetched, and
        # count in the mean of the row's moves like any worker's
        if lookup.ids is not None:
            self._store(lookup.name, lookup.ids, lookup.delta.detach())

    def _new_table(self, rows: int, like: Tensor) -> Tensor:
        return like.new_zeros(-(-rows // self.world), like.shape[-1])

    def _covers(self, table: Tensor, ids: Tensor) -> bool:
        # a shard is no whole table: every lookup goes to the rows' owners (but a worker alone)
        return self.world == 1 and super()._covers(table, ids)

    def _fetch(self, name: str, ids: Tensor) -> Tensor:
        shard = self.tables[name]
        # sorted ids: each owner's are contiguous, in rank order
        send = torch.bincount(ids // len(shard), minlength=self.world)
        ones = torch.ones_like(send)
        recv = self._exchange(send, ones, ones)  # (W,) how many ids each worker asks here
        asked = self._exchange(ids, send, recv) - self.rank * len(shard)
        self._served[name] = (asked, send, recv)
        return self._exchange(shard.index_select(0, asked), recv, send)  # in the order sent

    def _store(self, name: str, ids: Tensor, rows: Tensor) -> None:
        asked, send, recv = self._served.pop(name)  # ``ids`` are the last lookup's
        got = self._exchange(rows, send, recv)
        # several workers may have moved one row this step: it keeps the mean of their moves
        local, inverse = torch.unique(asked, return_inverse=True)
        sums = got.new_zeros(len(local), got.shape[-1]).index_add_(0, inverse, got)
        counts = torch.bincount(inverse, minlength=len(local)).unsqueeze(1)
        self.tables[name].index_copy_(0, local, sums / counts)

    def _exchange(self, x: Tensor, send: Tensor, recv: Tensor) -> Tensor:
        """All-to-all of ``x`` (n, ...): its first ``send[0]`` rows to worker 0, the next
        ``send[1]`` to worker 1, ...; returns what the workers sent this one, ``recv[r]`` rows
        from worker ``r``, in rank order."""
        if self.world == 1:
            return x
        out = x.new_empty(int(recv.sum()), *x.shape[1:])
        dist.all_to_all_single(out, x.contiguous(), recv.tolist(), send.tolist())
        return out
