"""Tables sharded across the workers with torchrec (``model.embeddings=torchrec``).

`shard` wraps the adversarial objective in torchrec's ``DistributedModelParallel``: the planner
places each table of the model (its `TorchrecEmbedding` tables, built on the meta device, so no
worker ever allocates a whole table) on the workers, table-wise, column-wise, ... as
``model.sharding`` constrains it, and every other parameter is data-parallel (DDP). Each table
is updated by FBGEMM's fused optimizer inside the backward, once per step with the step's whole
gradient: the objective is one forward and one backward (clean and adversarial terms together),
and the attack differentiates the looked-up rows only, never reaching the tables (torchrec
issue #2729 warns about fused updates with two backward passes).

Every lookup is a collective (an all-to-all of ids and rows), so every worker must look up as
many times as the others: training batches are equal in number (`advrec.train.tasks`) and
evaluation runs its chunks in lockstep (`advrec.shards.lockstep_chunks`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from advrec.config import RunConfig
from advrec.errors import AdvrecError
from advrec.models.base import Recommender

# first: it imports torchrec quietly, or says how to install it
from advrec.models.torchrec_tables import TorchrecEmbedding, quiet_logs
from advrec.ports import free_ports
from advrec.train.optim import hyperparameters

# isort: split
from torchrec import optim as trec_optim
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

TABLE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": trec_optim.RowWiseAdagrad,  # one accumulator per row: the large-table one
    "adam": torch.optim.Adam,
}
"""`RunConfig.table_optimizer` -> the class torchrec maps onto FBGEMM's fused optimizer."""


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """A process group for torchrec: Ray Train's, or one of this process alone (training in
    this process, ``scaling.num_workers=0``), destroyed afterwards."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_ports(1)[0]}",
                            rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def sharded_tables(model: Recommender) -> dict[str, TorchrecEmbedding]:
    """The model's torchrec tables (``model.embeddings=torchrec``: all its tables but those
    too narrow for FBGEMM, `advrec.models.torchrec_tables.torchrec_tables`)."""
    return {k: t for k, t in model.tables().items() if isinstance(t, TorchrecEmbedding)}


def constraint(kind: str, width: int, world: int) -> ParameterConstraints:
    """The planner's constraint for a table pinned to sharding ``kind``. Column-wise, torchrec
    cuts blocks of 128 columns, so a 64-wide table would stay whole on one worker: cut it into
    one block per worker instead, where the blocks come out as FBGEMM's multiples of 4."""
    block = width // world
    if kind in ("column_wise", "table_column_wise") and width % world == 0 and block % 4 == 0:
        return ParameterConstraints(sharding_types=[kind], min_partition=block)
    return ParameterConstraints(sharding_types=[kind])


def shard(objective: nn.Module, model: Recommender, cfg: RunConfig,
          device: torch.device) -> DistributedModelParallel:
    """``objective`` (whose ``model`` has torchrec tables on the meta device) in
    DistributedModelParallel over the current process group, each table given the fused
    ``train.table_optimizer``. Raises when ``model.sharding`` names no table of the model."""
    tables = sharded_tables(model)
    for name in cfg.model.sharding:
        if name in tables:
            continue
        if name in model.tables():
            raise AdvrecError(f"model.sharding: '{name}' is {model.tables()[name].embedding_dim} "
                              "wide, which FBGEMM cannot shard, so it stays dense (sharded "
                              f"tables: {', '.join(tables)})")
        raise AdvrecError(f"model.sharding: '{name}' is no table of model.name="
                          f"{cfg.model.name} (its tables: {', '.join(model.tables())})")
    kind = cfg.table_optimizer()
    for table in tables.values():
        apply_optimizer_in_backward(TABLE_OPTIMIZERS[kind], table.collection.parameters(),
                                    hyperparameters(cfg.train, kind, decay=False))
    world = dist.get_world_size()
    constraints = {name: constraint(kind, tables[name].embedding_dim, world)
                   for name, kind in cfg.model.sharding.items()}
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=world, local_world_size=world),
        kernel_config=KernelConfig(compute_device=device.type))
    # 15 % of each worker's memory kept for the dense part and activations, a fixed share:
    # torchrec's heuristic estimate warns that it overestimates
    planner = EmbeddingShardingPlanner(
        topology=topology, constraints=constraints,
        storage_reservation=FixedPercentageStorageReservation(0.15))
    sharders = [EmbeddingCollectionSharder()]
    # torchrec asks torch.fx whether it is tracing, which warns on every process, and its state
    # dicts hold ShardedTensors, which torch warns it will replace (by DTensor) on every copy
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", "Please use DTensor instead", FutureWarning)
    with quiet_logs():  # the planner's estimates, each table kernel's set-up
        plan = planner.collective_plan(objective, sharders, dist.GroupMember.WORLD)
        # static_graph off: a clean warm-up epoch and an adversarial one differ in their graphs
        return DistributedModelParallel(
            objective, device=device, plan=plan, sharders=sharders,
            data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False))
