"""Warm start (``train.init_from``, `advrec train --init-from RUN`): a run starts from another
run's best weights instead of its own initialisation, on a dataset that may hold new users,
items and feature values (yesterday's model continued on today's log).

Rows are matched by what they stand for, not by their index, since each dataset numbers its
own ids (`Recommender.table_rows`):
- a table of user or item ids: by raw id (``users.parquet`` / ``items.parquet`` of both runs'
  datasets); with hashed ids (``data.user_buckets``) a row is its hash bucket, so row for row;
- a categorical or multi-valued feature field's table: by value (`Field.vocab`); a numeric
  field's (its equal-frequency bins): bin for bin;
- a row of something the earlier run never saw keeps this run's initialisation, drawn as any
  table's (the new run's model is built as usual first);
- every other weight (MLPs, attention, positions) is copied as it is: it must have the same
  shape, so the model keys that shape it must be the same (`check_init`).

The new state is built whole, on a dense twin of the model, and loaded into the model as it
trains: its dense tables, or each worker's shards of torchrec's tables (`load_whole`), so every
worker builds the whole tables once at start-up.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor, nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from advrec import io
from advrec.config import RunConfig
from advrec.data.dataset import Dataset, is_prepared, load_dataset, read_part
from advrec.data.features import Field
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.models.base import Recommender

KEY = "train.init_from"
FREE_MODEL_KEYS = frozenset({"embeddings", "sharding", "dropout", "init", "init_std",
                             "temperature", "logq"})
"""Model keys a warm start may change: they shape no weight (the rest must be the run's)."""


def best_model(run: str) -> str:
    """The URL of a finished run's best model (`advrec train` writes it last but one)."""
    return io.join(run, "checkpoint", "model.pt")


Matched = dict[str, dict[str, int]]
"""Per side (``user``, ``item``): how many of the new dataset's ids the run ``known`` (rows
carried over) and how many are ``new`` (rows freshly drawn)."""


def check_init(cfg: RunConfig, dataset: str) -> tuple[RunConfig, Matched]:
    """Fail now, before any work, when ``train.init_from`` cannot start ``cfg`` on the prepared
    ``dataset``: not a finished run, a model of another kind or shape, a dataset of its that is
    gone (its raw ids match the rows), or ids hashed otherwise. Returns ``cfg`` with the run
    made absolute (Ray workers do not share this working directory), and how many of the
    dataset's users and items the run knows."""
    from advrec.train.driver import read_run  # the driver imports this module

    run = io.absolute(cfg.train.init_from or "")
    where = f"{KEY}={cfg.train.init_from}"
    old, old_dataset = read_run(run)
    if not io.exists(best_model(run)):
        raise AdvrecError(f"{where}: the run has no best model yet (checkpoint/model.pt): "
                          "finish it first")
    if old.model.name != cfg.model.name:
        raise AdvrecError(f"{where}: a {old.model.name} run; this config trains model.name="
                          f"{cfg.model.name}")
    then, now = old.model.model_dump(mode="json"), cfg.model.model_dump(mode="json")
    for key in sorted(set(then) - FREE_MODEL_KEYS):
        if then[key] != now.get(key):
            raise AdvrecError(f"{where}: its model.{key} is {then[key]!r}, this config's "
                              f"{now.get(key)!r}; a warm start keeps the shape of every weight")
    if not is_prepared(old_dataset):
        raise AdvrecError(f"{where}: its dataset {old_dataset} is gone (its raw ids match the "
                          "rows); prepare it again there")
    metas = [io.read_json(io.join(url, "meta.json")) for url in (dataset, old_dataset)]
    for side in ("user", "item"):
        buckets = [m.get("hashing", {}).get(side, {}).get("buckets") for m in metas]
        if buckets[0] != buckets[1]:
            said = ["not hashed" if b is None else f"hashed into {b} rows" for b in buckets]
            raise AdvrecError(f"{where}: its {side} ids are {said[1]}, this dataset's "
                              f"{said[0]}; warm start matches them alike or not at all")
    matched = {}
    for side in ("user", "item"):
        known = len(_match_ids(dataset, metas[0], old_dataset, metas[1], side)[0])
        matched[side] = {"known": known, "new": metas[0][f"num_{side}s"] - known}
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"init_from": run})}), \
        matched


def warm_state(cfg: RunConfig, data: Dataset) -> dict[str, Tensor]:
    """The whole state dict a model of ``cfg`` for ``data`` starts from: this run's
    initialisation (seeded by ``train.seed``, as `build_model` draws it), overwritten by the
    best weights of the run ``train.init_from`` wherever they stand for the same thing (see
    the module), tables dense and whole, (rows, d) each."""
    from advrec.train.checkpoint import load_model  # loop -> warm -> checkpoint: no cycle
    from advrec.train.driver import read_run

    run = cfg.train.init_from or ""
    old_cfg, old_dataset = read_run(run)
    old_data = load_dataset(old_dataset, train_pairs_only=True)
    old_model, _ = load_model(best_model(run), old_cfg, old_data)
    dense = cfg.model.model_copy(update={"embeddings": "dense", "sharding": {}})
    torch.manual_seed(cfg.train.seed)  # the same draw as the model that trains (`_build`)
    fresh = build_model(cfg.model_copy(update={"model": dense}), data)
    state = {k: v.clone() for k, v in fresh.state_dict().items()}
    old_state, old_rows = old_model.state_dict(), old_model.table_rows()
    ids = {side: _match_ids(data.url, data.meta, old_dataset, old_data.meta, side)
           for side in ("user", "item")}
    keys = table_keys(fresh)
    for key, target in state.items():
        if key not in old_state:  # a feature field this dataset has and the other had not
            continue
        saved = old_state[key]
        if key in keys:
            name = keys[key]
            side, field = fresh.table_rows()[name]
            new, old = (ids[side] if field is None
                        else _match_values(field, old_rows.get(name, (side, None))[1]))
            target[new] = saved[old].to(target.dtype)
        elif saved.shape == target.shape:
            target.copy_(saved)
        else:
            raise AdvrecError(f"{KEY}={run}: '{key}' is {list(saved.shape)} in its model, "
                              f"{list(target.shape)} in this one (its data has other feature "
                              "fields?); a warm start keeps the shape of every weight")
    return state


def table_keys(model: Recommender) -> dict[str, str]:
    """The state-dict key of each of ``model``'s dense tables -> its `Recommender.tables` key."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(table.weight)]: name for name, table in model.tables().items()}


def _match_ids(url: str, meta: dict[str, Any], old_url: str, old_meta: dict[str, Any],
               side: str) -> tuple[Tensor, Tensor]:
    """(ids of the dataset at ``url``, ids of the one at ``old_url``) of the same raw ``side``
    ids, (M,) each; with hashed ids (`check_init`: both hashed alike) a row is its bucket,
    matched row for row. ``meta``: each dataset's meta.json."""
    if side in meta.get("hashing", {}):
        shared = torch.arange(min(meta[f"num_{side}s"], old_meta[f"num_{side}s"]))
        return shared, shared
    return _matches(_raw_ids(url, side), _raw_ids(old_url, side))


def _raw_ids(url: str, side: str) -> pa.Array:
    """The raw id, as text, of each index 0, 1, ... of ``side`` in the dataset at ``url``."""
    vocab = read_part(url, f"{side}s.parquet", ["index", "raw_id"], what=f"a {side} vocabulary")
    order = pc.sort_indices(vocab, sort_keys=[("index", "ascending")])
    return vocab["raw_id"].take(order).combine_chunks().cast(pa.string())


def _match_values(field: Field, old: Field | None) -> tuple[Tensor, Tensor]:
    """(rows of ``field``, rows of the old run's field of that name) standing for the same
    value; none when the old run had no such field. Row 0 (missing) is row 0 in both."""
    if old is None:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    if field.vocab is None or old.vocab is None:  # numeric bins: bin for bin
        shared = torch.arange(min(field.vocab_size, old.vocab_size))
        return shared, shared
    new, then = _matches(pa.array(field.vocab, pa.string()), pa.array(old.vocab, pa.string()))
    zero = torch.zeros(1, dtype=torch.long)
    return torch.cat([zero, new + 1]), torch.cat([zero, then + 1])


def _matches(new: pa.Array, old: pa.Array) -> tuple[Tensor, Tensor]:
    """(positions in ``new``, positions in ``old``) of the values both hold, (M,) each."""
    where = pc.index_in(new, value_set=old)
    found = torch.from_numpy(pc.is_valid(where).to_numpy(zero_copy_only=False))
    positions = torch.arange(len(new))[found]
    return positions, torch.from_numpy(where.drop_null().to_numpy().astype("int64"))


def load_whole(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load the whole tensors ``state`` into ``model``: a dense weight takes its tensor, a table
    sharded by torchrec (a ``ShardedTensor``) the slices of this worker's shards."""
    with torch.no_grad():
        for key, target in model.state_dict().items():
            whole = state[key]
            if isinstance(target, ShardedTensor):
                for shard in target.local_shards():
                    meta = shard.metadata
                    index = tuple(slice(o, o + s)
                                  for o, s in zip(meta.shard_offsets, meta.shard_sizes))
                    shard.tensor.copy_(whole[index])
            else:
                target.copy_(whole)
