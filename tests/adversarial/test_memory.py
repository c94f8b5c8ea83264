"""`DeltaMemory` (``adv.schedule=accumulate``): a row's δ is shared by its lookups, and its ball
is the row's own with a relative or adaptive ε; `ShardedDeltaMemory` (``adv.memory=sharded``)
on 2 processes holds half the rows each and keeps what one memory for both workers would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from advrec.adversarial.memory import DeltaMemory, ShardedDeltaMemory
from advrec.adversarial.perturb import Attack

EPS = 0.5


def _one_step(memory: DeltaMemory, x: torch.Tensor, ids: torch.Tensor, rows: int,
              scale: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """One lookup of ``ids`` (their rows ``x``) and one step along a fixed loss's gradient
    (weights drawn from ``seed``); returns the memory's table."""
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    delta = memory.recall({"user": x}, {"user": ("user", ids, rows)},
                          None if scale is None else {"user": scale})
    ((x + delta["user"]) * weights).sum().backward()
    memory.step()
    return memory.tables["user"]


def test_a_row_looked_up_twice_has_one_delta_in_the_mean_of_their_balls() -> None:
    # adaptive ε: row 0 is looked up with scales 0.5 and 1.5, row 1 with 0.5; one FGM step
    # from zero (size ε times the row's scale) reaches the ball's surface
    x = torch.randn(3, 4)
    x[1] = x[0]  # the same row, looked up twice
    table = _one_step(DeltaMemory(Attack("fgm", EPS, step_size=EPS)), x,
                      torch.tensor([0, 0, 1]), 5, torch.tensor([[0.5], [1.5], [0.5]]))
    norms = table.norm(dim=-1)
    assert norms.tolist() == pytest.approx([EPS * 1.0, EPS * 0.5, 0.0, 0.0, 0.0], abs=1e-6)


def test_a_relative_eps_gives_each_row_a_ball_of_its_norm() -> None:
    x = torch.tensor([[3.0, 4.0], [0.6, 0.8]])
    table = _one_step(DeltaMemory(Attack("fgm", EPS, step_size=EPS, relative=True)), x,
                      torch.tensor([2, 0]), 4)
    assert table.norm(dim=-1).tolist() == pytest.approx([EPS * 1.0, 0.0, EPS * 5.0, 0.0],
                                                        abs=1e-6)


def test_linf_steps_each_coordinate_by_the_sign() -> None:
    # PGD in L∞: a step of α·sign(g), cut to the box of ε
    x = torch.randn(2, 3)
    table = _one_step(DeltaMemory(Attack("pgd", EPS, step_size=0.2, norm="linf")), x,
                      torch.tensor([0, 1]), 2)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(table, 0.2 * weights.sign())


ROWS = 5  # 2 workers: rows 0-2 on worker 0, rows 3 and 4 on worker 1
LOOKUPS = [[torch.tensor([0, 4, 4]), torch.tensor([4, 1])],  # step 1: worker 0, worker 1
           [torch.tensor([3, 1]), torch.tensor([1, 2, 0])]]  # step 2
"""Each step's ids per worker: row 4 is moved by both workers in step 1, rows 0 and 1 in
step 2, and each worker looks up rows the other holds."""


def _sharded_steps(rank: int, world: int, init: str, out: str) -> None:
    """Worker: the `LOOKUPS` steps of a sharded memory; saves its shard."""
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    memory = ShardedDeltaMemory(Attack("pgd", EPS, step_size=0.3))
    for step, lookups in enumerate(LOOKUPS):
        ids = lookups[rank]
        _one_step(memory, torch.ones(len(ids), 4), ids, ROWS, seed=10 * step + rank)
    torch.save(memory.state_dict(), Path(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_a_sharded_memory_holds_a_share_and_keeps_the_mean_of_the_workers_moves(
        tmp_path: Path) -> None:
    mp.spawn(_sharded_steps, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    shards = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["user"] for r in (0, 1)]
    assert [len(s) for s in shards] == [3, 3]  # ⌈5 / 2⌉ rows each, the last one padding
    # what one memory for both workers holds: each step, each worker moves its rows from the
    # same δ (a whole memory of its own, a copy), and a row both moved takes the mean
    expected = torch.zeros(ROWS, 4)
    for step, lookups in enumerate(LOOKUPS):
        moved, counts = torch.zeros(ROWS, 4), torch.zeros(ROWS, 1)
        for rank, ids in enumerate(lookups):
            own = DeltaMemory(Attack("pgd", EPS, step_size=0.3))
            own.tables = {"user": expected.clone()}
            table = _one_step(own, torch.ones(len(ids), 4), ids, ROWS, seed=10 * step + rank)
            touched = ids.unique()
            moved[touched] += table[touched]
            counts[touched] += 1
        expected = torch.where(counts > 0, moved / counts.clamp(min=1), expected)
    assert (expected[[0, 1, 4]].norm(dim=-1) > 0).all()
    torch.testing.assert_close(torch.cat(shards)[:ROWS], expected)
    assert shards[1][-1].abs().sum() == 0  # the padding row was never looked up
