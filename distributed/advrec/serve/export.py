"""A trained run in the forms a serving stack takes (`advrec export`).

The export directory holds:

- ``ranker.pt`` (TorchScript) or ``ranker.pt2`` (``torch.export``): the model from its ranking
  context to the scores of every item, ``forward(**context) -> (B, num_items)``: ``user`` (B,)
  int64 for MF, NeuMF and two-tower (whose user side features it looks up itself), ``seq``
  (B, max_len) int64 for SASRec (the history, left-padded with ``num_items``). Its top K, the
  user's items left out, are `advrec recommend`'s lists;
- ``tables/<name>.parquet``: every embedding table as ``id`` (the raw user or item id, a feature
  field's value, or the row's index) and ``vector`` (list of float32), ready for an ANN index;
- ``users.parquet`` and ``items.parquet``: the id mapping (``index``, ``raw_id``), the run's own;
- ``manifest.json`` (written last): the model's kind and dimension, the inputs, the files, the
  advrec version and the SHA-256 of the run's ``config.yaml``.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any, Literal

import pyarrow as pa
import torch
from torch import Tensor, nn
from torch._dynamo.exc import UserError

from advrec import __version__, io
from advrec.data import load_dataset
from advrec.data.features import Field
from advrec.errors import AdvrecError
from advrec.models.base import Batch, Recommender
from advrec.serve.recommend import check_finished, check_ranking, vocabulary_ids, vocabulary_table
from advrec.train import load_model, read_run
from advrec.train.checkpoint import model_url
from advrec.train.tasks import NEXT, make_task

EXPORT = io.Marker("manifest.json", "advrec_export", "an advrec export")
FORMATS = {"torchscript": "ranker.pt", "export": "ranker.pt2"}


class UserRanker(nn.Module):
    """A user-id model's full ranking: ``user`` (B,) -> (B, num_items) scores."""

    def __init__(self, model: Recommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, user: Tensor) -> Tensor:
        return self.model.rank_scores({"user": user})


class HistoryRanker(UserRanker):
    """A sequential model's full ranking: ``seq`` (B, L) -> (B, num_items) scores."""

    def forward(self, seq: Tensor) -> Tensor:  # type: ignore[override]
        return self.model.rank_scores({"seq": seq})


RANKERS = {"user": UserRanker, "seq": HistoryRanker}
"""The ranker of each kind of context, by its one key."""


def table_ids(side: str, field: Field | None, rows: int, raw: dict[str, pa.Array]) -> pa.Array:
    """The ``id`` column of one table's ``rows`` rows: the raw ids of a side's id table, a
    categorical field's values (row 0: the reserved missing value, ""), else the row's index
    (a numeric field's bin; SASRec's padding row)."""
    if field is None:
        ids = raw[side].slice(0, min(rows, len(raw[side])))
        return pa.concat_arrays([ids, pa.array([str(i) for i in range(len(ids), rows)],
                                              pa.string())])
    if field.vocab is not None and len(field.vocab) + 1 == rows:
        return pa.array(["", *field.vocab], pa.string())
    return pa.array([str(i) for i in range(rows)], pa.string())


def _table(weight: Tensor, ids: pa.Array) -> pa.Table:
    """(rows, d) vectors and their ids as Parquet columns."""
    d = weight.shape[1]
    flat = pa.array(weight.detach().float().contiguous().view(-1).numpy())
    return pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(flat, d)})


def _example(model: Recommender, cfg: Any, data: Any) -> Batch:
    """A ranking context of two users (the batch size the export leaves free)."""
    return make_task(cfg, data).context(torch.arange(min(2, model.num_users)), NEXT)


def _save_ranker(model: Recommender, name: str, example: Batch, fmt: str, fs: Any,
                 path: str) -> None:
    """Trace or export the ranker of ``model`` (``model.name`` ``name``) on ``example`` (one
    key, `RANKERS`) and write it to ``path`` on ``fs``."""
    (key, tensor), = example.items()
    ranker = RANKERS[key](model)
    with fs.open(path, "wb") as f:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                # the trace fixes shapes read from the example (SASRec's scale, NeuMF's chunk):
                # what each means for other batches is in the README, not a warning per export
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(ranker, (tensor,), check_trace=False)
            torch.jit.save(traced, f)
            return
        batch = torch.export.Dim("batch", min=1)
        try:
            program = torch.export.export(ranker, (tensor,), dynamic_shapes=({0: batch},))
        except UserError as exc:
            # NeuMF's generic ranking sizes its item chunks by the batch: no free batch size
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AdvrecError(f"--format export: torch.export cannot export model.name={name}'s "
                              f"ranker with a free batch size ({first}); --format torchscript "
                              "can") from None
        torch.export.save(program, f)


def export_run(run: str, output: str, fmt: Literal["torchscript", "export"] = "torchscript"
               ) -> dict[str, Any]:
    """Write the export of the run at ``run`` to the directory ``output``; returns the
    manifest."""
    cfg, dataset = read_run(run)
    check_ranking(cfg, "advrec export")
    check_finished(run)
    io.check_output(output, EXPORT, [run])
    data = load_dataset(dataset)
    model, _ = load_model(model_url(run), cfg, data)
    model.eval()
    example = _example(model, cfg, data)
    vocab = {side: vocabulary_table(dataset, side) for side in ("user", "item")}
    raw = {side: vocabulary_ids(table) for side, table in vocab.items()}
    config = io.read_text(io.join(run, "config.yaml"))
    tables = {}
    with io.atomic_dir(output, EXPORT) as (fs, tmp), torch.no_grad():
        _save_ranker(model, cfg.model.name, example, fmt, fs, f"{tmp}/{FORMATS[fmt]}")
        fs.makedirs(f"{tmp}/tables", exist_ok=True)
        for name, table in model.tables().items():
            side, field = model.table_rows()[name]
            weight = table(torch.arange(model_rows(table)))
            ids = table_ids(side, field, weight.shape[0], raw)
            io.write_parquet(fs, f"{tmp}/tables/{name}.parquet", _table(weight, ids))
            tables[name] = {"file": f"tables/{name}.parquet", "rows": weight.shape[0],
                            "dim": weight.shape[1], "side": side,
                            "field": None if field is None else field.name}
        for side, table in vocab.items():
            io.write_parquet(fs, f"{tmp}/{side}s.parquet", table)
        manifest = {
            EXPORT.key: 1, "advrec": __version__, "format": fmt, "ranker": FORMATS[fmt],
            "model": cfg.model.name, "kind": cfg.kind, "dim": cfg.model.dim,
            "num_users": model.num_users, "num_items": model.num_items,
            "inputs": {k: {"dtype": str(v.dtype).removeprefix("torch."),
                           "shape": ["batch", *v.shape[1:]]} for k, v in example.items()},
            "output": ["batch", model.num_items],
            "padding_item": model.num_items if "seq" in example else None,
            "tables": tables, "users": "users.parquet", "items": "items.parquet",
            "config_sha256": hashlib.sha256(config.encode()).hexdigest(), "run": io.absolute(run),
        }
        io.write_json(fs, f"{tmp}/{EXPORT.file}", manifest)
    return manifest


def model_rows(table: nn.Module) -> int:
    """How many rows an embedding table holds."""
    return int(table.num_embeddings)
