"""The filler attacks of ``advrec poison``: which items a fake profile holds beside the targets.

Every attack is a :data:`~advrec.poisoning.layout.FillerAttack`: given the genuine training log,
the (T,) target items, the number of fakes F and of fillers N per fake, it returns the (F, N)
filler items, distinct within a row and never a target, drawn from ``rng`` alone. The classic
shilling attacks (Lam & Riedl, WWW 2004; Mobasher et al., TOIT 2007), made for implicit
feedback (an interaction instead of a rating):

- ``random``: fillers uniform over the catalogue;
- ``average``: fillers drawn by popularity (the implicit analogue of rating each filler with its
  mean rating: the profile looks like an average user's);
- ``bandwagon``: the `BANDWAGON_SHARE` of the fillers are the most popular items (the same for
  every fake: the blockbusters everyone has seen), the rest random;
- ``segment``: the `SEGMENT_SHARE` of the fillers come from the targets' segment, the items that
  share a genre with a target (item feature `GENRE_COLUMN`) or, without genres, the items
  co-consumed with one; the rest random;
- ``surrogate``: the optimisation-based attack of :mod:`advrec.poisoning.surrogate`.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from advrec.poisoning.layout import FillerAttack, TrainLog

BANDWAGON_SHARE = 0.1
"""The share of a bandwagon profile's fillers that are the most popular items."""
SEGMENT_SHARE = 0.5
"""The share of a segment profile's fillers drawn from the targets' segment."""
GENRE_COLUMN = "class"
"""The item feature that holds genres: RecBole's ml-100k name, which advrec's MovieLens reader
writes too (space-separated tokens, or a list of strings)."""


def popularity(log: TrainLog) -> np.ndarray:
    """(num_items,) int64 training interactions per item."""
    return np.bincount(log.item, minlength=log.num_items).astype(np.int64)


def _draw(rng: np.random.Generator, weights: np.ndarray, fakes: int, size: int) -> np.ndarray:
    """(fakes, size) item indices, distinct within a row, drawn without replacement in
    proportion to ``weights`` ((num_items,) float, zero for an item never to draw, at least
    ``size`` of them positive)."""
    if size == 0:
        return np.zeros((fakes, 0), dtype=np.int64)
    p = weights / weights.sum()
    return np.stack([rng.choice(weights.size, size, replace=False, p=p)
                     for _ in range(fakes)]).astype(np.int64)


def _uniform(log: TrainLog, exclude: np.ndarray) -> np.ndarray:
    """(num_items,) weights: 1 for every item but those of ``exclude`` (item indices)."""
    weights = np.ones(log.num_items)
    weights[exclude] = 0.0
    return weights


def _fill(log: TrainLog, targets: np.ndarray, chosen: np.ndarray, filler: int,
          rng: np.random.Generator) -> np.ndarray:
    """``chosen`` ((F, K) items, no targets, K <= ``filler``) completed by uniform fillers to
    (F, filler), distinct within each row."""
    rows = [np.concatenate([picked, _draw(rng, _uniform(log, np.concatenate([targets, picked])),
                                          1, filler - picked.size)[0]])
            for picked in chosen]
    return np.stack(rows).astype(np.int64)


def random_fillers(log: TrainLog, targets: np.ndarray, fakes: int, filler: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(fakes, filler) items drawn uniformly from the non-target items."""
    return _draw(rng, _uniform(log, targets), fakes, filler)


def average_fillers(log: TrainLog, targets: np.ndarray, fakes: int, filler: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(fakes, filler) items drawn by popularity, add-one smoothed so that an item nobody has
    seen can still be drawn (any filler up to the catalogue less the targets is possible)."""
    weights = popularity(log) + 1.0
    weights[targets] = 0.0
    return _draw(rng, weights, fakes, filler)


def bandwagon_fillers(log: TrainLog, targets: np.ndarray, fakes: int, filler: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(fakes, filler) items: the ceil(`BANDWAGON_SHARE` x filler) most popular non-target items
    (ties to the lower index) in every row, then uniform fillers."""
    counts = popularity(log)
    counts[targets] = -1
    top = np.lexsort((np.arange(log.num_items), -counts))[:math.ceil(BANDWAGON_SHARE * filler)]
    return _fill(log, targets, np.tile(top, (fakes, 1)), filler, rng)


def segment(log: TrainLog, targets: np.ndarray) -> np.ndarray:
    """(S,) the targets' segment, targets excluded: the items that share a genre with one of
    them (`GENRE_COLUMN` of the item features) or, without genres, that a user has consumed
    together with one of them in training."""
    genres = _genres(log.item_features)
    if genres is not None:
        wanted = pc.list_flatten(genres.take(pa.array(targets))).unique()
        hit = pc.list_parent_indices(genres)
        shares = pc.is_in(pc.list_flatten(genres), value_set=wanted).to_numpy(zero_copy_only=False)
        members = np.unique(hit.to_numpy()[shares])
    else:
        fans = np.unique(log.user[np.isin(log.item, targets)])
        members = np.unique(log.item[np.isin(log.user, fans)])
    return np.setdiff1d(members, targets).astype(np.int64)


def _genres(features: pa.Table | None) -> pa.ListArray | None:
    """Each item's genres ((num_items,) lists of strings, empty tokens dropped), or ``None``
    when the item features have no `GENRE_COLUMN`."""
    if features is None or GENRE_COLUMN not in features.column_names:
        return None
    column = features[GENRE_COLUMN].combine_chunks()
    lists = pc.split_pattern(column, " ") if pa.types.is_string(column.type) else column
    flat = pc.list_flatten(lists)
    keep = pc.and_(pc.is_valid(flat), pc.not_equal(flat, ""))
    parents = pc.list_parent_indices(lists).filter(keep).to_numpy()
    offsets = np.searchsorted(parents, np.arange(len(lists) + 1))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat.filter(keep))


def segment_fillers(log: TrainLog, targets: np.ndarray, fakes: int, filler: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(fakes, filler) items: per row, round(`SEGMENT_SHARE` x filler) drawn uniformly from the
    targets' `segment` (all of it when smaller), then uniform fillers."""
    members = segment(log, targets)
    size = min(round(SEGMENT_SHARE * filler), members.size)
    weights = np.zeros(log.num_items)
    weights[members] = 1.0
    return _fill(log, targets, _draw(rng, weights, fakes, size), filler, rng)


def _surrogate(log: TrainLog, targets: np.ndarray, fakes: int, filler: int,
               rng: np.random.Generator) -> np.ndarray:
    """The optimisation-based attack, imported when used (it trains a model: torch)."""
    from advrec.poisoning.surrogate import surrogate_fillers

    return surrogate_fillers(log, targets, fakes, filler, rng)


ATTACKS: dict[str, FillerAttack] = {
    "random": random_fillers,
    "average": average_fillers,
    "bandwagon": bandwagon_fillers,
    "segment": segment_fillers,
    "surrogate": _surrogate,
}
"""Every attack ``advrec poison --attack`` takes, by name."""
