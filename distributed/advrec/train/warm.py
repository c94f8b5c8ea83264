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

from dataclasses import dataclass
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
from advrec.train.checkpoint import load_checkpoint, load_model, model_url, train_state_url
from advrec.train.optim import Optimizer, SplitOptimizer, make_optimizer

KEY = "train.init_from"
FREE_MODEL_KEYS = frozenset({"embeddings", "sharding", "dropout", "init", "init_std",
                             "temperature", "logq"})
"""Model keys a warm start may change: they shape no weight (the rest must be the run's)."""


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
    if not (io.exists(model_url(run)) and io.exists(io.join(run, "metrics.json"))):
        raise AdvrecError(f"{where}: the run has not finished (no checkpoint/model.pt and "
                          "metrics.json); finish it first")
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
    if cfg.train.init_optimizer:
        _check_optimizer(run, old, cfg)
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


def _check_optimizer(run: str, old: RunConfig, cfg: RunConfig) -> None:
    """Whether ``train.init_optimizer`` can carry the run's optimizer state over to ``cfg``."""
    where = f"train.init_optimizer (from {run})"
    for c, whose in ((old, "its"), (cfg, "this run's")):
        if c.model.embeddings == "torchrec":
            raise AdvrecError(f"{where}: {whose} tables are torchrec's, whose fused optimizer "
                              "state does not carry over; warm-start the weights alone")
    then, now = ((c.train.optimizer, c.train.sparse_embeddings) for c in (old, cfg))
    if then != now:
        raise AdvrecError(f"{where}: it trained with train.optimizer={then[0]} "
                          f"(sparse_embeddings={then[1]}), this run with {now[0]} "
                          f"(sparse_embeddings={now[1]}); their states do not carry over")
    best = io.read_json(io.join(run, "metrics.json"))["best_epoch"]
    if not io.exists(train_state_url(run, best)):
        raise AdvrecError(f"{where}: the run kept no training state of its best epoch {best} "
                          "(train.checkpoint_every=0?), so it has no optimizer state to carry")


@dataclass(frozen=True)
class _Earlier:
    """The run a warm start begins from: its config, dataset and best model (dense)."""

    run: str
    cfg: RunConfig
    data: Dataset
    model: Recommender

    @classmethod
    def load(cls, run: str) -> _Earlier:
        from advrec.train.driver import read_run  # the driver imports this module

        cfg, dataset = read_run(run)
        data = load_dataset(dataset, train_pairs_only=True)
        return cls(run, cfg, data, load_model(model_url(run), cfg, data)[0])


RowMap = tuple[Tensor, Tensor] | None
"""How a weight carries over: ``(new rows, old rows)`` of a table (M,) each, or ``None`` for a
dense weight, copied whole."""


def warm_state(cfg: RunConfig, data: Dataset) -> dict[str, Tensor]:
    """The whole state dict a model of ``cfg`` for ``data`` starts from: this run's
    initialisation (seeded by ``train.seed``, as `build_model` draws it), overwritten by the
    best weights of the run ``train.init_from`` wherever they stand for the same thing (see
    the module), tables dense and whole, (rows, d) each."""
    return _warm(cfg, data, _Earlier.load(cfg.train.init_from or ""))[0]


def warm_model(cfg: RunConfig, data: Dataset) -> Recommender:
    """A dense model of ``cfg`` for ``data`` holding `warm_state`: what the run
    ``train.init_from`` learnt, in ``data``'s numbering (a stream evaluates the earlier
    window's model on the next window this way), in eval mode."""
    model = _dense_model(cfg, data)
    model.load_state_dict(warm_state(cfg, data))
    return model.eval()


def _dense_model(cfg: RunConfig, data: Dataset) -> Recommender:
    """A model of ``cfg`` for ``data`` with dense tables, whatever ``model.embeddings`` says."""
    dense = cfg.model.model_copy(update={"embeddings": "dense", "sharding": {}})
    return build_model(cfg.model_copy(update={"model": dense}), data)


def _warm(cfg: RunConfig, data: Dataset,
          earlier: _Earlier) -> tuple[dict[str, Tensor], dict[str, RowMap]]:
    """`warm_state`, and how each weight it carried over maps (a weight absent from the map,
    a feature field the earlier run had not, keeps its initialisation)."""
    torch.manual_seed(cfg.train.seed)  # the same draw as the model that trains (`_build`)
    fresh = _dense_model(cfg, data)
    state = {k: v.clone() for k, v in fresh.state_dict().items()}
    old_state, old_rows = earlier.model.state_dict(), earlier.model.table_rows()
    ids = {side: _match_ids(data.url, data.meta, earlier.data.url, earlier.data.meta, side)
           for side in ("user", "item")}
    keys, rows, maps = table_keys(fresh), fresh.table_rows(), {}
    for key, target in state.items():
        if key not in old_state:  # a feature field this dataset has and the other had not
            continue
        saved = old_state[key]
        if key in keys:
            name = keys[key]
            side, field = rows[name]
            maps[key] = (ids[side] if field is None
                         else _match_values(field, old_rows.get(name, (side, None))[1]))
        elif saved.shape == target.shape:
            maps[key] = None
        else:
            raise AdvrecError(f"{KEY}={earlier.run}: '{key}' is {list(saved.shape)} in its "
                              f"model, {list(target.shape)} in this one (its data has other "
                              "feature fields?); a warm start keeps the shape of every weight")
        _carry(target, saved, maps[key])
    return state, maps


def _carry(target: Tensor, saved: Tensor, rows: RowMap) -> None:
    """Copy into ``target`` what ``saved`` holds of it: the mapped rows, or all of it."""
    if rows is None:
        target.copy_(saved)
    else:
        target[rows[0]] = saved[rows[1]].to(target.dtype)


def warm_start(cfg: RunConfig, data: Dataset, model: Recommender, optimizer: Optimizer) -> None:
    """Begin training ``model`` (as it trains: dense or sharded) from ``train.init_from``'s best
    weights, and with ``train.init_optimizer`` its ``optimizer`` from the earlier run's
    optimizer state of that epoch."""
    earlier = _Earlier.load(cfg.train.init_from or "")
    state, maps = _warm(cfg, data, earlier)
    load_whole(model, state)
    if cfg.train.init_optimizer:
        optimizer.load_state_dict(_optimizer_state(model, optimizer, earlier, maps))


def _optimizer_state(model: Recommender, optimizer: Optimizer, earlier: _Earlier,
                     maps: dict[str, RowMap]) -> dict[str, Any]:
    """``optimizer``'s state dict with the earlier run's per-weight state (Adam's moments, its
    step count, Adagrad's sums, momentum) of its best epoch, carried as the weights are (an id
    new to this run starts at zero, as a fresh optimizer's rows do); this run's
    hyperparameters. The parameters are matched by name in each optimizer's order
    (`make_optimizer`, rebuilt for the earlier model)."""
    best = io.read_json(io.join(earlier.run, "metrics.json"))["best_epoch"]  # `check_init`d
    saved = load_checkpoint(train_state_url(earlier.run, best))["optimizer"]
    then = make_optimizer(earlier.model, earlier.cfg.train)
    parts = optimizer.parts if isinstance(optimizer, SplitOptimizer) else [optimizer]
    old_parts = then.parts if isinstance(then, SplitOptimizer) else [then]
    saved_parts = saved["parts"] if isinstance(then, SplitOptimizer) else [saved]
    names = {id(p): n for n, p in model.named_parameters()}
    old_names = {id(p): n for n, p in earlier.model.named_parameters()}
    out = []
    for part, old_part, saved_part in zip(parts, old_parts, saved_parts, strict=True):
        old_params = [p for group in old_part.param_groups for p in group["params"]]
        old_index = {old_names[id(p)]: (i, p) for i, p in enumerate(old_params)}
        state: dict[int, dict[str, Any]] = {}
        for i, param in enumerate(p for group in part.param_groups for p in group["params"]):
            name = names[id(param)]
            if name not in maps or name not in old_index or old_index[name][0] not in \
                    saved_part["state"]:
                continue
            j, old_param = old_index[name]
            state[i] = {}
            for key, value in saved_part["state"][j].items():
                if torch.is_tensor(value) and value.shape == old_param.shape:
                    # per weight: carried as the weight is
                    state[i][key] = torch.zeros_like(param, dtype=value.dtype)
                    _carry(state[i][key], value, maps[name])
                else:  # Adam's step count (SparseAdam's an int)
                    state[i][key] = value.clone() if torch.is_tensor(value) else value
        out.append({"state": state, "param_groups": part.state_dict()["param_groups"]})
    return {"parts": out} if isinstance(optimizer, SplitOptimizer) else out[0]


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
