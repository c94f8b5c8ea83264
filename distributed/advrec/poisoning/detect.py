"""``advrec detect``: a suspicion score per user of a prepared dataset, and a cleaned copy.

The detector is unsupervised: it needs no labelled fakes, so it runs on any log. Measured on
ml-100k against ``advrec poison``'s random, average, bandwagon and segment fakes (README.md,
"Poisoning and fraud", which also says where it fails: the surrogate attack), two signals of
the train split separate fakes best, each a robust z-score (median and MAD over all users, so a
few fakes cannot shift the scale):

- **low neighbour similarity**: the mean IDF-weighted cosine similarity of a user's profile to
  its ``k`` nearest neighbours (DegSim's statistic, Chirita et al. 2005). Fillers drawn by an
  attacker follow no one's taste, so a fake's nearest neighbours are far: on implicit data this
  is *low* for fakes, where DegSim flags high similarity of copies of one rating template;
- **suspicious co-raters**: the mean low-similarity of the other users of a user's items, over
  the `CO_ITEMS` items where it is highest (items with at least `MIN_RATERS` users). Fakes
  share the targets, whose other users are mostly fakes, so the group gives itself away even
  when each fake alone looks ordinary (popularity-drawn fillers).

The score is the first plus the second weighted by how lonely the user is itself (from 0 for a
typical user towards 1): a fake is lonely *and* in a lonely group, while a genuine user who has
one of the targets shares the group's co-raters without being lonely. A user far *more* similar
to its neighbours than anyone scores that instead (the z-score of its similarity): fakes that
copy one profile are each other's nearest neighbours, DegSim's own signal.

Profile size and mean log item popularity are reported beside the score: size is the filler
count the attacker chooses, and popularity separates random fakes but not popular fillers.

Cost: the features are O(interactions); the similarity is O(interactions x reference users), at
most `REFERENCE` users drawn (seeded) as the neighbours to compare against, so a log of millions
of users costs minutes, not hours.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from advrec.data.dataset import load_dataset, read_part
from advrec.data.prepare import DATASET
from advrec.errors import AdvrecError, shown
from advrec.io import (
    Marker,
    atomic_dir,
    check_output,
    copy_files,
    filesystem,
    join,
    write_json,
    write_parquet,
)
from advrec.metrics.ctr import auc
from advrec.poisoning.layout import fake_users, genuine_users

DETECTION = Marker("detection.json", "detector", "a detection output")
"""What marks a directory `detect` wrote, which a new detection may replace."""
SCORES_FILE = "scores.parquet"
NEIGHBOURS = 10
"""k of the neighbour similarity: the number of nearest neighbours averaged."""
REFERENCE = 4096
"""The most users a profile is compared against (all of them in a smaller log)."""
MIN_RATERS = 3
"""Items with fewer users say nothing about a group: they are left out of the co-raters."""
CO_ITEMS = 3
"""How many of a user's items with the most suspicious co-raters make its co-rater suspicion."""
CHUNK_FLOATS = 1 << 25
"""Floats of one dense block of reference profiles (128 MiB), whatever the catalogue size."""
COPIED = ("valid.parquet", "test.parquet", "users.parquet", "items.parquet",
          "user_features.parquet", "item_features.parquet", "targets.json")
"""The files of a dataset a cleaned copy keeps as they are (beside its new train split)."""


@dataclass(frozen=True)
class Selection:
    """Which users a cleaned dataset loses: the ``top`` most suspicious, or every user whose
    score is at least ``threshold`` (exactly one of them is set)."""

    top: int | None = None
    threshold: float | None = None

    def pick(self, score: np.ndarray) -> np.ndarray:
        """(R,) int64 ascending indices of the users removed, from ``score`` (U,)."""
        if self.top is not None:
            order = np.argsort(-score, kind="stable")  # ties: the lower index first
            return np.sort(order[:self.top])
        return np.flatnonzero(score >= self.threshold)

    def describe(self) -> dict[str, Any]:
        return {"top": self.top} if self.top is not None else {"threshold": self.threshold}


def robust_z(x: np.ndarray) -> np.ndarray:
    """(U,) ``(x - median) / (1.4826 MAD)``: a z-score a few outliers cannot move (a MAD of 0,
    all values alike, gives 0 for all)."""
    median = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - median))
    return (x - median) / mad if mad > 0 else np.zeros_like(x)


def neighbour_similarity(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int,
                         k: int = NEIGHBOURS, reference: int = REFERENCE,
                         seed: int = 0) -> np.ndarray:
    """(U,) float64: each user's mean IDF-weighted cosine similarity to its ``k`` nearest
    reference users (itself excluded); 0 for a user without interactions.

    ``user``, ``item``: (N,) int64 distinct (user, item) pairs sorted by user, then item. The
    reference users are all users, or ``reference`` of them drawn with ``seed``. Each chunk of
    them is made dense (`CHUNK_FLOATS` floats) and compared with the sparse profiles of all
    users, a block of users at a time, so memory stays bounded however large the log.
    """
    pop = np.bincount(item, minlength=num_items)
    weight = np.log(num_users / np.maximum(pop[item], 1))
    norm = np.sqrt(np.bincount(user, weights=weight**2, minlength=num_users))
    value = torch.from_numpy((weight / np.maximum(norm[user], 1e-12)).astype(np.float32))
    columns = torch.from_numpy(np.ascontiguousarray(item, dtype=np.int64))
    crow = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=num_users))])
    refs = np.arange(num_users) if num_users <= reference else np.sort(
        np.random.default_rng(seed).choice(num_users, reference, replace=False))
    k = min(k, max(refs.size - 1, 1))
    best = torch.full((num_users, k), -1.0)
    chunk = max(1, min(refs.size, CHUNK_FLOATS // max(num_items, 1)))
    block_users = max(1, CHUNK_FLOATS // chunk)
    for start in range(0, refs.size, chunk):
        ids = refs[start:start + chunk]
        rows = torch.from_numpy(np.isin(user, ids))
        place = np.full(num_users, -1)
        place[ids] = np.arange(ids.size)
        dense = torch.zeros(num_items, ids.size)  # (I, chunk): the chunk's profiles
        dense[columns[rows], torch.from_numpy(place[user])[rows]] = value[rows]
        for lo in range(0, num_users, block_users):
            hi = min(lo + block_users, num_users)
            a, z = int(crow[lo]), int(crow[hi])
            with warnings.catch_warnings():  # "support is in beta": it is what we need
                warnings.filterwarnings("ignore", "Sparse CSR tensor support")
                block = torch.sparse_csr_tensor(torch.from_numpy(crow[lo:hi + 1] - a),
                                                columns[a:z], value[a:z], (hi - lo, num_items),
                                                check_invariants=True)
            sim = block @ dense  # (hi - lo, chunk)
            own = np.flatnonzero(place[lo:hi] >= 0)  # the block's users in this chunk
            sim[torch.from_numpy(own), torch.from_numpy(place[lo:hi][own])] = -1.0
            best[lo:hi] = torch.cat([best[lo:hi], sim], dim=1).topk(k, dim=1).values
    result = best.clamp_min(0).mean(dim=1).double().numpy()
    result[norm == 0] = 0.0
    return result


def co_rater_suspicion(user: np.ndarray, item: np.ndarray, suspicion: np.ndarray,
                       num_items: int, top: int = CO_ITEMS) -> np.ndarray:
    """(U,) float64: over the ``top`` items of a user whose *other* users have the highest mean
    ``suspicion`` (U,), the mean of those means; only items with at least `MIN_RATERS` users
    count (``-inf`` for a user with none).

    ``user``, ``item``: (N,) int64 distinct pairs sorted by user. Several items, not the one
    most suspicious: a genuine user who has one of the targets shares it with the fakes, but a
    fake shares every target with the others.
    """
    pop = np.bincount(item, minlength=num_items)
    total = np.bincount(item, weights=suspicion[user], minlength=num_items)
    others = (total[item] - suspicion[user]) / np.maximum(pop[item] - 1, 1)
    counted = pop[item] >= MIN_RATERS
    order = np.lexsort((-others, ~counted, user))  # per user: counted items, most suspicious first
    rank = np.arange(user.size) - np.searchsorted(user, user[order])
    chosen = order[(rank < top) & counted[order]]
    count = np.bincount(user[chosen], minlength=suspicion.size)
    total_chosen = np.bincount(user[chosen], weights=others[chosen], minlength=suspicion.size)
    return np.where(count > 0, total_chosen / np.maximum(count, 1), -np.inf)


def user_features(user: np.ndarray, item: np.ndarray, num_users: int,
                  num_items: int) -> dict[str, np.ndarray]:
    """Every user's features and suspicion ``score`` (each (U,) array), from the (N,) int64
    distinct train pairs, sorted by user, then item (every train row: on CTR data the shown but
    not clicked ones too). A user without train rows gets the lowest score, ``-inf``."""
    size = np.bincount(user, minlength=num_users)
    log_pop = np.log(np.bincount(item, minlength=num_items)[item])
    similarity = neighbour_similarity(user, item, num_users, num_items)
    lonely = -robust_z(similarity)
    co_raters = co_rater_suspicion(user, item, lonely, num_items)
    reached = np.isfinite(co_raters)
    co_z = np.zeros(num_users)
    co_z[reached] = robust_z(co_raters[reached])
    # the co-raters count as much as the user is lonely itself (0 for a typical user, towards 1
    # for a clearly lonely one): a genuine user who shares a target with the fakes is not lonely
    own = np.maximum(lonely, 0)
    # copies of one profile are the most similar of all, not the least: DegSim's own signal
    score = np.maximum(lonely + own / (1 + own) * np.maximum(co_z, 0), -lonely)
    score[size == 0] = -np.inf
    return {"profile_size": size,
            "mean_log_popularity": np.bincount(user, weights=log_pop, minlength=num_users)
            / np.maximum(size, 1),
            "neighbour_similarity": similarity, "co_rater_suspicion": co_raters,
            "score": score}


def against_fakes(score: np.ndarray, meta: dict[str, Any],
                  removed: np.ndarray | None) -> dict[str, Any] | None:
    """Precision, recall and ROC-AUC of ``score`` (U,) against a poisoned dataset's known fakes
    (`layout.fake_users`): of the ``removed`` users, or else of the top F (F = fakes); ``None``
    for a clean dataset."""
    fakes = fake_users(meta)
    if not fakes.size:
        return None
    is_fake = np.zeros(score.size, dtype=bool)
    is_fake[fakes] = True
    flagged = Selection(top=int(fakes.size)).pick(score) if removed is None else removed
    hits = int(is_fake[flagged].sum())
    return {"fakes": int(fakes.size), "flagged": int(flagged.size),
            "of": "removed" if removed is not None else "top fakes",
            "precision": hits / flagged.size if flagged.size else 0.0,
            "recall": hits / fakes.size,
            "roc_auc": auc(torch.from_numpy(np.nan_to_num(score, neginf=-1e300)),
                           torch.from_numpy(is_fake.astype(np.float64)))}


def _check(data: str, meta: dict[str, Any], selection: Selection | None) -> None:
    """One-line errors for a dataset or a selection detection cannot work with."""
    if "hashing" in meta and "user" in meta["hashing"]:
        raise AdvrecError(f"{data}: its user ids are hashed into buckets; detection scores "
                          "one user per row (prepare it without --user-buckets)")
    genuine_users(meta, f"{data}/meta.json")  # a corrupt poison section: before any score
    if selection is None:
        return
    users = int(meta["num_users"])
    if selection.top is not None and not 0 < selection.top < users:
        raise AdvrecError(f"--remove {selection.top}: expected 1 .. {users - 1} users (the "
                          f"dataset has {users}; removing all would leave nothing to train)")
    if selection.threshold is not None and not np.isfinite(selection.threshold):
        raise AdvrecError(f"--threshold {shown(selection.threshold)}: expected a finite score")


def detect(data: str, output: str, selection: Selection | None = None) -> dict[str, Any]:
    """Score every user of the prepared dataset at ``data`` and write ``output``: a detection
    output (``scores.parquet``, ``detection.json``) that, with a ``selection``, is also the
    dataset cleaned of those users' train rows (vocabularies, valid and test kept, so metrics
    stay comparable; ``meta.json`` records the removal under ``detection``).

    Returns:
        The report written to ``detection.json``.
    """
    check_output(output, DETECTION, inputs=(data,))
    dataset = load_dataset(data, train_pairs_only=True)
    meta = dataset.meta
    _check(data, meta, selection)
    user = dataset.train.user.numpy()
    item = dataset.train.item.numpy()
    pairs = np.unique(user * dataset.num_items + item)  # a pair counts once
    features = user_features(pairs // dataset.num_items, pairs % dataset.num_items,
                             dataset.num_users, dataset.num_items)
    score = features["score"]
    removed = None if selection is None else selection.pick(score)
    is_removed = np.zeros(score.size, dtype=bool)
    if removed is not None:
        is_removed[removed] = True
    table = pa.table({"user": pa.array(np.arange(score.size), pa.int32()),
                      "raw_id": _raw_ids(data, dataset.num_users),
                      **{name: pa.array(values) for name, values in features.items()},
                      "removed": pa.array(is_removed)})
    report: dict[str, Any] = {
        "detector": {"features": [n for n in features if n != "score"],
                     "score": "max(L + max(L, 0) / (1 + max(L, 0)) * max(robust_z("
                              "co_rater_suspicion), 0), -L), L = robust_z(-neighbour_similarity)",
                     "neighbours": NEIGHBOURS, "reference": REFERENCE,
                     "min_raters": MIN_RATERS, "co_items": CO_ITEMS},
        "source": data, "users": dataset.num_users,
        "genuine_users": genuine_users(meta),
        "removed": None if removed is None else {
            **selection.describe(), "users": removed.tolist(),
            "rows": int(np.isin(user, removed).sum())},
        "against_fakes": against_fakes(score, meta, removed),
    }
    with atomic_dir(output, DETECTION) as (fs, tmp):
        write_parquet(fs, join(tmp, SCORES_FILE), table)
        if removed is not None:
            _write_cleaned(data, fs, tmp, meta, removed, report)
        write_json(fs, join(tmp, DETECTION.file), report)  # last: the output's marker
    return report


def _raw_ids(data: str, num_users: int) -> pa.Array:
    """(U,) the users' raw ids from the dataset's ``users.parquet``, by index."""
    where = f"{data}/users.parquet"
    vocab = read_part(data, "users.parquet", ["index", "raw_id"],
                      what="a vocabulary of index and raw_id")
    index = vocab["index"].to_numpy()
    if vocab.num_rows != num_users or not np.array_equal(index, np.arange(num_users)):
        raise AdvrecError(f"{where}: not one row per user 0 .. {num_users - 1}")
    return pc.cast(vocab["raw_id"], pa.string()).combine_chunks()


def _write_cleaned(data: str, fs: Any, tmp: str, meta: dict[str, Any], removed: np.ndarray,
                   report: dict[str, Any]) -> None:
    """Write into ``tmp`` the dataset at ``data`` without the train rows of ``removed``."""
    source, path = filesystem(data)
    with source.open(join(path, "train.parquet"), "rb") as f:
        train = pq.read_table(f, use_threads=False)  # load_dataset checked it; one thread as there
    keep = pc.invert(pc.is_in(train["user"], pa.array(removed.astype(np.int32))))
    write_parquet(fs, join(tmp, "train.parquet"), train.filter(keep))
    copy_files(data, COPIED, fs, tmp)
    rows = report["removed"]["rows"]
    cleaned = {**meta, "counts": {**meta["counts"], "train": meta["counts"]["train"] - rows},
               "detection": {"source": data, **report["removed"], "users": int(removed.size),
                             "scores": SCORES_FILE}}
    write_json(fs, join(tmp, DATASET.file), cleaned)
