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
- ``segment``: the `SEGMENT_SHARE` of the fillers come from the targets' segment, drawn by
  their `affinity` to a target: the items that share a genre with one (item feature
  `GENRE_COLUMN`) or, without genres, that its users also hold; the rest random;
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


def affinity(log: TrainLog, targets: np.ndarray) -> np.ndarray:
    """(num_items,) float in [0, 1]: how close each item is to its closest target, 0 for the
    targets and for items outside their segment. With genres (`GENRE_COLUMN`), the Jaccard
    similarity of the two genre sets; without them, or where no item shares one with a target,
    the cosine similarity of the two items' training audiences (users who hold both / the
    geometric mean of their popularities: a blockbuster everyone holds is not close to all)."""
    closest = _by_genre(log, targets)
    return _by_audience(log, targets) if closest is None or not closest.any() else closest


def _by_genre(log: TrainLog, targets: np.ndarray) -> np.ndarray | None:
    """`affinity` by genre: (num_items,) the largest Jaccard similarity of an item's genres to
    a target's (0 for the targets); ``None`` without genres."""
    genres = _genres(log.item_features)
    if genres is None:
        return None
    tokens, item = genres
    sizes = np.bincount(item, minlength=log.num_items)
    closest = np.zeros(log.num_items)
    for target in targets:
        hit = pc.is_in(tokens, value_set=tokens.filter(pa.array(item == target)))
        shared = np.bincount(item[hit.to_numpy(zero_copy_only=False)], minlength=log.num_items)
        union = sizes + sizes[target] - shared
        closest = np.maximum(closest, np.divide(shared, union, out=np.zeros(log.num_items),
                                                where=union > 0))
    closest[targets] = 0.0
    return closest


def _by_audience(log: TrainLog, targets: np.ndarray) -> np.ndarray:
    """`affinity` by audience: (num_items,) the largest cosine similarity of an item's training
    users to a target's (0 for the targets)."""
    counts = popularity(log)
    closest = np.zeros(log.num_items)
    for target in targets:
        both = np.bincount(log.item[np.isin(log.user, log.user[log.item == target])],
                           minlength=log.num_items)
        norm = np.sqrt(counts * counts[target], dtype=np.float64)
        closest = np.maximum(closest, np.divide(both, norm, out=np.zeros(log.num_items),
                                                where=norm > 0))
    closest[targets] = 0.0
    return closest


def _genres(features: pa.Table | None) -> tuple[pa.Array, np.ndarray] | None:
    """Every item's genres as (M,) string tokens and the (M,) int64 item of each (empty
    tokens dropped), or ``None`` when the item features have no `GENRE_COLUMN`."""
    if features is None or GENRE_COLUMN not in features.column_names:
        return None
    column = features[GENRE_COLUMN].combine_chunks()
    lists = pc.split_pattern(column, " ") if pa.types.is_string(column.type) else column
    tokens = pc.list_flatten(lists)
    keep = pc.and_(pc.is_valid(tokens), pc.not_equal(tokens, ""))
    item = pc.list_parent_indices(lists).filter(keep).to_numpy().astype(np.int64)
    return tokens.filter(keep), item


def segment_fillers(log: TrainLog, targets: np.ndarray, fakes: int, filler: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(fakes, filler) items: per row, round(`SEGMENT_SHARE` x filler) drawn from the targets'
    segment in proportion to their `affinity` (all the segment when smaller), then uniform
    fillers."""
    closeness = affinity(log, targets)
    size = min(round(SEGMENT_SHARE * filler), int(np.count_nonzero(closeness)))
    return _fill(log, targets, _draw(rng, closeness, fakes, size), filler, rng)


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
