"""Planted fakes for the detector's tests and measurements: a prepared dataset with fake users
appended exactly as :mod:`advrec.poisoning.layout` fixes (``advrec poison`` is the real attack;
this is the smallest stand-in, so the detector is tested on its own).

Four filler attacks: ``random`` (fillers uniform over the items), ``average`` (fillers drawn
by item popularity), ``bandwagon`` (the ``popular`` share of the fillers is the same most
popular items for every fake, the rest random) and ``clone`` (every fake the same random
profile). Every fake profile is the targets plus ``filler`` distinct fillers, rated the log's
highest rating, at its latest time.

Importable by tests because pyproject's pytest ``pythonpath`` holds ``tests/``; also a script,
for measurements on a real dataset::

    python tests/planted.py CLEAN_DATASET OUTPUT --attack random --fakes 0.01 --seed 0
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from advrec.poisoning.layout import FAKE_PREFIX, TARGETS_FILE

ATTACKS = ("random", "average", "bandwagon", "clone")


def plant(clean: Path, output: Path, attack: str = "random", fakes: float = 0.01,
          filler: int | None = None, targets: int = 5, popular: float = 0.1,
          seed: int = 0) -> np.ndarray:
    """Copy the prepared dataset ``clean`` to ``output`` with fake users appended.

    ``fakes``: the share of the genuine users (a count when >= 1). ``filler``: fillers per fake
    (default: the genuine users' mean train profile size). ``targets``: how many target items,
    drawn among the unpopular ones (at most median popularity, at least one train row).

    Returns:
        (F,) int64 user indices of the fakes.
    """
    meta = json.loads((clean / "meta.json").read_text())
    train = pq.read_table(clean / "train.parquet")
    genuine, n_items = int(meta["num_users"]), int(meta["num_items"])
    count = int(fakes) if fakes >= 1 else max(1, round(fakes * genuine))
    rng = np.random.default_rng(seed)
    pop = np.bincount(train["item"].to_numpy(), minlength=n_items)
    filler = filler or round(train.num_rows / genuine)
    unpopular = np.flatnonzero((pop > 0) & (pop <= np.median(pop[pop > 0])))
    target = np.sort(rng.choice(unpopular, targets, replace=False))
    others = np.setdiff1d(np.arange(n_items), target)
    shared = np.array([], dtype=np.int64)
    if attack == "bandwagon":
        by_pop = others[np.argsort(-pop[others], kind="stable")]
        shared = by_pop[:round(popular * filler)]
    elif attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r} (choose {', '.join(ATTACKS)})")
    pool = np.setdiff1d(others, shared)
    weights = pop[pool] / pop[pool].sum() if attack == "average" else None
    profiles = [np.sort(np.concatenate([
        target, shared, rng.choice(pool, filler - shared.size, replace=False, p=weights)]))
        for _ in range(1 if attack == "clone" else count)]
    profiles *= count // len(profiles)
    users = np.repeat(np.arange(genuine, genuine + count), [p.size for p in profiles])
    rows = {"user": pa.array(users, pa.int32()),
            "item": pa.array(np.concatenate(profiles), pa.int32())}
    for name in train.column_names:
        if name not in rows:  # rating, timestamp, label: the log's highest value
            column = train[name]
            rows[name] = pa.array(np.full(users.size, np.max(column.to_numpy())), column.type)
    fake_rows = pa.table({name: rows[name] for name in train.column_names})

    shutil.copytree(clean, output)
    pq.write_table(pa.concat_tables([train, fake_rows]), output / "train.parquet")
    vocab = pq.read_table(clean / "users.parquet")
    new_ids = pa.table({"index": pa.array(np.arange(genuine, genuine + count), pa.int32()),
                        "raw_id": pa.array([f"{FAKE_PREFIX}{i}" for i in range(count)])})
    pq.write_table(pa.concat_tables([vocab, new_ids.cast(vocab.schema)]),
                   output / "users.parquet")
    items = pq.read_table(clean / "items.parquet")["raw_id"].to_pylist()
    meta["num_users"] = genuine + count
    meta["counts"]["train"] += int(users.size)
    meta["poison"] = {"attack": attack, "fake_users": count, "genuine_users": genuine,
                      "filler": filler, "targets": target.tolist(), "seed": seed,
                      "source": str(clean)}
    (output / TARGETS_FILE).write_text(json.dumps(
        {"items": [items[t] for t in target], "indices": target.tolist(), "attack": attack}))
    (output / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return np.arange(genuine, genuine + count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clean", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--attack", choices=ATTACKS, default="random")
    parser.add_argument("--fakes", type=float, default=0.01)
    parser.add_argument("--filler", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    planted = plant(args.clean, args.output, args.attack, args.fakes, args.filler, seed=args.seed)
    print(f"planted {planted.size} {args.attack} fakes in {args.output}")
