"""The training state: early stopping (the best epoch, its weights, patience) and the whole
state saved every ``train.checkpoint_every`` epochs, from which a stopped run or a restarted
worker group continues exactly (`advrec.train.checkpoint` writes and reads the files)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from advrec.adversarial.memory import DeltaMemory
from advrec.shards import gather_objects
from advrec.train.checkpoint import (
    best_url,
    load_sharded,
    prune_best,
    save_sharded,
    save_train_state,
    sharded_dir,
    train_state_url,
)
from advrec.train.optim import Optimizer


@dataclass
class EarlyStopping:
    """The best epoch so far by the monitored valid metric, its weights, and evaluations (not
    epochs: `TrainConfig.eval_every`) since it improved.

    ``spill``: (run directory, rank) of a run with sharded tables, whose best weights go to
    ``run/best/epoch-N/`` (every worker its shards) instead of a second copy in memory: tables
    too large for one worker should not be held twice. The directory a training state refers
    to is kept until a later state refers to another (`save_state`), so a resumed run finds it.
    """

    higher_is_better: bool
    value: float | None = None
    epoch: int = -1
    valid: dict[str, float] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    stale: int = 0
    spill: tuple[str, int] | None = None
    saved: int = -1  # spilled: the best epoch the latest training state refers to

    def update(self, epoch: int, valid: dict[str, float], value: float | None,
               model: nn.Module) -> None:
        """Keep the epoch if its monitored ``value`` is the best so far; a ``value`` of None (a
        dataset without validation rows: a stream's window) keeps every evaluated epoch, so the
        last one is the run's."""
        if value is None or self.value is None or (value > self.value if self.higher_is_better
                                                   else value < self.value):
            self.value, self.epoch, self.valid, self.stale = value, epoch, valid, 0
            self.keep(model)
        else:
            self.stale += 1

    def keep(self, model: nn.Module) -> None:
        """Keep the model's weights as the best epoch's."""
        if self.spill is None:
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return
        run, rank = self.spill
        save_sharded(best_url(run, self.epoch), {"model": model.state_dict()})
        if rank == 0:
            prune_best(run, {self.epoch, self.saved})

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights into the model."""
        if self.spill is None:
            model.load_state_dict(self.weights)
            return
        state = model.state_dict()
        load_sharded(best_url(self.spill[0], self.epoch), {"model": state})
        model.load_state_dict(state)

    def restart(self) -> None:
        """Forget the best so far (the adversarial phase starts after a clean warm-up)."""
        self.value, self.stale = None, 0

    def state_dict(self) -> dict[str, Any]:
        """Everything but the direction and where weights spill, which the run gives (for a
        checkpoint)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("higher_is_better", "spill")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def save_state(output: str, model: nn.Module, optimizer: Optimizer,
               best: EarlyStopping, history: list[dict[str, Any]], shard: tuple[int, int],
               tables: torch.optim.Optimizer | None = None,
               memory: DeltaMemory | None = None) -> None:
    """Rank 0 saves the training state after the last epoch of ``history``, with every
    worker's torch random state (dropout's; each continues its own) and δ memory
    (``adv.schedule=accumulate``), keeping the best epoch's state too. Sampling needs none:
    each epoch seeds its own (`epoch_generator`).

    With sharded tables (their fused optimizer ``tables``), every worker saves its shards of
    the model and of the tables' optimizer state (the best epoch's weights are spilled
    already, `EarlyStopping`)."""
    rng = {"torch": torch.get_rng_state()}
    ranks = gather_objects(rng, shard)
    state = {
        "epoch": history[-1]["epoch"],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": ranks,
        "early_stopping": best.state_dict(),
        "history": history,
    }
    if memory is not None:
        state["memory"] = gather_objects(memory.state_dict(), shard)
    sharded = None
    if tables is not None:  # tensors only: the file keeps everything else
        sharded = {"model": state.pop("model"), "tables": tables.state_dict()["state"]}
    save_train_state(output, state, keep=best.epoch, sharded=sharded, rank=shard[0])
    if best.spill is not None:  # the state refers to this best epoch's weights from now on
        best.saved = best.epoch
        if shard[0] == 0:
            prune_best(output, {best.epoch})


def load_sharded_state(output: str, state: dict[str, Any], model: nn.Module,
                       tables: torch.optim.Optimizer) -> None:
    """Read the sharded part of a training state (`save_state`) into ``state``, as this
    worker holds it, and the tables' optimizer state into ``tables``."""
    wanted = {"model": model.state_dict(), "tables": tables.state_dict()["state"]}
    load_sharded(sharded_dir(train_state_url(output, state["epoch"])), wanted)
    tables.load_state_dict({**tables.state_dict(), "state": wanted["tables"]})
    state["model"] = wanted["model"]
