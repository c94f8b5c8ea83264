"""Work split across the workers of a distributed run, and its results combined.

A shard is ``(rank, world)``: worker ``rank`` of ``world`` takes every world-th row, so each
shard sees the whole log's mix and shard sizes differ by at most one. ``(0, 1)`` is the whole.
Combining uses ``torch.distributed`` (the process group Ray Train sets up: gloo on CPU, NCCL on
GPU, which communicates CUDA tensors only); with one worker nothing is communicated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

Shard = tuple[int, int]
WHOLE: Shard = (0, 1)


def shard_rows(n: int, shard: Shard) -> Tensor:
    """The indices of ``shard``'s rows among ``n`` (ceil or floor of n / world of them)."""
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard rank {rank} is not in [0, {world})")
    return torch.arange(rank, max(rank, n), world)  # none when rank >= n (fewer rows than workers)


def lockstep_chunks(rows: Tensor, n: int, size: int, shard: Shard) -> Iterator[tuple[Tensor, int]]:
    """This shard's ``rows`` (its `shard_rows` of ``n``) in chunks of ``size``, as many chunks
    as the largest shard has, each with the count of its real rows: a chunk past the shard's end
    holds one stand-in row (its first, or row 0) whose results the caller drops. Lookups in
    sharded tables are collective (`advrec.train.sharding`): every worker must call the model
    as often as the others."""
    most = -(-n // shard[1])
    for start in range(0, most, size):
        chunk = rows[start:start + size]
        if chunk.numel():
            yield chunk, chunk.numel()
        else:
            yield (rows[:1] if rows.numel() else rows.new_zeros(1)), 0


def _on_wire(t: Tensor) -> Tensor:
    """``t`` where the process group communicates: the current GPU under NCCL, else as is."""
    return t.cuda() if dist.get_backend() == "nccl" else t


def sum_over_shards(sums: dict[str, float], count: int, shard: Shard) -> tuple[dict[str, float], int]:
    """Every shard's ``sums`` and ``count`` added up (float64, so means match one worker's)."""
    if shard[1] == 1:
        return sums, count
    names = sorted(sums)
    # a shard with no rows may have no sums yet: every shard lists the same names only after
    # they are exchanged, so exchange them first
    everyone: list[list[str]] = [[] for _ in range(shard[1])]
    dist.all_gather_object(everyone, names)
    names = sorted({n for ns in everyone for n in ns})
    packed = _on_wire(torch.tensor([sums.get(n, 0.0) for n in names] + [float(count)],
                                   dtype=torch.float64))
    dist.all_reduce(packed)
    return dict(zip(names, packed[:-1].tolist())), int(packed[-1])


def sum_tensors_over_shards(tensors: dict[str, Tensor], shard: Shard) -> dict[str, Tensor]:
    """Every shard's ``tensors`` (on the model's device) added up, in place."""
    if shard[1] > 1:
        for t in tensors.values():
            dist.all_reduce(t)
    return tensors


def gather_shards(values: Tensor, n: int, shard: Shard) -> Tensor:
    """The whole (n, ...) from each shard's rows ``values`` (its `shard_rows` of n, in order)."""
    world = shard[1]
    if world == 1:
        return values
    size = -(-n // world)
    padded = _on_wire(values.new_zeros((size, *values.shape[1:])))
    padded[: values.shape[0]] = values
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = values.new_empty((n, *values.shape[1:]))
    for r, part in enumerate(parts):
        rows = shard_rows(n, (r, world))
        out[rows] = part[: rows.numel()].to(out.device)
    return out


def gather_objects(obj: Any, shard: Shard) -> list[Any]:
    """Every shard's picklable ``obj``, in rank order (on every shard)."""
    if shard[1] == 1:
        return [obj]
    everyone: list[Any] = [None] * shard[1]
    dist.all_gather_object(everyone, obj)
    return everyone
