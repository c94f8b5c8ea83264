"""`DeltaMemory` (``adv.schedule=accumulate``): a row's δ is shared by its lookups, and its ball
is the row's own with a relative or adaptive ε."""

from __future__ import annotations

import pytest
import torch

from advrec.adversarial.memory import DeltaMemory
from advrec.adversarial.perturb import Attack

EPS = 0.5


def _one_step(memory: DeltaMemory, x: torch.Tensor, ids: torch.Tensor, rows: int,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """One lookup of ``ids`` (their rows ``x``) and one step along a fixed loss's gradient;
    returns the memory's table."""
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
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
