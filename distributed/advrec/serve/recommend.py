"""Top-K recommendations of a trained run (`advrec recommend`): raw user ids in, raw item ids
and scores out, in the run's own id mapping (its prepared dataset's ``users.parquet`` and
``items.parquet``).

Users are ranked in chunks of ``batch_users`` and the catalogue in blocks of ``block_items``:
each block's scores (B, C) are merged into the running top-K, so memory stays B × (C + K) however
large the catalogue. A user's items in every split are excluded unless ``keep_seen``; SASRec
ranks from the user's whole history (`advrec.train.tasks.NEXT`). A raw id the run never saw gets
the K items with the most training interactions, marked ``fallback`` (``unknown="popular"``), or
is an error naming it (``unknown="error"``).

On N Ray Train workers each ranks a contiguous share of the users and writes its part beside the
output; the driver joins the parts in order into one Parquet file, renamed into place only when
whole. Output columns: ``user`` and ``item`` (raw ids, as text), ``rank`` (1 = best), ``score``
(the model's logit; a fallback's is its item's training interactions) and ``fallback``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.train
import torch
from torch import Tensor
from tqdm.auto import tqdm

from advrec import io
from advrec.config import RunConfig, ScalingConfig
from advrec.config.policy import ranking_models
from advrec.data import load_dataset
from advrec.data.dataset import Dataset, read_part
from advrec.devices import to_device, train_device
from advrec.errors import AdvrecError, shown
from advrec.metrics.evaluate import csr_rows
from advrec.models.base import Batch, Recommender
from advrec.train import launch, load_model, read_run
from advrec.train.checkpoint import model_url
from advrec.train.tasks import NEXT, make_task

PARTS = io.Marker("parts.json", "advrec_parts", "the workers' parts of `advrec recommend`")
"""Marks the directory of the workers' parts, the only one `recommend_run` removes."""
MARK = "advrec_recommend"
"""The schema metadata key that marks a file `advrec recommend` wrote (which it may replace)."""
SCHEMA = pa.schema([("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()),
                    ("score", pa.float32()), ("fallback", pa.bool_())], metadata={MARK: "lists"})
UNKNOWN = ("popular", "error")


def vocabulary_table(dataset: str, side: str) -> pa.Table:
    """The dataset's ``side`` (``user`` or ``item``) vocabulary, sorted by index: its
    ``index`` and ``raw_id`` columns."""
    return read_part(dataset, f"{side}s.parquet", ["index", "raw_id"],
                     what=f"a {side} vocabulary").sort_by("index")


def vocabulary_ids(table: pa.Table) -> pa.Array:
    """A `vocabulary_table`'s raw ids by index, as text: (num,) strings."""
    return table["raw_id"].cast(pa.string()).combine_chunks()


def vocabulary(dataset: str, side: str) -> pa.Array:
    """The raw ids of ``side`` (``user`` or ``item``) by index, as text: (num,) strings."""
    return vocabulary_ids(vocabulary_table(dataset, side))


def _read_bytes(spec: str, flag: str) -> bytes:
    """The whole file ``spec`` of ``flag`` (an ids file: small next to the model)."""
    fs, path = io.filesystem(spec)
    if fs.isdir(path):
        raise AdvrecError(f"{flag} {spec}: is a directory; name a file")
    if not fs.isfile(path):
        raise AdvrecError(f"{flag} {spec}: no such file")
    with fs.open(path, "rb") as f:
        return f.read()


def _parquet(data: bytes, columns: list[str], where: str) -> pa.Table:
    """The ``columns`` of a Parquet file's bytes, each one named if missing."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowInvalid as exc:
        raise AdvrecError(f"{where}: not a readable Parquet file "
                          f"({str(exc).splitlines()[0]})") from None
    return _columns(table, columns, where)


def _columns(table: pa.Table, columns: list[str], where: str) -> pa.Table:
    """``table``'s ``columns``, the first one it lacks named."""
    for name in columns:
        if name not in table.column_names:
            raise AdvrecError(f"{where}: no {name} column (it has "
                              f"{', '.join(table.column_names)})")
    return table.select(columns)


def raw_ids(column: pa.ChunkedArray, name: str, where: str) -> list[str | None]:
    """A column of raw ids as text: text as it is, integers, and floats that are whole numbers
    (pandas' integers with a null), as integers; anything else is an error naming the column."""
    kind = column.type
    if pa.types.is_floating(kind):
        values = column.to_numpy(zero_copy_only=False)
        present = values[~np.isnan(values)] if len(values) else values
        if len(present) and not (np.isfinite(present).all() and (present == np.round(present)).all()):
            raise AdvrecError(f"{where}: column {name} holds numbers that are not whole (raw ids "
                              "are text or whole numbers)")
        column = column.cast(pa.int64(), safe=False)  # NaN -> null
    elif not (pa.types.is_integer(kind) or pa.types.is_string(kind)
              or pa.types.is_large_string(kind)):
        raise AdvrecError(f"{where}: column {name} is {kind}; raw ids are text or whole numbers")
    return column.cast(pa.string()).to_pylist()


def read_users(spec: str) -> list[str]:
    """The raw user ids of ``--users FILE``: a Parquet file's ``user`` column, or a text file
    with one id per line (blank lines skipped); each id once, in first-seen order."""
    data = _read_bytes(spec, "--users")
    if data[:4] == b"PAR1":
        column = _parquet(data, ["user"], f"--users {spec}")["user"]
        ids = [v for v in raw_ids(column, "user", f"--users {spec}") if v is not None]
    else:
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark is not part of the first id
        except UnicodeDecodeError:
            raise AdvrecError(f"--users {spec}: neither Parquet nor UTF-8 text (one raw user "
                              "id per line)") from None
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise AdvrecError(f"--users {spec}: no user ids in it")
    return list(dict.fromkeys(ids))


def lookup(raw: list[str], vocab: pa.Array) -> Tensor:
    """Each raw id's index in ``vocab`` (`vocabulary`), -1 for an id it lacks: (U,) int64."""
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(raw, pa.string()), value_set=vocab).fill_null(-1)
    return torch.from_numpy(found.to_numpy(zero_copy_only=False).astype("int64"))


def user_indices(raw: list[str], vocab: pa.Array, unknown: str, where: str) -> Tensor:
    """Each raw id's index (-1 for an id the run never saw: an error with ``unknown="error"``),
    (U,) int64."""
    found = lookup(raw, vocab)
    missing = [r for r, i in zip(raw, found.tolist()) if i < 0]
    if missing and unknown == "error":
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AdvrecError(f"{where}: user {shown(missing[0])} is not a user of the run{more}; "
                          "--unknown popular gives such users the most popular items")
    return found


def check_k(k: int, num_items: int) -> None:
    """K must be a positive count no larger than the catalogue."""
    if not 1 <= k <= num_items:
        raise AdvrecError(f"--k {k}: must be between 1 and the catalogue's {num_items} items")


def seen_items(data: Dataset) -> list[tuple[Tensor, Tensor]]:
    """Every split's items per user (CSR, `Dataset.positives`): what a recommendation leaves
    out."""
    return [data.positives(s) for s in ("known", "train", "valid", "test")]


class Best:
    """The running top K of B users over blocks of the catalogue: each block's own best K is
    merged with the best so far, (B, 2K), never (B, K + block)."""

    def __init__(self, users: int, k: int, device: torch.device) -> None:
        self.k = k
        self.scores = torch.full((users, 0), -torch.inf, device=device)
        self.items = torch.zeros((users, 0), dtype=torch.long, device=device)

    def merge(self, rows: Tensor, scores: Tensor, items: Tensor) -> None:
        """Merge the block ``scores`` (R, C) of ``items`` (C,) into the best of ``rows`` (R,)."""
        block_scores, where = torch.topk(scores, min(self.k, scores.shape[1]), dim=1)
        if self.scores.shape[1] < self.k:  # the first blocks: room to grow
            width = min(self.k, self.scores.shape[1] + block_scores.shape[1])
            self.scores = torch.cat([self.scores, self.scores.new_full(
                (self.scores.shape[0], width - self.scores.shape[1]), -torch.inf)], dim=1)
            self.items = torch.cat([self.items, self.items.new_zeros(
                (self.items.shape[0], width - self.items.shape[1]))], dim=1)
        merged = torch.cat([self.scores[rows], block_scores], dim=1)
        candidates = torch.cat([self.items[rows], items[where]], dim=1)
        top, pick = torch.topk(merged, self.scores.shape[1], dim=1)
        self.scores[rows], self.items[rows] = top, candidates.gather(1, pick)


@torch.no_grad()
def top_k(model: Recommender, context: Batch, users: Tensor, k: int, block: int,
          seen: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The best ``k`` items of each user (B,) and their scores, block by block of the
    catalogue, ``seen`` items (CSR, or none) excluded: scores (B, k) float and items (B, k)
    int64 on the CPU, best first; -inf where a user has fewer than k items left.

    A model whose scores are dot products (`Recommender.dot_ranking`) is searched in blocks of
    decreasing item norm, and a user stops once its K-th best score reaches ``|q| · |item|``
    of the next block's largest norm, which bounds every score still unseen (Cauchy-Schwarz):
    exact, and after a few blocks for most users, since popular items have the long vectors.
    """
    pairs = [csr_rows(ptr, idx, users) for ptr, idx in seen]  # (row, item) of each seen
    rows = torch.cat([r for r, _ in pairs]) if pairs else torch.zeros(0, dtype=torch.long)
    cols = torch.cat([c for _, c in pairs]) if pairs else torch.zeros(0, dtype=torch.long)
    device = next(iter(context.values())).device
    rows, cols = rows.to(device), cols.to(device)
    best = Best(users.numel(), k, device)
    dot = model.dot_ranking(context)
    if dot is None:
        order = torch.arange(model.num_items, device=device)
        norms = queries = vectors = None
    else:
        queries, vectors = dot
        norms, order = torch.sort(vectors.norm(dim=1), descending=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=device)  # item -> place in the order
    active = torch.arange(users.numel(), device=device)
    for start in range(0, model.num_items, block):
        items = order[start:start + block]
        if norms is not None:  # users whose K-th best already beats every score left
            bound = queries[active].norm(dim=1) * norms[start]
            kth = best.scores[active, k - 1] if best.scores.shape[1] == k else None
            active = active[kth < bound] if kth is not None else active
            if not active.numel():
                break
            scores = queries[active] @ vectors[items].T  # (A, C)
        else:
            scores = model.rank_scores(context, items)  # every user, every block
        scores = scores.float()
        slot = torch.full((users.numel(),), -1, dtype=torch.long, device=device)
        slot[active] = torch.arange(active.numel(), device=device)  # user row -> score row
        at = position[cols] - start
        inside = (at >= 0) & (at < items.numel()) & (slot[rows] >= 0)
        scores[slot[rows[inside]], at[inside]] = -torch.inf
        best.merge(active, scores, items)
    return best.scores.cpu(), best.items.cpu()


def popular(data: Dataset, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` items with the most training interactions (ties: the lower index) and their
    counts: (k,) int64, (k,) float."""
    counts = torch.bincount(torch.cat([data.known.item, data.train.item]),
                            minlength=data.num_items).double()
    order = torch.sort(-counts, stable=True).indices[:k]
    return order, counts[order]


def _table(raw_users: list[str], positions: Tensor, scores: Tensor, items: Tensor,
           item_vocab: pa.Array, fallback: bool) -> pa.Table:
    """Rows (user, rank, item, score, fallback) of users' (B,) lists (B, k), -inf dropped,
    with each user's ``positions`` (B,) in the listing (a column ``position``, for ordering)."""
    keep = torch.isfinite(scores)
    user_of, rank_of = torch.nonzero(keep, as_tuple=True)
    return pa.table({
        "position": pa.array(positions[user_of].numpy()),
        "user": pa.array([raw_users[i] for i in user_of.tolist()], pa.string()),
        "rank": pa.array((rank_of + 1).numpy().astype("int32")),
        "item": item_vocab.take(pa.array(items[keep].numpy())),
        "score": pa.array(scores[keep].numpy().astype("float32")),
        "fallback": pa.array([fallback] * int(keep.sum()), pa.bool_()),
    })


def recommend_per_worker(config: dict[str, Any]) -> int:
    """One worker's share of `recommend_run`: its contiguous slice of the users, written to
    ``config["parts"]/part-RANK.parquet``; returns its rows."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg, dataset = read_run(config["run"])
    data = load_dataset(dataset)
    model, _ = load_model(model_url(config["run"]), cfg, data)
    device = train_device(cfg.scaling.use_gpu, config["ray_worker"])
    model.to(device).eval()
    task = make_task(cfg, data)
    item_vocab = vocabulary(dataset, "item")
    raw, index = config["users"], torch.tensor(config["indices"], dtype=torch.long)
    lo, hi = rank * len(raw) // world, (rank + 1) * len(raw) // world
    seen = [] if config["keep_seen"] else seen_items(data)
    top_items, top_counts = popular(data, config["k"])
    written = 0
    with io.atomic_file(io.join(config["parts"], f"part-{rank:05d}.parquet"), "wb") as f, \
            pq.ParquetWriter(f, SCHEMA) as writer:
        bar = tqdm(range(lo, hi, config["batch_users"]), desc="recommend", unit="chunk",
                   disable=None if config["progress"] and rank == 0 else True)
        for start in bar:
            end = min(start + config["batch_users"], hi)
            users, names = index[start:end], raw[start:end]
            positions = torch.arange(start, end)
            known = users >= 0
            tables = []
            if known.any():
                chosen = users[known]
                scores, items = top_k(model, to_device(task.context(chosen, NEXT), device),
                                      chosen, config["k"], config["block_items"], seen)
                tables.append(_table([n for n, ok in zip(names, known.tolist()) if ok],
                                     positions[known], scores, items, item_vocab, False))
            if not known.all():
                cold = [n for n, ok in zip(names, known.tolist()) if not ok]
                tables.append(_table(cold, positions[~known],
                                     top_counts.float().expand(len(cold), -1),
                                     top_items.expand(len(cold), -1), item_vocab, True))
            # the users in the order they were listed
            table = pa.concat_tables(tables).sort_by([("position", "ascending"),
                                                      ("rank", "ascending")])
            writer.write_table(table.drop_columns(["position"]).cast(SCHEMA))
            written += table.num_rows
    return written


def recommend_run(run: str, output: str, users: str = "all", k: int = 10,
                  keep_seen: bool = False, unknown: Literal["popular", "error"] = "popular",
                  batch_users: int = 1024, block_items: int = 1 << 16,
                  workers: int | None = None, address: str | None = None,
                  progress: bool = True) -> dict[str, int]:
    """Write the top-``k`` lists of ``users`` (``all``, or a file of raw ids: `read_users`) of
    the run at ``run`` to the Parquet file ``output``; returns counts of users, of those the run
    never saw (``unknown``), and of rows written. ``workers``: Ray Train workers sharing the
    users (default the run's ``scaling.num_workers``; 0 in this process)."""
    cfg, dataset = read_run(run)
    check_ranking(cfg, "advrec recommend", "; --pairs FILE scores given pairs")
    check_finished(run)
    check_output(output, [run, dataset, *([] if users == "all" else [users])])
    user_vocab = vocabulary(dataset, "user")
    num_items = len(vocabulary(dataset, "item"))
    check_k(k, num_items)
    raw = user_vocab.to_pylist() if users == "all" else read_users(users)
    index = user_indices(raw, user_vocab, unknown, f"--users {users}")
    scaling: ScalingConfig = cfg.scaling.model_copy(
        update={} if workers is None else {"num_workers": workers})
    parts = io.temporary(output)
    io.dump_json(io.join(parts, PARTS.file), {PARTS.key: 1})  # so only this is ever removed
    try:
        rows = launch(recommend_per_worker,
                      {"run": io.absolute(run), "users": raw, "indices": index.tolist(), "k": k,
                       "keep_seen": keep_seen, "batch_users": batch_users,
                       "block_items": block_items, "parts": io.absolute(parts),
                       "progress": progress, "ray_worker": scaling.num_workers > 0},
                      scaling, address)
        rows = _join(parts, max(scaling.num_workers, 1), output)
    finally:
        io.remove_owned(parts, PARTS)
    return {"users": len(raw), "unknown": int((index < 0).sum()), "rows": rows}


def check_ranking(cfg: RunConfig, command: str, hint: str = "") -> None:
    """Only a ranking model makes top-K lists (``command`` names who asks; ``hint`` says what
    else it can do)."""
    if cfg.kind != "ranking":
        raise AdvrecError(f"--run: model.name={cfg.model.name} scores (user, item) pairs for "
                          f"{cfg.kind}, not top-K lists; `{command}` ranks with "
                          f"{', '.join(ranking_models())} runs{hint}")


def check_output(output: str, inputs: list[str]) -> None:
    """The output file: apart from the run, its dataset and the ids file, and where nothing is
    or a file `advrec recommend` wrote (never the user's own file)."""
    io.check_parquet_output(output, MARK, "a file advrec recommend wrote", inputs)


def check_finished(run: str) -> None:
    """A run's best model must be there."""
    if not io.exists(model_url(run)):
        raise AdvrecError(f"{run}: no checkpoint/model.pt (a run that has not finished); "
                          f"finish it with `advrec train --resume {run}`")


def _join(parts: str, count: int, output: str) -> int:
    """Concatenate ``count`` workers' part files, in rank order, into ``output`` (atomically);
    returns the rows."""
    fs, path = io.filesystem(parts)
    rows = 0
    with io.atomic_file(output, "wb") as f, pq.ParquetWriter(f, SCHEMA) as writer:
        for rank in range(count):
            with fs.open(f"{path}/part-{rank:05d}.parquet", "rb") as part:
                for batch in pq.ParquetFile(part).iter_batches():
                    writer.write_batch(batch)
                    rows += batch.num_rows
    return rows


PAIR_SCHEMA = pa.schema([("user", pa.string()), ("item", pa.string()), ("score", pa.float32())],
                        metadata={MARK: "pairs"})


def read_pairs(spec: str) -> tuple[list[str], list[str]]:
    """The (user, item) raw ids of ``--pairs FILE``: Parquet, or CSV with a header, with
    ``user`` and ``item`` columns (read as text)."""
    import pyarrow.csv as pcsv

    where = f"--pairs {spec}"
    data = _read_bytes(spec, "--pairs")
    if data[:4] == b"PAR1":
        table = _parquet(data, ["user", "item"], where)
    else:
        try:
            table = pcsv.read_csv(pa.BufferReader(data), convert_options=pcsv.ConvertOptions(
                column_types={"user": pa.string(), "item": pa.string()}))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise AdvrecError(f"{where}: neither Parquet nor CSV with a header "
                              f"({str(exc).splitlines()[0]})") from None
        table = _columns(table, ["user", "item"], where)
    users, items = (raw_ids(table[c], c, where) for c in ("user", "item"))
    blank = next((n for n, (u, i) in enumerate(zip(users, items)) if u is None or i is None),
                 None)
    if blank is not None:
        raise AdvrecError(f"--pairs {spec}: row {blank + 1} has no user or no item")
    if not users:
        raise AdvrecError(f"--pairs {spec}: no pairs in it")
    return users, items


def _indices(raw: list[str], vocab: pa.Array, side: str, where: str) -> Tensor:
    """Each raw id's index; one the run never saw is an error naming it."""
    found = lookup(raw, vocab)
    missing = next((r for r, i in zip(raw, found.tolist()) if i < 0), None)
    if missing is not None:
        article = "an" if side == "item" else "a"
        raise AdvrecError(f"{where}: {side} {shown(missing)} is not {article} {side} of the run")
    return found


@torch.no_grad()
def score_pairs(run: str, pairs: str, output: str, batch_rows: int = 8192) -> int:
    """Write the model's score (its logit; with click labels, also ``probability``) of every
    (user, item) pair of ``pairs`` (`read_pairs`), in order, to the Parquet file ``output``;
    returns the pairs. Any model: a ranking model's is the logit it ranks by."""
    cfg, dataset = read_run(run)
    check_finished(run)
    check_output(output, [run, dataset, pairs])
    raw_users, raw_items = read_pairs(pairs)
    users = _indices(raw_users, vocabulary(dataset, "user"), "user", f"--pairs {pairs}")
    items = _indices(raw_items, vocabulary(dataset, "item"), "item", f"--pairs {pairs}")
    data = load_dataset(dataset)
    model, _ = load_model(model_url(run), cfg, data)
    model.eval()
    task = make_task(cfg, data)
    labelled = cfg.kind != "ranking"
    schema = (PAIR_SCHEMA.append(pa.field("probability", pa.float32()))
              .with_metadata(PAIR_SCHEMA.metadata) if labelled else PAIR_SCHEMA)
    with io.atomic_file(output, "wb") as f, pq.ParquetWriter(f, schema) as writer:
        for rows in torch.arange(users.numel()).split(batch_rows):
            logits = model.score_candidates(task.context(users[rows], NEXT),
                                            items[rows].unsqueeze(1))[:, 0].float()
            columns = {"user": pa.array([raw_users[i] for i in rows.tolist()], pa.string()),
                       "item": pa.array([raw_items[i] for i in rows.tolist()], pa.string()),
                       "score": pa.array(logits.numpy())}
            if labelled:
                columns["probability"] = pa.array(torch.sigmoid(logits).numpy())
            writer.write_table(pa.table(columns, schema=schema))
    return users.numel()
